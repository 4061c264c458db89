"""What the scorer does when the model is missing, unreachable, broken or swapped (handler level)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from learnscore.lake import ensure_spark_tables
from learnscore.stack.processes import free_port
from streaming.job import STREAM_TABLES, ScorerState, ScorerTopics, WriterIds, make_batch_handler
from streaming.model_cache import REGISTRY_UNREACHABLE, ModelCache

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
