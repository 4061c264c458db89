"""Submissions land in bronze/silver/quarantine with the right reasons, with or without a model."""

from __future__ import annotations

import orjson
import pytest

from learnscore.schemas import topics
from learnscore.streaming.job import start_scorer

pytestmark = pytest.mark.integration


def test_no_model_lands_every_submission_and_quarantines_the_bad_ones(kit):
    valid = [kit.events.submission(i) for i in range(40)]
    broken = kit.broken_submissions()
    duplicates = [valid[3], valid[17]]  # redelivered later: other offsets, same event_id
    kit.produce(topics.SUBMISSIONS, kit.as_messages(valid) + [(None, raw) for raw, _ in broken]
                + kit.as_messages(duplicates))
    total = len(valid) + len(broken) + len(duplicates)

    scorer = start_scorer(kit.spark, kit.config)
    try:
        kit.wait_rows_read(total, scorer)
    finally:
        scorer.stop()

    assert kit.table("bronze.submissions_raw").count() == total
    silver = kit.table("silver.submissions")
    assert sorted(r.event_id for r in silver.select("event_id").collect()) == sorted(e["event_id"] for e in valid)
    quarantine = kit.table("silver.quarantine")
    reasons = sorted(r.reason_code for r in quarantine.collect())
    assert reasons == sorted([code for _, code in broken] + ["duplicate_event_id"] * 2)
    dup_rows = quarantine.where("reason_code = 'duplicate_event_id'").collect()
    assert sorted(r.event_id for r in dup_rows) == sorted(e["event_id"] for e in duplicates)
    assert all(orjson.loads(r.raw_value)["event_id"] == r.event_id for r in dup_rows)
    assert kit.table("gold.predictions").count() == 0
    # Without a model the scoring query scores nothing and parks every valid submission, once,
    # on the retries topic: they wait there for the first production version.
    kit.wait_for(lambda: kit.progress("score"), 120, "the scoring query's progress landed")
    last = kit.progress("score")[-1]
    assert last.model_status == "no_model" and last.scored == 0
    assert scorer.pending_unscored() == len(valid)
