"""The stream's exactly-once holes, each closed: a replay after the alias moved, a second scorer,
foreign commits before a replay, a failing hook, a poison batch, data lost to Kafka's retention."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from learnscore.core import kafka_io
from learnscore.schemas import topics
from learnscore.streaming.job import scorer_checkpoint, start_scorer
from learnscore.streaming.lease import LeaseHeld
from learnscore.streaming.runtime import ScorerHooks
from tests.support import ScoringHandler as Handler
from tests.support import decoded_batch

pytestmark = pytest.mark.integration


def test_a_replay_after_the_alias_moved_keeps_the_first_published_score(kit, models, tmp_path):
    first = models.register()
    second = models.register(alias=None)
    events = [kit.events.submission(i) for i in range(6)]
    handle = Handler(kit, kit.config, tmp_path)
    batch = decoded_batch(kit.spark, kit.config, events)
    handle(batch, 0)  # the first attempt publishes its scores, then the process dies before the commit
    models.promote(second)
    time.sleep(kit.config.streaming.alias_check_seconds)
    handle(batch, 0)  # Spark runs batch 0 again, now with the other version in production

    scores = handle.scores()
    assert len(scores) == 12 and len({s["event_id"] for s in scores}) == 6  # the same ids, twice
    versions: dict[str, list[str]] = {}  # per submission, in the order of its partition
    for score in scores:
        versions.setdefault(score["submission_event_id"], []).append(score["model_version"])
    assert list(versions.values()) == [[first, second]] * 6
    kit.produce(topics.OUTCOMES, kit.as_messages([kit.events.outcome(e, i) for i, e in enumerate(events)]))
    scorer = start_scorer(kit.spark, kit.config)
    try:
        kit.wait_for(lambda: kit.table("gold.prediction_outcomes").count() >= 6, 300, "the pairs", scorer=scorer)
    finally:
        scorer.stop()
    gold = kit.table("gold.predictions").collect()
    assert sorted(r.event_id for r in gold) == sorted(e["event_id"] for e in events)
    assert {r.model_version for r in gold} == {first}  # the first published, not the replay's
    assert {r.score_event_id for r in gold} == {s["event_id"] for s in scores}
    assert {r.model_version for r in kit.table("gold.prediction_outcomes").collect()} == {first}


def test_a_second_scorer_on_the_same_checkpoint_refuses_to_start(kit):
    scorer = start_scorer(kit.spark, kit.config, drift=False)
    try:
        with pytest.raises(LeaseHeld, match="another scorer holds the checkpoint .* one scorer per checkpoint"):
            start_scorer(kit.spark, kit.config, drift=False)
    finally:
        scorer.stop()
    again = start_scorer(kit.spark, kit.config, drift=False)  # released on stop: the next one may start
    again.stop()


def test_foreign_commits_cannot_make_a_replayed_append_land_twice(kit):
    from learnscore.core.lake import ensure_spark_tables
    from learnscore.streaming.sinks import append_once

    ensure_spark_tables(kit.spark, kit.config, ["ops.endpoint_requests"])
    table = "ops.endpoint_requests"
    rows = kit.spark.createDataFrame([("r-1",)], "request_id string")
    from pyspark.sql import functions as F

    rows = rows.select("request_id", *[F.lit(None).alias(c) for c in (
        "received_at", "status_code", "latency_ms", "model_name", "model_version", "route", "items", "error_code",
        "error", "kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp")])
    assert append_once(rows, kit.config, table, "learnscore.land.q1.ops.endpoint_requests", 7, may_be_replay=True)
    for _ in range(30):  # BI, compactions, a vacuum: commits of other writers pile up after ours
        rows.limit(0).write.format("delta").mode("append").save(kit.config.table_path(table))
    assert not append_once(rows, kit.config, table, "learnscore.land.q1.ops.endpoint_requests", 7, may_be_replay=True)
    assert kit.table(table).count() == 1


def test_a_failing_hook_is_recorded_and_the_stream_goes_on(kit, production_model):
    def broken_hook(batch_id, rows):
        raise RuntimeError("the drift store is on fire")

    events = [kit.events.submission(i) for i in range(10)]
    kit.produce(topics.SUBMISSIONS, kit.as_messages(events))
    scorer = start_scorer(kit.spark, kit.config, hooks=ScorerHooks(predictions=[broken_hook]))
    try:
        kit.wait_for(lambda: kit.table("gold.predictions").count() >= 10, 300, "gold", scorer=scorer)
        kit.produce(topics.SUBMISSIONS, kit.as_messages([kit.events.submission(100)]))
        kit.wait_for(lambda: kit.table("gold.predictions").count() >= 11, 300, "gold after the failure",
                     scorer=scorer)
        assert not scorer.failure()
    finally:
        scorer.stop()
    notes = [r.message for r in kit.progress("gold") if r.message]
    assert any("hook broken_hook failed" in note and "on fire" in note for note in notes), notes


def test_a_batch_that_keeps_failing_is_quarantined_raw_and_the_stream_moves_on(kit):
    from learnscore.streaming.attempts import AttemptLog

    events = [kit.events.submission(i) for i in range(5)]
    kit.produce(topics.SUBMISSIONS, kit.as_messages(events))
    # Two attempts of the landing query's first batch failed before (raised on its content):
    log = AttemptLog(scorer_checkpoint(kit.config, "land"))
    log.failed(0)
    log.failed(0)
    scorer = start_scorer(kit.spark, kit.config, drift=False)
    try:
        kit.wait_for(lambda: kit.table("silver.quarantine").count() >= 5, 300, "the poison batch quarantined",
                     scorer=scorer)
        kit.produce(topics.SUBMISSIONS, kit.as_messages([kit.events.submission(50)]))
        kit.wait_for(lambda: kit.table("silver.submissions").count() >= 1, 300, "the next batch landed",
                     scorer=scorer)
    finally:
        scorer.stop()
    quarantine = kit.table("silver.quarantine").collect()
    assert {r.reason_code for r in quarantine} == {"poison_batch"} and len(quarantine) == 5
    assert all(r.raw_value for r in quarantine)  # the bytes are kept, to send again
    assert kit.table("silver.submissions").count() == 1


def test_messages_deleted_by_retention_while_the_scorer_was_down_are_reported_not_waited_for(kit):
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient

    from learnscore.core.kafka_io import client_options

    kit.produce(topics.SUBMISSIONS, kit.as_messages([kit.events.submission(i) for i in range(10)]))
    scorer = start_scorer(kit.spark, kit.config, drift=False)
    try:
        kit.wait_for(lambda: kit.table("silver.submissions").count() >= 10, 300, "the first ten", scorer=scorer)
    finally:
        scorer.stop()
    # As if the stop came between the handler's return and Spark's commit: the restart first
    # runs that batch again, a replay whose progress row is not written again; the loss note must
    # reach a later row all the same.
    commits = Path(scorer_checkpoint(kit.config, "land").removeprefix("file://")) / "commits"
    last = max((p for p in commits.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for path in (last, commits / f".{last.name}.crc"):
        path.unlink(missing_ok=True)
    later = [kit.events.submission(100 + i) for i in range(20)]
    kit.produce(topics.SUBMISSIONS, kit.as_messages(later))
    # The outage outlasts the retention: Kafka deletes what the scorer has not read yet.
    topic = kit.config.topic(topics.SUBMISSIONS)
    consumer = kafka_io.consumer(kit.config)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    ends = consumer.end_offsets(partitions)
    consumer.close()
    admin = KafkaAdminClient(**client_options(kit.config))
    admin.delete_records({tp: max(0, offset - 2) for tp, offset in ends.items()})
    admin.close()
    survivors = sum(min(2, offset) for offset in ends.values())
    scorer = start_scorer(kit.spark, kit.config, drift=False)
    try:
        kit.wait_for(lambda: kit.table("silver.submissions").count() >= 10 + survivors, 300, "the survivors",
                     scorer=scorer)
        time.sleep(3)
        assert kit.table("silver.submissions").count() == 10 + survivors  # the lost ones never come
    finally:
        scorer.stop()
    notes = " ".join(r.message or "" for r in kit.progress("land"))
    assert "deleted by Kafka's retention before the land query read them" in notes, notes
