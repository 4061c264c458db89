"""What the scorer does when the model is missing, unreachable, broken or swapped (handler level)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

import orjson
import pytest

from learnscore.core.lake import ensure_spark_tables
from learnscore.core.ports import free_port
from learnscore.streaming.job import STREAM_TABLES, ScorerState, ScorerTopics, WriterIds, make_batch_handler
from learnscore.streaming.model_cache import REGISTRY_UNREACHABLE, ModelCache

pytestmark = pytest.mark.integration

KAFKA_BATCH = ("key binary, value binary, topic string, partition int, offset bigint, "
               "timestamp timestamp, timestampType int")


def submissions_batch(spark, config, events, first_offset=0):
    sent = datetime.now(timezone.utc) - timedelta(seconds=5)
    topic = ScorerTopics.of(config).submissions
    rows = [(e["learner_id"].encode(), orjson.dumps(e), topic, 0, first_offset + i, sent, 0)
            for i, e in enumerate(events)]
    return spark.createDataFrame(rows, KAFKA_BATCH)


def handler_for(spark, config, state=None, models=None):
    ensure_spark_tables(spark, config, STREAM_TABLES)
    ids = WriterIds()
    ids.set_query_id("model-states")
    state = state or ScorerState()
    return make_batch_handler(spark, config, models=models or ModelCache(spark, config), state=state,
                              writer_ids=ids, pseudonym_key="k" * 32), state


@pytest.fixture
def restore_mlflow_uris():
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def test_an_unreachable_registry_keeps_landing_submissions(kit, restore_mlflow_uris, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = f"http://127.0.0.1:{free_port()}"
    config = kit.config.model_copy(update={"mlflow": kit.config.mlflow.model_copy(update={
        "tracking_uri": dead, "registry_uri": dead})})
    handle, state = handler_for(kit.spark, config)
    events = [kit.events.submission(i) for i in range(5)]
    handle(submissions_batch(kit.spark, config, events), 0)

    assert kit.table("silver.submissions").count() == 5
    progress = kit.table("ops.stream_progress").first()
    assert progress.model_status == REGISTRY_UNREACHABLE
    assert "did not answer" in progress.message and dead in progress.message
    assert progress.pending_unscored == 5 and state.pending_unscored == 5


def nan_scoring(model):
    """A copy of ``model`` whose score model answers NaN: loads fine, predicts garbage."""
    import copy

    import numpy as np

    broken = copy.deepcopy(model)
    regressor = broken.score_pipeline_[-1]
    regressor._baseline_prediction = np.full_like(regressor._baseline_prediction, np.nan)
    return broken


def test_a_model_that_outputs_nan_writes_nothing_and_its_rows_wait(kit, models, small_model):
    config = kit.config
    bad = models.register(nan_scoring(small_model[0]))
    handle, state = handler_for(kit.spark, config)
    events = [kit.events.submission(i) for i in range(8)]
    handle(submissions_batch(kit.spark, config, events), 0)

    assert kit.table("silver.submissions").count() == 8
    assert kit.table("gold.predictions").count() == 0
    first = kit.table("ops.stream_progress").first()
    assert (first.model_version, first.scored, first.failed, first.pending_unscored) == (bad, 0, 8, 8)
    assert "unusable model output" in first.message

    good = models.register()  # production moves to a sound version: the waiting rows are scored
    time.sleep(config.streaming.alias_check_seconds)
    more = [kit.events.submission(100 + i) for i in range(2)]
    handle(submissions_batch(kit.spark, config, more, first_offset=100), 1)
    gold = kit.table("gold.predictions").collect()
    assert sorted(r.event_id for r in gold) == sorted(e["event_id"] for e in events + more)
    assert {r.model_version for r in gold} == {good}
    assert state.pending_unscored == 0


def test_a_version_that_fails_to_load_keeps_the_previous_one(kit, models):
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

    handle, state = handler_for(kit.spark, config)
    handle(submissions_batch(kit.spark, config, [kit.events.submission(0)]), 0)
    models.promote(broken)
    time.sleep(config.streaming.alias_check_seconds)
    handle(submissions_batch(kit.spark, config, [kit.events.submission(1)], first_offset=1), 1)

    progress = kit.table("ops.stream_progress").orderBy("batch_id").collect()
    assert progress[0].model_status == "ok" and progress[0].model_version == good
    assert progress[1].model_status == "load_failed" and progress[1].model_version == good
    assert f"version {broken}" in progress[1].message
    assert {r.model_version for r in kit.table("gold.predictions").collect()} == {good}
    assert kit.table("gold.predictions").count() == 2
