"""The IRT generator: valid, deterministic events whose numbers behave like learners."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pytest

from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, LEVELS, OUTCOME_OBSERVED, SUBJECTS, validate_bytes
from learnscore.simulator.generator import BANK_SEED, BLOCK_SIZE, TRUTH_COLUMNS, Simulator, SimulatorSettings
from learnscore.simulator.irt import SKILLS, make_item_bank, p_correct
from learnscore.simulator.outcomes import LEVEL_THRESHOLDS, level_index

START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def batch():
    return Simulator(seed=11, start=START, interval_s=0.01).take(6000)




def test_every_subject_has_its_skills():
    assert tuple(SKILLS) == SUBJECTS
    assert all(len(skills) == 5 for skills in SKILLS.values())


def test_every_event_passes_the_validator(batch):
    now = START + timedelta(seconds=60)  # the last event is at +60 s
    for event in batch.submissions:
        assert validate_bytes(DIAGNOSTIC_SUBMITTED, orjson.dumps(event), now).ok
    for event in batch.outcomes:
        assert validate_bytes(OUTCOME_OBSERVED, orjson.dumps(event), now + timedelta(seconds=10)).ok


def test_same_seed_same_events_however_they_are_taken():
    whole = Simulator(seed=5, start=START).take(2 * BLOCK_SIZE + 100)
    pieces = Simulator(seed=5, start=START)
    cut = [pieces.take(n) for n in (1, 999, BLOCK_SIZE, 1148)]
    assert [e for b in cut for e in b.submissions] == whole.submissions
    assert [e for b in cut for e in b.outcomes] == whole.outcomes
    assert np.array_equal(np.concatenate([b.truth["true_ability"] for b in cut]), whole.truth["true_ability"])


def test_another_seed_start_or_run_gives_other_learners():
    ids = lambda sim: {e["event_id"] for e in sim.take(300).submissions}
    base = ids(Simulator(seed=5, start=START))
    assert base.isdisjoint(ids(Simulator(seed=6, start=START)))
    assert base.isdisjoint(ids(Simulator(seed=5, start=START + timedelta(seconds=1))))
    assert base.isdisjoint(ids(Simulator(seed=5, start=START, run="history")))


def test_the_item_bank_is_the_same_for_every_seed():
    a = Simulator(seed=1, start=START).take(200).submissions
    b = Simulator(seed=2, start=START).take(200).submissions
    items = lambda events: {r["item_id"] for e in events for r in e["responses"]}
    bank = set(make_item_bank(BANK_SEED).item_id.tolist())
    assert items(a) <= bank and items(b) <= bank


def test_tests_draw_distinct_items_of_the_learners_subject(batch):
    for event in batch.submissions[:1000]:
        ids = [r["item_id"] for r in event["responses"]]
        assert 20 <= len(ids) <= 40 and len(set(ids)) == len(ids)
        assert all(i.startswith(event["subject"] + ".") and ".v1." in i for i in ids)
        assert all(r["skill"] in SKILLS[event["subject"]] for r in event["responses"])
    lengths = batch.truth["n_items"]
    assert lengths.min() == 20 and lengths.max() == 40


def test_event_times_follow_the_interval_and_outcomes_the_delay(batch):
    assert batch.submissions[0]["event_time"] == "2026-03-02T08:00:00.000Z"
    assert batch.submissions[250]["event_time"] == "2026-03-02T08:00:02.500Z"
    assert batch.outcomes[250]["event_time"] == "2026-03-02T08:00:12.500Z"  # default delay 10 s


def test_truth_has_one_row_per_submission(batch):
    table = batch.truth_table()
    assert table.column_names == list(TRUTH_COLUMNS)
    assert table.num_rows == len(batch)
    assert table.column("event_id").to_pylist() == [e["event_id"] for e in batch.submissions]
    assert set(table.column("cohort").to_pylist()) == {"baseline"}
    assert set(table.column("scenario").to_pylist()) == {"none"}


# -- the numbers behave like learners ----------------------------------------------------------


def test_abler_learners_answer_more_items_correctly(batch):
    theta, accuracy = batch.truth["true_ability"], batch.truth["accuracy"]
    assert np.corrcoef(theta, accuracy)[0, 1] > 0.7
    assert accuracy[theta > 1].mean() - accuracy[theta < -1].mean() > 0.35


def test_grade_raises_the_mean_ability(batch):
    theta, grade = batch.truth["true_ability"], batch.truth["grade_level"]
    assert theta[grade >= 10].mean() - theta[grade <= 3].mean() > 0.4


def _responses(batch):
    theta = np.repeat(batch.truth["true_ability"], batch.truth["n_items"])
    flat = [r for e in batch.submissions for r in e["responses"]]
    return theta, flat


def test_weak_learners_take_longer_ask_for_hints_and_retry_wrong_answers(batch):
    theta, flat = _responses(batch)
    time_ms = np.array([r["response_time_ms"] for r in flat])
    hint = np.array([r["hint_used"] for r in flat])
    correct = np.array([r["correct"] for r in flat])
    attempts = np.array([r["attempts"] for r in flat])
    weak, strong = theta < -1, theta > 1
    assert np.median(time_ms[weak]) > 1.3 * np.median(time_ms[strong])
    assert hint[weak].mean() > 2 * hint[strong].mean()
    assert attempts[~correct].mean() > attempts[correct].mean() + 0.5
    assert 5_000 < np.median(time_ms) < 40_000 and time_ms.min() >= 300


def test_3pl_probability_has_its_floor_and_ceiling():
    assert p_correct(-10.0, 1.2, 0.0, 0.2) == pytest.approx(0.2, abs=1e-4)
    assert p_correct(10.0, 1.2, 0.0, 0.2) == pytest.approx(1.0, abs=1e-4)


def test_observed_scores_follow_ability_with_noise(batch):
    theta, score = batch.truth["true_ability"], batch.truth["observed_score"]
    oracle = batch.truth["oracle_score"]
    assert np.corrcoef(theta, score)[0, 1] > 0.9
    assert 3.0 < np.abs(score - oracle).mean() < 5.0  # noise sd 5 → mean |error| ≈ 4
    assert score.min() >= 0 and score.max() <= 100


def test_levels_come_from_the_score_with_a_little_noise(batch):
    score = batch.truth["observed_score"]
    level = np.array([LEVELS.index(x) for x in batch.truth["observed_level"]])
    agree = (level == level_index(score)).mean()
    assert 0.93 < agree < 0.97  # 5 % label noise
    assert np.all(np.abs(level - level_index(score)) <= 1)
    assert LEVEL_THRESHOLDS == (40.0, 60.0, 78.0)
    assert set(batch.truth["observed_level"]) == set(LEVELS)


def test_settings_change_the_test_length():
    sim = Simulator(seed=3, start=START, settings=SimulatorSettings(items_per_skill=4, min_items=5, max_items=5))
    assert {len(e["responses"]) for e in sim.take(100).submissions} == {5}
    with pytest.raises(ValueError, match="test length 5-21 must lie within 1-20 items"):
        Simulator(seed=3, start=START, settings=SimulatorSettings(items_per_skill=4, min_items=5, max_items=21)).take(1)


def test_a_naive_start_time_is_refused():
    with pytest.raises(ValueError, match="has no time zone"):
        Simulator(seed=1, start=datetime(2026, 1, 1))


def test_the_simulator_follows_the_configured_domain():
    from learnscore.core.config import DomainConfig
    from learnscore.schemas.events import contracts_for
    from learnscore.simulator import settings_from_config

    domain = DomainConfig(subjects=("math", "music"), grade_min=3, grade_max=6)
    settings = settings_from_config(type("Config", (), {"domain": domain, "simulator": SimulatorSettings()})())
    events = Simulator(seed=3, start=START, settings=settings).take(400).submissions
    assert {e["subject"] for e in events} == {"math", "music"}
    assert {e["grade_level"] for e in events} == {3, 4, 5, 6}
    assert {r["skill"] for e in events if e["subject"] == "music" for r in e["responses"]} == {
        f"music_skill_{k}" for k in range(1, 6)}
    contract = contracts_for(domain.contract()).diagnostic_submitted
    assert all(validate_bytes(contract, orjson.dumps(e), START + timedelta(seconds=60)).ok for e in events)
