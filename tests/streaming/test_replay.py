"""A micro-batch run again after a crash (same query, same batch id) changes no table."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from learnscore.core.lake import ensure_spark_tables
from learnscore.streaming.job import (
    STREAM_TABLES,
    ScorerState,
    ScorerTopics,
    WriterIds,
    count_pending,
    make_batch_handler,
)
from learnscore.streaming.model_cache import ModelCache

pytestmark = pytest.mark.integration

# Columns that differ between two honest runs (clocks), not between a run and its replay.
VOLATILE = {"ingested_at", "quarantined_at", "scored_at", "latency_s", "joined_at", "kafka_timestamp",
            "started_at", "duration_s"}
KAFKA_BATCH = ("key binary, value binary, topic string, partition int, offset bigint, "
               "timestamp timestamp, timestampType int")


class CrashOnce:
    """An after-scoring hook that fails the first batch it sees, like a crash mid-batch."""

    def __init__(self):
        self.calls = 0

    def __call__(self, batch_id, predictions, pairs):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("simulated crash after the gold writes")


def kafka_batch(spark, names: ScorerTopics, kit):
    """A Kafka-source-shaped batch: valid and broken submissions, a duplicate, outcomes, requests."""
    sent = datetime.now(timezone.utc) - timedelta(seconds=5)
    subs = [kit.events.submission(i) for i in range(12)]
    rows = []

    def add(topic, partition, key, value):
        rows.append((key, value, topic, partition, len(rows), sent, 0))

    for event in subs:
        add(names.submissions, 0, event["learner_id"].encode(), orjson.dumps(event))
    for raw, _ in kit.broken_submissions()[:3]:
        add(names.submissions, 1, None, raw)
    add(names.submissions, 1, b"dup", orjson.dumps(subs[0]))  # a true duplicate
    outcomes = [kit.events.outcome(subs[i], i) for i in range(4)]
    for outcome in outcomes:
        add(names.outcomes, 0, outcome["learner_id"].encode(), orjson.dumps(outcome))
    add(names.outcomes, 0, b"x", orjson.dumps(kit.events.outcome(kit.events.submission(999), 9)))
    add(names.outcomes, 0, b"x", orjson.dumps({**kit.events.outcome(subs[0], 5)}))  # second outcome
    add(names.requests, 0, b"r1", orjson.dumps({"request_id": "r-1", "status_code": 200,
                                                  "received_at": "2026-11-01T10:00:00.250Z"}))
    add(names.requests, 0, b"r2", b"not json")
    return spark.createDataFrame(rows, KAFKA_BATCH)


def contents(kit, config) -> dict[str, list]:
    out = {}
    for name in STREAM_TABLES:
        frame = kit.spark.read.format("delta").load(config.table_path(name))
        columns = [c for c in frame.columns if c not in VOLATILE]
        out[name] = sorted(tuple(sorted((k, str(v)) for k, v in row.asDict().items()))
                           for row in frame.select(*columns).collect())
    return out


def column(rows, name):
    return [dict(row)[name] for row in rows]


def run_batches(kit, config, hooks, batch_ids):
    """Run the batch once per id, each time as a freshly (re)started scorer would."""
    ensure_spark_tables(kit.spark, config, STREAM_TABLES)
    batch = kafka_batch(kit.spark, ScorerTopics.of(config), kit)
    for batch_id in batch_ids:
        ids = WriterIds()
        ids.set_query_id("test-query")  # the same checkpoint: the same query id
        handler = make_batch_handler(kit.spark, config, models=ModelCache(kit.spark, config),
                                     state=ScorerState(pending_unscored=count_pending(kit.spark, config)),
                                     writer_ids=ids, pseudonym_key="k" * 32, hooks=hooks)
        try:
            handler(batch, batch_id)
        except Exception as exc:  # noqa: BLE001 - the simulated crash
            assert "simulated crash" in str(exc)


def test_a_replayed_batch_leaves_every_table_as_one_clean_run(kit, stream_config, tmp_path):
    clean = stream_config.model_copy(update={"lake": stream_config.lake.model_copy(update={
        "root": str(tmp_path / "clean-lake")})})
    run_batches(kit, clean, [], [0])
    expected = contents(kit, clean)
    assert len(expected["silver.submissions"]) == 12
    assert sorted(column(expected["silver.quarantine"], "reason_code")) == sorted(
        ["duplicate_event_id", "duplicate_outcome", "invalid_request_log", "unknown_submission",
         *(code for _, code in kit.broken_submissions()[:3])])
    assert len(expected["silver.outcomes"]) == 4
    assert len(expected["ops.endpoint_requests"]) == 1

    # Crash after the gold writes, then Spark runs batch 0 again; then once more for good measure.
    kit.events = type(kit.events)(seed=7)  # the same events again
    run_batches(kit, stream_config, [CrashOnce()], [0, 0, 0])
    assert contents(kit, stream_config) == expected
