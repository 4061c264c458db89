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

    # What `learnscore stream start --until-idle 2` does, twice: the second run resumes from
    # the checkpoints of the four queries.
    summary = run_scorer(kit.config, until_idle_s=2, handle_signals=False)
    assert summary.stopped_because == "idle for 2s" and summary.pending_unscored == 0
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
    scoring_progress = kit.progress("score")
    assert sum(r.scored for r in scoring_progress) == len(valid), [
        (r.batch_id, r.rows_read, r.scored, r.failed, r.model_status, r.message) for r in scoring_progress] + [
        (r.query, r.batch_id, r.scored, r.message) for r in kit.table("ops.stream_progress").collect()
        if r.query != "score"]
    assert sum(r.failed for r in scoring_progress) == 0
    assert {r.model_status for r in scoring_progress} == {"ok"}
    assert sum(r.outcomes for r in kit.progress("land")) == len(outcomes)
    assert sum(r.outcomes for r in kit.progress("pairs")) == len(outcomes)
    assert sum(r.scored for r in kit.progress("gold")) == len(valid)
    assert all(r.published_at is not None and r.landed_at >= r.published_at for r in gold)

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
        kit.wait_for(lambda: scorer.pending_unscored() == len(events), 120, "the submissions to wait for a model",
                     scorer=scorer)
        assert kit.table("silver.submissions").count() == len(events)
        assert kit.table("gold.predictions").count() == 0

        version = models.register()  # no new events arrive: the idle scorer catches up by itself
        deadline = time.monotonic() + 180
        while kit.table("gold.predictions").count() < len(events):
            scorer.tick()  # what the `stream start` loop does every half second
            assert time.monotonic() < deadline, "the backlog was not scored"
            assert not scorer.failure(), scorer.failure()
            time.sleep(0.5)
        kit.wait_for(lambda: any(r.query == "catch_up" for r in kit.table("ops.stream_progress").collect()),
                     120, "the catch-up's progress row", scorer=scorer)
    finally:
        scorer.stop()
    gold = kit.table("gold.predictions").collect()
    assert sorted(r.event_id for r in gold) == sorted(e["event_id"] for e in events)
    assert {r.model_version for r in gold} == {version}
    assert scorer.pending_unscored() == 0
    scoring = kit.progress("score")
    assert scoring[0].model_status == "no_model" and scoring[0].scored == 0
    catch_up = kit.progress("catch_up")
    assert len(catch_up) == 1 and catch_up[0].scored == len(events) and catch_up[0].pending_unscored == 0


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
        kit.wait_for(lambda: kit.table("gold.predictions").count() >= 40, 300, "the first predictions", scorer=scorer)
        models.promote(second)
        swapped.set()
        producer.join(timeout=300)
        kit.wait_for(lambda: kit.table("gold.predictions").count() >= len(before) + len(after), 300,
                     "every prediction", scorer=scorer)
    finally:
        scorer.stop()
    gold = kit.table("gold.predictions").collect()
    assert len(gold) == len(before) + len(after) == len({row.event_id for row in gold})
    # One swap: in the order the scores were published, the versions go v1 … v1, v2 … v2.
    published = [row.model_version for row in sorted(gold, key=lambda row: (row.published_at, row.scored_at))]
    switch = published.index(second)
    assert set(published[:switch]) == {first} and set(published[switch:]) == {second}
    version_of = {row.event_id: row.model_version for row in gold}
    assert {version_of[e["event_id"]] for e in after} == {second}  # sent after the swap
    scoring = kit.progress("score")
    assert sum(r.failed for r in scoring) == 0 and {r.model_status for r in scoring} == {"ok"}
    # Gold was written in two batches at least: after the second, its files were bin-packed.
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(kit.spark, kit.config.table_path("gold.predictions")).history().collect()
    optimized = sorted((h for h in history if h.operation == "OPTIMIZE"), key=lambda h: h.version)
    assert optimized, [h.operation for h in history]
    metrics = optimized[0].operationMetrics
    assert int(metrics["numRemovedFiles"]) >= 2 and int(metrics["numAddedFiles"]) == 1, metrics
