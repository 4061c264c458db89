"""End to end with the real model: counts match in every table, scores go out on Kafka,
outcomes meet their predictions whichever comes first, the model can appear late or change."""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from learnscore.core import kafka_io
from learnscore.core.config import Secrets
from learnscore.core.privacy import pseudonymise
from learnscore.schemas import topics
from learnscore.schemas.events import SCORE_ISSUED, validate_bytes
from learnscore.streaming.job import run_scorer, start_scorer

pytestmark = pytest.mark.integration


def consume_scores(config) -> list:
    consumer = kafka_io.consumer(config, config.topic(topics.SCORES), auto_offset_reset="earliest",
                                 consumer_timeout_ms=5000)
    try:
        return [validate_bytes(SCORE_ISSUED, message.value) for message in consumer]
    finally:
        consumer.close()


def test_counts_match_end_to_end(kit, production_model):
    valid = [kit.events.submission(i) for i in range(60)]
    broken = kit.broken_submissions()
    early_outcomes = [kit.events.outcome(s, i) for i, s in enumerate(valid[:10])]
    late_outcomes = [kit.events.outcome(s, i) for i, s in enumerate(valid[10:20])]
    requests = [{"request_id": f"req-{i}", "received_at": "2026-11-01T10:00:00.5Z", "status_code": 200,
                 "latency_ms": 3.5, "model_name": "m", "model_version": 1, "route": "/v1/score",
                 "items": 1} for i in range(3)]
    kit.produce(topics.SUBMISSIONS, kit.as_messages(valid) + [(None, raw) for raw, _ in broken]
                + kit.as_messages(valid[:2]))  # two redeliveries
    kit.produce(topics.OUTCOMES, kit.as_messages(early_outcomes))  # same batch as the submissions
    kit.produce(topics.ENDPOINT_REQUESTS, [(r["request_id"].encode(), orjson.dumps(r)) for r in requests]
                + [(b"x", b"not json")])
    first = len(valid) + len(broken) + 2 + len(early_outcomes) + len(requests) + 1

    # What `learnscore stream start --max-batches 1`, then `--until-idle 2` do: the second run
    # resumes from the checkpoint.
    summary = run_scorer(kit.config, max_batches=1, handle_signals=False)
    assert (summary.batches, summary.stopped_because) == (1, "1 batches")
    assert kit.rows_read() == first
    kit.produce(topics.OUTCOMES, kit.as_messages(late_outcomes))  # after their predictions
    summary = run_scorer(kit.config, until_idle_s=2, handle_signals=False)
    assert summary.stopped_because == "idle for 2s" and summary.pending_unscored == 0
    assert kit.rows_read() == first + len(late_outcomes)

    ids = sorted(e["event_id"] for e in valid)
    assert sorted(r.event_id for r in kit.table("silver.submissions").collect()) == ids
    gold = kit.table("gold.predictions").collect()
    assert sorted(r.event_id for r in gold) == ids
    assert {r.model_version for r in gold} == {production_model}
    key = Secrets(kit.config).pseudonym_key.get_secret_value()
    learners = {e["event_id"]: e["learner_id"] for e in valid}
    assert all(r.learner_key == pseudonymise(learners[r.event_id], key) for r in gold)
    assert all(0 <= r.progress_score <= 100 and r.latency_s > 0 for r in gold)
    reasons = sorted(r.reason_code for r in kit.table("silver.quarantine").collect())
    assert reasons == sorted([code for _, code in broken] + ["duplicate_event_id"] * 2
                             + ["invalid_request_log"])
    pairs = {r.event_id: r for r in kit.table("gold.prediction_outcomes").collect()}
    outcomes = early_outcomes + late_outcomes
    assert sorted(pairs) == sorted(o["submission_event_id"] for o in outcomes)
    for outcome in outcomes:
        pair = pairs[outcome["submission_event_id"]]
        assert pair.abs_error == pytest.approx(abs(pair.progress_score - outcome["observed_progress_score"]))
        assert pair.level_correct == (pair.comprehension_level == outcome["observed_comprehension_level"])
    assert sorted(r.request_id for r in kit.table("ops.endpoint_requests").collect()) == ["req-0", "req-1", "req-2"]
    progress = kit.table("ops.stream_progress").collect()
    assert sum(r.scored for r in progress) == len(valid) and sum(r.failed for r in progress) == 0
    assert sum(r.outcomes for r in progress) == len(outcomes)
    assert {r.model_status for r in progress} == {"ok"}

    issued = consume_scores(kit.config)
    assert all(v.ok for v in issued), [v.reason for v in issued if not v.ok][:3]
    assert sorted(v.event["submission_event_id"] for v in issued) == ids  # once each, no replay here
    by_submission = {v.event["submission_event_id"]: v.event for v in issued}
    for row in gold:
        event = by_submission[row.event_id]
        assert event["learner_id"] == learners[row.event_id]
        assert event["model_version"] == production_model
        assert event["progress_score"] == pytest.approx(row.progress_score)


def test_no_model_then_a_model_appears_and_the_backlog_is_scored(kit, models):
    events = [kit.events.submission(i) for i in range(50)]
    kit.produce(topics.SUBMISSIONS, kit.as_messages(events))
    scorer = start_scorer(kit.spark, kit.config)
    try:
        kit.wait_rows_read(len(events), scorer)
        assert kit.table("silver.submissions").count() == len(events)
        assert kit.table("gold.predictions").count() == 0
        assert scorer.state.pending_unscored == len(events)

        version = models.register()  # no new events arrive: the scorer wakes itself up
        deadline = time.monotonic() + 180
        while kit.table("gold.predictions").count() < len(events):
            scorer.wake_up_if_needed()  # what the `stream start` loop does every half second
            assert time.monotonic() < deadline, "the backlog was not scored"
            assert not scorer.failure(), scorer.failure()
            time.sleep(0.5)
    finally:
        scorer.stop()
    gold = kit.table("gold.predictions").collect()
    assert sorted(r.event_id for r in gold) == sorted(e["event_id"] for e in events)
    assert {r.model_version for r in gold} == {version}
    assert scorer.state.pending_unscored == 0
    progress = kit.table("ops.stream_progress").orderBy("batch_id").collect()
    assert progress[0].model_status == "no_model" and progress[0].pending_unscored == len(events)
    assert progress[-1].model_status == "ok" and progress[-1].pending_unscored == 0
    assert any("caught up" in (r.message or "") for r in progress)


def test_hot_swap_mid_stream(kit, models):
    # Compaction after every second write to a table: it runs among the swap and changes no row.
    kit.config = kit.config.model_copy(update={"streaming": kit.config.streaming.model_copy(
        update={"compact_after_writes": 2})})
    first = models.register()
    second = models.register(alias=None)
    before = [kit.events.submission(i) for i in range(120)]
    after = [kit.events.submission(1000 + i) for i in range(120)]
    swapped = threading.Event()

    def produce() -> None:  # events keep flowing; the second half only once production moved
        for part in (before, after):
            if part is after:
                swapped.wait(timeout=300)
            for start in range(0, len(part), 20):
                kit.produce(topics.SUBMISSIONS, kit.as_messages(part[start:start + 20]))
                time.sleep(0.7)

    scorer = start_scorer(kit.spark, kit.config)
    producer = threading.Thread(target=produce, daemon=True)
    try:
        producer.start()
        kit.wait_for(lambda: kit.table("gold.predictions").count() >= 40, what="the first predictions")
        models.promote(second)
        swapped.set()
        producer.join(timeout=300)
        kit.wait_for(lambda: kit.table("gold.predictions").count() >= len(before) + len(after),
                     what="every prediction")
    finally:
        scorer.stop()
    gold = kit.table("gold.predictions").collect()
    assert len(gold) == len(before) + len(after)
    versions_by_batch = {}
    for row in gold:
        versions_by_batch.setdefault(row.batch_id, set()).add(row.model_version)
    assert all(len(v) == 1 for v in versions_by_batch.values())  # one version per micro-batch
    old = [b for b, v in versions_by_batch.items() if v == {first}]
    new = [b for b, v in versions_by_batch.items() if v == {second}]
    assert old and new and max(old) < min(new)  # before the swap the old version, after it the new
    version_of = {row.event_id: row.model_version for row in gold}
    assert {version_of[e["event_id"]] for e in after} == {second}  # sent after the swap
    progress = kit.table("ops.stream_progress").collect()
    assert sum(r.failed for r in progress) == 0 and {r.model_status for r in progress} == {"ok"}
    # Old and new versions wrote gold in two batches at least: after the second, gold (probed by
    # every batch, compacted first) had its files bin-packed into one.
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(kit.spark, kit.config.table_path("gold.predictions")).history().collect()
    optimized = sorted((h for h in history if h.operation == "OPTIMIZE"), key=lambda h: h.version)
    assert optimized, [h.operation for h in history]
    metrics = optimized[0].operationMetrics
    assert int(metrics["numRemovedFiles"]) >= 2 and int(metrics["numAddedFiles"]) == 1, metrics
