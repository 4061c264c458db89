"""Smoke: the four queries score, land and pair a handful of events."""

from __future__ import annotations

import pytest

from learnscore.schemas import topics

pytestmark = pytest.mark.integration


def test_smoke(kit, production_model):
    from learnscore.streaming.job import start_scorer

    subs = [kit.events.submission(i) for i in range(20)]
    outs = [kit.events.outcome(s, i) for i, s in enumerate(subs[:10])]
    kit.produce(topics.SUBMISSIONS, kit.as_messages(subs) + [(b"k", raw) for raw, _ in kit.broken_submissions()] + kit.as_messages(subs[:2]))
    kit.produce(topics.OUTCOMES, kit.as_messages(outs))
    scorer = start_scorer(kit.spark, kit.config)
    try:
        kit.wait_for(lambda: kit.table("gold.predictions").count() >= 20, 300, "gold", scorer=scorer)
        kit.wait_for(lambda: kit.table("gold.prediction_outcomes").count() >= 10, 300, "pairs", scorer=scorer)
        kit.wait_for(lambda: kit.table("silver.quarantine").count() >= 9, 300, "quarantine", scorer=scorer)
        # The scoring query's progress travels through Kafka; the landing query lands it.
        kit.wait_for(lambda: kit.table("ops.stream_progress").where("query = 'score'").count() > 0, 300,
                     "the scoring query's progress rows", scorer=scorer)
    finally:
        scorer.stop()
    assert kit.table("silver.submissions").count() == 20
    assert kit.table("gold.predictions").select("event_id").distinct().count() == 20
    q = {r.reason_code: r["count"] for r in kit.table("silver.quarantine").groupBy("reason_code").count().collect()}
    print(q)
    assert q.get("duplicate_event_id") == 2
    progress = kit.table("ops.stream_progress").groupBy("query").count().collect()
    print(progress)
    assert {r.query for r in progress} >= {"land", "gold", "pairs", "score"}
