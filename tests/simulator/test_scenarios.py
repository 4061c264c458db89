"""Each drift scenario moves the distribution it names, by a clearly measurable amount, and only
from its start on."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from learnscore.core.durations import DurationError, parse_duration
from learnscore.simulator.generator import Simulator
from learnscore.simulator.outcomes import BASE_RELATION
from learnscore.simulator.scenarios import ScenarioError, parse_scenario

START = datetime(2026, 4, 1, tzinfo=timezone.utc)
N, SWITCH = 8000, 4000  # the scenario starts halfway


def _run(text: str | None, seed: int = 21):
    scenarios = (parse_scenario(text),) if text else ()
    return Simulator(seed=seed, start=START, interval_s=0.01, scenarios=scenarios).take(N)


@pytest.fixture(scope="module")
def baseline():
    return _run(None)


def _halves(values):
    values = np.asarray(values)
    return values[:SWITCH], values[SWITCH:]


def _response_times(batch):
    return np.array([np.median([r["response_time_ms"] for r in e["responses"]]) for e in batch.submissions])


def test_baseline_is_stable(baseline):
    before, after = _halves(baseline.truth["true_ability"])
    assert abs(before.mean() - after.mean()) < 0.1
    assert set(baseline.truth["scenario"]) == {"none"}


def test_weaker_cohort_lowers_ability_and_accuracy():
    batch = _run("weaker-cohort@4000")
    before, after = _halves(batch.truth["true_ability"])
    assert after.mean() - before.mean() == pytest.approx(-1.0, abs=0.1)
    acc_before, acc_after = _halves(batch.truth["accuracy"])
    assert acc_before.mean() - acc_after.mean() > 0.12
    cohort_before, cohort_after = _halves(batch.truth["cohort"])
    assert set(cohort_before) == {"baseline"} and set(cohort_after) == {"weaker"}
    scenario_before, scenario_after = _halves(batch.truth["scenario"])
    assert set(scenario_before) == {"none"} and set(scenario_after) == {"weaker-cohort"}


def test_item_bank_change_brings_new_harder_items():
    batch = _run("item-bank-change@40s")  # 40 s at 100 events/s = event 4000
    items = [{r["item_id"] for r in e["responses"]} for e in batch.submissions]
    before, after = _halves(np.array(items, dtype=object))
    seen_before, seen_after = set().union(*before), set().union(*after)
    assert seen_before.isdisjoint(seen_after)
    assert all(".v2." in item for item in seen_after)
    assert {e["assessment_id"].rsplit("-", 1)[1] for e in batch.submissions[SWITCH:]} == {"v2"}
    acc_before, acc_after = _halves(batch.truth["accuracy"])
    assert acc_before.mean() - acc_after.mean() > 0.08
    # ability did not change: only the items did
    theta_before, theta_after = _halves(batch.truth["true_ability"])
    assert abs(theta_before.mean() - theta_after.mean()) < 0.1


def test_concept_shift_breaks_the_old_relation_while_inputs_look_the_same(baseline):
    batch = _run("concept-shift@4000")
    # A model that learned the old relation (here: the old oracle) misses badly afterwards.
    old_model = BASE_RELATION.expected(batch.truth["true_ability"])
    error_before, error_after = _halves(np.abs(old_model - batch.truth["observed_score"]))
    assert error_before.mean() < 5 and error_after.mean() > 10
    # the inputs (answers) are drawn the same way: accuracy as in the baseline
    acc_before, acc_after = _halves(batch.truth["accuracy"])
    assert abs(acc_before.mean() - acc_after.mean()) < 0.02
    # the levels move too
    _, level_after = _halves(batch.truth["observed_level"])
    _, base_level_after = _halves(baseline.truth["observed_level"])
    share = lambda levels, name: float(np.mean(levels == name))
    assert abs(share(level_after, "proficient") - share(base_level_after, "proficient")) > 0.2


def test_response_time_unit_change_divides_times_by_a_thousand():
    batch = _run("response-time-unit-change@4000")
    before, after = _halves(_response_times(batch))
    assert np.median(before) / np.median(after) == pytest.approx(1000, rel=0.1)
    assert np.median(after) < 60  # seconds now
    acc_before, acc_after = _halves(batch.truth["accuracy"])
    assert abs(acc_before.mean() - acc_after.mean()) < 0.02


def test_scenarios_combine():
    sim = Simulator(seed=3, start=START, interval_s=1.0,
                    scenarios=(parse_scenario("weaker-cohort@10"), parse_scenario("concept-shift@15s")))
    labels = sim.take(20).truth["scenario"].tolist()
    assert labels[:10] == ["none"] * 10
    assert labels[10:15] == ["weaker-cohort"] * 5
    assert labels[15:] == ["weaker-cohort+concept-shift"] * 5


@pytest.mark.parametrize("text, message", [
    ("colder-winter@3s", "unknown scenario 'colder-winter'; known: weaker-cohort"),
    ("weaker-cohort@soon", "the start must be an event count (5000) or a time offset (15s, 2m, 3d)"),
    ("weaker-cohort@-5s", "the start must be an event count"),
])
def test_bad_scenarios_say_how_to_write_them(text, message):
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_scenario(text)


def test_durations():
    assert parse_duration("250ms") == 0.25 and parse_duration("1.5h") == 5400.0 and parse_duration("30") == 30.0
    with pytest.raises(DurationError, match="write e.g. 500ms, 10s, 2m, 24h, 7d or 1w"):
        parse_duration("ten seconds")
