"""The message plan of a stream run, and the historical batch on disk."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pyarrow.parquet as pq
import pytest

from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, OUTCOME_OBSERVED, validate_bytes
from learnscore.schemas.topics import OUTCOMES, SUBMISSIONS
from learnscore.simulator.history import HistoryOptions, read_manifest, write_history
from learnscore.simulator.invalid import INVALID_KINDS
from learnscore.simulator.scenarios import parse_scenario
from learnscore.simulator.stream import OUTCOME, SUBMISSION, MessagePlan, StreamOptions

START = datetime(2026, 7, 1, 9, 0, tzinfo=timezone.utc)


def _plan(**overrides):
    options = StreamOptions(**{"rate": 200, "duration_s": 5, "outcome_delay_s": 2, "invalid_ratio": 0.1,
                               "seed": 3, **overrides})
    return MessagePlan(options, START), options


def test_plan_sends_every_submission_and_its_outcome_after_the_delay():
    plan, options = _plan()
    messages = list(plan)
    kinds = Counter(m.kind for m in messages)
    assert kinds[SUBMISSION] == kinds[OUTCOME] == 1000
    due = [m.due_s for m in messages]
    assert due == sorted(due) and due[-1] == pytest.approx(4.995 + 2)
    sent_at = {}
    for m in messages:
        event = orjson.loads(m.value) if m.kind in (SUBMISSION, OUTCOME) else None
        if m.kind == SUBMISSION:
            sent_at[event["event_id"]] = m.due_s
            assert m.topic == SUBMISSIONS and m.key == event["learner_id"].encode()
        elif m.kind == OUTCOME:
            assert m.topic == OUTCOMES
            assert m.due_s == pytest.approx(sent_at[event["submission_event_id"]] + 2)


def test_plan_mixes_broken_messages_at_the_ratio_and_duplicates_follow_their_original():
    plan, _ = _plan()
    messages = list(plan)
    for topic in (SUBMISSIONS, OUTCOMES):
        on_topic = [m for m in messages if m.topic == topic]
        broken = [m for m in on_topic if m.kind in INVALID_KINDS]
        assert all(INVALID_KINDS[m.kind].topic == topic for m in broken)
        assert len(broken) / len(on_topic) == pytest.approx(0.1, abs=0.03)
    position = {}
    for index, m in enumerate(messages):
        if m.kind == SUBMISSION:
            position[m.event_id] = index
        elif m.kind.startswith("duplicate"):
            assert position[m.event_id] < index


def test_plan_is_deterministic_and_every_message_gets_the_reason_it_promises():
    first, second = list(_plan()[0]), list(_plan()[0])
    assert [(m.kind, m.key, m.value) for m in first] == [(m.kind, m.key, m.value) for m in second]
    now = START + timedelta(seconds=10)
    seen_ids = set()
    for m in first:
        record = DIAGNOSTIC_SUBMITTED if m.topic == SUBMISSIONS else OUTCOME_OBSERVED
        verdict = validate_bytes(record, m.value, now)
        if m.kind in (SUBMISSION, OUTCOME):
            assert verdict.ok
            assert m.event_id not in seen_ids
            seen_ids.add(m.event_id)
        elif INVALID_KINDS[m.kind].is_duplicate:
            assert verdict.ok and m.event_id in seen_ids
        else:
            assert verdict.reason_code == INVALID_KINDS[m.kind].reason_code


def test_plan_truth_and_scenarios():
    plan, _ = _plan(scenarios=(parse_scenario("weaker-cohort@2s"),), invalid_ratio=0.0)
    list(plan)
    truth = plan.truth(1000)
    assert truth.num_rows == 1000
    assert Counter(truth.column("cohort").to_pylist()) == {"baseline": 400, "weaker": 600}


def test_options_refuse_nonsense():
    with pytest.raises(ValueError, match="rate must be positive"):
        StreamOptions(rate=0)
    with pytest.raises(ValueError, match="invalid ratio must lie between 0 and 0.5"):
        StreamOptions(invalid_ratio=0.9)


# -- history ---------------------------------------------------------------------------------------

END = datetime(2026, 6, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    folder = tmp_path_factory.mktemp("history")
    options = HistoryOptions(learners=3000, days=30, outcome_delay_s=3 * 86400, seed=4, end=END,
                             scenarios=(parse_scenario("concept-shift@20d"),))
    return folder, write_history(folder, options)


def _lines(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_history_files_and_manifest(history):
    folder, manifest = history
    assert read_manifest(folder) == manifest
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "outcomes.jsonl",
                                                        "submissions.jsonl", "truth.parquet"]
    assert manifest["submissions"] == manifest["outcomes"] == manifest["learners"] == 3000
    assert manifest["seed"] == 4 and manifest["scenarios"] == ["concept-shift@20d"]
    assert manifest["end"] == END.isoformat()
    assert manifest["submission_time_min"] == (END - timedelta(days=30)).isoformat()
    assert manifest["rows_by_scenario"]["none"] + manifest["rows_by_scenario"]["concept-shift"] == 3000
    assert json.loads((folder / "manifest.json").read_text()) == manifest


def test_history_events_are_valid_and_spread_over_the_days(history):
    folder, manifest = history
    submissions, outcomes = _lines(folder / "submissions.jsonl"), _lines(folder / "outcomes.jsonl")
    assert len(submissions) == len(outcomes) == 3000
    assert [o["submission_event_id"] for o in outcomes] == [s["event_id"] for s in submissions]
    for event in submissions:
        assert validate_bytes(DIAGNOSTIC_SUBMITTED, orjson.dumps(event), END).ok
    for event in outcomes:
        assert validate_bytes(OUTCOME_OBSERVED, orjson.dumps(event), END).ok
    first, last = submissions[0]["event_time"], submissions[-1]["event_time"]
    assert first == "2026-05-31T00:00:00.000Z"
    assert "2026-06-26T23:00:00Z" < last < "2026-06-27T00:00:00Z"  # end minus the 3-day delay
    assert outcomes[-1]["event_time"] <= "2026-06-30T00:00:00.000Z"
    days = Counter(event["event_time"][:10] for event in submissions)
    assert len(days) == 27 and max(days.values()) - min(days.values()) <= 2


def test_history_truth_matches_the_events(history):
    folder, _ = history
    truth = pq.read_table(folder / "truth.parquet")
    submissions = _lines(folder / "submissions.jsonl")
    outcomes = _lines(folder / "outcomes.jsonl")
    assert truth.column("event_id").to_pylist() == [s["event_id"] for s in submissions]
    assert truth.column("observed_score").to_pylist() == [o["observed_progress_score"] for o in outcomes]
    scenario = truth.column("scenario").to_pylist()
    assert scenario[0] == "none" and scenario[-1] == "concept-shift"


def test_history_is_deterministic(tmp_path, history):
    folder, manifest = history
    again = write_history(tmp_path, HistoryOptions(learners=3000, days=30, outcome_delay_s=3 * 86400, seed=4,
                                                   end=END, scenarios=(parse_scenario("concept-shift@20d"),)))
    for name in ("submissions.jsonl", "outcomes.jsonl"):
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes()
    assert pq.read_table(tmp_path / "truth.parquet").equals(pq.read_table(folder / "truth.parquet"))
    assert {k: v for k, v in again.items() if k != "generated_in_s"} == \
           {k: v for k, v in manifest.items() if k != "generated_in_s"}


def test_reading_a_folder_without_history_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match='create one with "learnscore simulate history"'):
        read_manifest(tmp_path)
