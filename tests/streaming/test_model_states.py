"""What the scoring query does when the model is missing, unreachable, broken or swapped.

The scoring query's ``foreachBatch`` handler is driven directly, with decoded micro-batches built
here: no running query, just the handler against the real broker and registry. What it did is
read back from its three topics (scores, retries, its progress).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

import orjson
import pytest

from learnscore.core import kafka_io
from learnscore.core.ports import free_port
from learnscore.schemas.events import SCORE_ISSUED, validate_bytes
from learnscore.streaming.decode import SUBMISSION, decode_events
from learnscore.streaming.model_cache import REGISTRY_UNREACHABLE, ModelCache
from learnscore.streaming.runtime import QueryRuntime, ScorerTopics
from learnscore.streaming.scoring import FAILED_VERSION_HEADER, RetryCatchUp, make_scoring_handler

pytestmark = pytest.mark.integration

KAFKA_ROWS = ("raw_key binary, raw_value binary, kafka_topic string, kafka_partition int, kafka_offset bigint, "
              "kafka_timestamp timestamp")


def decoded_batch(spark, config, events, first_offset=0):
    """A micro-batch as the scoring query's plan hands it to the handler."""
    sent = datetime.now(timezone.utc) - timedelta(seconds=5)
    topic = ScorerTopics.of(config).submissions
    rows = [(e["learner_id"].encode(), orjson.dumps(e), topic, 0, first_offset + i, sent)
            for i, e in enumerate(events)]
    return decode_events(spark.createDataFrame(rows, KAFKA_ROWS), SUBMISSION, config.domain.contract())


class Handler:
    def __init__(self, kit, config, tmp_path):
        names = ScorerTopics.of(config)
        kafka_io.create_topics(config, list(ScorerTopics.BASE_NAMES))
        checkpoint = str(tmp_path / "score")
        self.runtime = QueryRuntime("score", config, checkpoint)
        self.runtime.set_query_id("model-states")
        self.catch_up = RetryCatchUp(kit.spark, config, names, checkpoint)
        self.handle = make_scoring_handler(kit.spark, config, self.runtime, ModelCache(kit.spark, config),
                                           self.catch_up)
        self.config, self.names = config, names

    def __call__(self, batch, batch_id):
        self.handle(batch, batch_id)

    def read(self, topic):
        consumer = kafka_io.consumer(self.config, topic, auto_offset_reset="earliest", consumer_timeout_ms=3000)
        try:
            return list(consumer)
        finally:
            consumer.close()

    def scores(self):
        return [validate_bytes(SCORE_ISSUED, m.value).event for m in self.read(self.names.scores)]

    def retries(self):
        return [(orjson.loads(m.value)["event_id"], dict(m.headers)[FAILED_VERSION_HEADER].decode())
                for m in self.read(self.names.retries)]

    def progress(self):
        return [orjson.loads(m.value) for m in self.read(self.names.progress)]


@pytest.fixture
def restore_mlflow_uris():
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def test_an_unreachable_registry_parks_every_submission(kit, restore_mlflow_uris, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = f"http://127.0.0.1:{free_port()}"
    config = kit.config.model_copy(update={"mlflow": kit.config.mlflow.model_copy(update={
        "tracking_uri": dead, "registry_uri": dead})})
    handle = Handler(kit, config, tmp_path)
    events = [kit.events.submission(i) for i in range(5)]
    handle(decoded_batch(kit.spark, config, events), 0)

    assert handle.scores() == []
    assert sorted(handle.retries()) == sorted((e["event_id"], "none") for e in events)
    (progress,) = handle.progress()
    assert progress["model_status"] == REGISTRY_UNREACHABLE and progress["failed"] == 5
    assert "did not answer" in progress["message"] and dead in progress["message"]
    assert progress["pending_unscored"] == 5


def nan_scoring(model):
    """A copy of ``model`` whose score model answers NaN: loads fine, predicts garbage."""
    import copy

    import numpy as np

    broken = copy.deepcopy(model)
    regressor = broken.score_pipeline_[-1]
    regressor._baseline_prediction = np.full_like(regressor._baseline_prediction, np.nan)
    return broken


def test_a_model_that_outputs_nan_publishes_nothing_and_its_rows_wait(kit, models, small_model, tmp_path):
    config = kit.config
    bad = models.register(nan_scoring(small_model[0]))
    handle = Handler(kit, config, tmp_path)
    events = [kit.events.submission(i) for i in range(8)]
    handle(decoded_batch(kit.spark, config, events), 0)

    assert handle.scores() == []
    assert sorted(handle.retries()) == sorted((e["event_id"], bad) for e in events)
    (first,) = handle.progress()
    assert (first["model_version"], first["scored"], first["failed"], first["pending_unscored"]) == (bad, 0, 8, 8)
    assert "unusable model output" in first["message"]

    good = models.register()  # production moves to a sound version: the waiting rows are scored
    time.sleep(config.streaming.alias_check_seconds)
    more = [kit.events.submission(100 + i) for i in range(2)]
    handle(decoded_batch(kit.spark, config, more, first_offset=100), 1)
    scores = handle.scores()
    assert sorted(s["submission_event_id"] for s in scores) == sorted(e["event_id"] for e in events + more)
    assert {s["model_version"] for s in scores} == {good}
    second = handle.progress()[-1]
    assert "caught up 8 waiting submissions" in second["message"] and second["pending_unscored"] == 0


def test_a_version_that_fails_to_load_keeps_the_previous_one(kit, models, tmp_path):
    import mlflow

    config = kit.config
    good = models.register()
    broken = models.register(alias=None)
    # Take the model file away from the broken version's stored artifacts.
    source = mlflow.MlflowClient().get_model_version_download_uri(config.mlflow.model_name, broken)
    stored = Path(urlparse(source).path)
    removed = list(stored.rglob("model.skops"))
    assert removed, f"no model file under {stored} (download uri {source})"
    for path in removed:
        path.unlink()

    handle = Handler(kit, config, tmp_path)
    handle(decoded_batch(kit.spark, config, [kit.events.submission(0)]), 0)
    models.promote(broken)
    time.sleep(config.streaming.alias_check_seconds)
    handle(decoded_batch(kit.spark, config, [kit.events.submission(1)], first_offset=1), 1)

    progress = handle.progress()
    assert progress[0]["model_status"] == "ok" and progress[0]["model_version"] == good
    assert progress[1]["model_status"] == "load_failed" and progress[1]["model_version"] == good
    assert f"version {broken}" in progress[1]["message"]
    assert {s["model_version"] for s in handle.scores()} == {good} and len(handle.scores()) == 2
