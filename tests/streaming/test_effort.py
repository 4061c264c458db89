"""Rapid guessing in the live stream (issue 20): a cohort that rushes is flagged per submission,
scored a second time on its effortful answers, and raises an effort drift event for its segment
(no retrain request); a normal cohort beside it is not flagged. Real broker, Spark, Delta, MLflow."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from learnscore.schemas import topics
from learnscore.streaming.job import run_scorer
from tests.streaming.conftest import BASE_TIME
from tests.streaming.test_scoring import consume_scores

pytestmark = pytest.mark.integration

NORMAL, RUSHED = 240, 160


def _cohort(kit, start: int, count: int, subject: str, rushed: bool) -> list[dict]:
    events = []
    for index in range(start, start + count):
        event = kit.events.submission(index, event_time=BASE_TIME + timedelta(seconds=index))
        event["subject"], event["grade_level"] = subject, 6
        for position, response in enumerate(event["responses"]):
            # Above the 10 s cap of every threshold: never a rapid guess. Rushed: half the items
            # in 300 ms, at chance.
            response["response_time_ms"] = 12_000 + response["response_time_ms"]
            if rushed and position % 2 == 0:
                response["response_time_ms"], response["correct"] = 300, position % 4 == 0
        events.append(event)
    return events


def test_a_rushing_cohort_is_flagged_scored_without_its_guesses_and_raises_an_effort_event(kit, production_model,
                                                                                             small_model):
    from learnscore.model.features import model_input_from_events

    config = kit.config.model_copy(update={"drift": kit.config.drift.model_copy(update={
        "grade_bands": ((1, 12),), "min_segment_size": 100, "min_window": 50})})
    math_normal = _cohort(kit, 0, NORMAL, "math", rushed=False)
    math_rushed = _cohort(kit, NORMAL, RUSHED, "math", rushed=True)
    reading = _cohort(kit, NORMAL + RUSHED, NORMAL, "reading", rushed=False)
    kit.produce(topics.SUBMISSIONS, kit.as_messages(math_normal + reading))
    summary = run_scorer(config, until_idle_s=2, handle_signals=False)
    assert summary.pending_unscored == 0
    kit.produce(topics.SUBMISSIONS, kit.as_messages(math_rushed))
    run_scorer(config, until_idle_s=2, handle_signals=False)

    gold = {row.event_id: row for row in kit.table("gold.predictions").collect()}
    assert len(gold) == 2 * NORMAL + RUSHED
    for event in math_normal + reading:
        row = gold[event["event_id"]]
        assert (row.rapid_guess_share, row.low_effort, row.effort_moderated_score) == (0.0, False, None)
    for event in math_rushed:
        row = gold[event["event_id"]]
        assert row.rapid_guess_share == pytest.approx(0.5) and row.low_effort is True
        assert row.effort_moderated_score is not None and 0 <= row.effort_moderated_score <= 100
    # silver holds the flags too, judged by production's bank when the row landed
    silver = {row.event_id: row for row in kit.table("silver.submissions").collect()}
    assert {(silver[e["event_id"]].low_effort, silver[e["event_id"]].effort_model_version)
            for e in math_normal + reading} == {(False, production_model)}
    assert {(silver[e["event_id"]].low_effort, silver[e["event_id"]].rapid_guess_share)
            for e in math_rushed} == {(True, 0.5)}
    # the application's score carries the flag and the second score too
    scores = {v.event["submission_event_id"]: v.event for v in consume_scores(config) if v.ok}
    rushed_score = scores[math_rushed[0]["event_id"]]
    assert rushed_score["low_effort"] is True and rushed_score["signals"]["rapid_guess_share"] == 0.5
    assert rushed_score["effort_moderated_score"] == pytest.approx(gold[math_rushed[0]["event_id"]]
                                                                   .effort_moderated_score)
    # the ability under the version's bank travels with the score (the drift detectors' covariate)
    expected = small_model[0].features(model_input_from_events(math_rushed[:5]))["ability"].tolist()
    assert [scores[e["event_id"]]["signals"]["ability"] for e in math_rushed[:5]] == pytest.approx(expected)

    events = kit.table("ops.drift_events").collect()
    effort = [e for e in events if e.kind == "effort"]
    assert effort, f"no effort drift event; drift events: {[(e.kind, e.signal, e.segment) for e in events]}"
    assert {(e.signal, e.segment) for e in effort} == {("rapid_guess_share", "math/1-12")}
    assert all(e.request_id is None and e.mean_after > e.mean_before for e in effort)


def test_a_version_without_response_times_judges_no_effort(kit, models, small_model):
    from learnscore.model.item_bank import ItemBank

    model = copy.deepcopy(small_model[0])
    bank = model.item_bank_.to_dict()  # the same bank knowing no times, like a neutral one
    for field in ("log_time", "skill_log_time", "subject_log_time"):
        bank[field] = [0.0] * len(bank[field])
    model.item_bank_ = ItemBank.from_dict({**bank, "global_log_time": 0.0})
    models.register(model)
    rushed = _cohort(kit, 0, 20, "math", rushed=True)
    kit.produce(topics.SUBMISSIONS, kit.as_messages(rushed))
    run_scorer(kit.config, until_idle_s=2, handle_signals=False)
    gold = kit.table("gold.predictions").collect()
    assert len(gold) == 20
    assert {(r.rapid_guess_share, r.low_effort, r.effort_moderated_score) for r in gold} == {(None, None, None)}
    silver = kit.table("silver.submissions").collect()
    assert {(r.rapid_guess_share, r.low_effort, r.effort_model_version) for r in silver} == {(None, None, None)}
