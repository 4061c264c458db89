"""Rapid guessing, item drift and leaked items, on the simulator's psychometric scenarios: the
signals find what a scenario changed and nothing on stationary data."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from learnscore.model.effort import measure_effort, without_rapid_guesses
from learnscore.model.features import flatten_events
from learnscore.model.item_bank import fit_item_bank
from learnscore.model.item_fit import item_fit
from learnscore.simulator.generator import Simulator
from learnscore.simulator.irt import SKILLS_PER_SUBJECT
from learnscore.simulator.scenarios import ScenarioSpec, psychometric_items

START = datetime(2026, 11, 10, tzinfo=timezone.utc)


def simulate(rows: int, run: str, scenario: str | None = None):
    scenarios = (ScenarioSpec(scenario, at_event=0),) if scenario else ()
    simulator = Simulator(seed=31, start=START, interval_s=1.0, scenarios=scenarios, run=run)
    return simulator, simulator.take(rows)


@pytest.fixture(scope="module")
def bank():
    _, history = simulate(20_000, "history")
    flat = flatten_events(history.submissions)
    return fit_item_bank(flat.item_id, flat.skill, flat.response_subject, flat.correct, flat.log_time,
                         flat.row, flat.n_rows)


@pytest.fixture(scope="module")
def reference(bank):
    """The items' residuals on data like the bank's own (another stationary run)."""
    _, before = simulate(30_000, "reference")
    return item_fit(flatten_events(before.submissions), bank)


def changed_items(simulator, scenario: str) -> set[str]:
    ids = simulator.bank.item_id
    mask = psychometric_items(ids, simulator.bank.items_per_skill, SKILLS_PER_SUBJECT, scenario)
    return set(ids[mask].tolist())


def test_a_rushing_cohort_is_flagged_and_a_normal_one_is_not(bank):
    _, stationary = simulate(10_000, "stationary")
    calm = measure_effort(flatten_events(stationary.submissions), bank)
    assert calm.low_effort.sum() == 0, calm.rapid_guess_share.max()
    assert calm.rapid.mean() < 1e-4  # a fast but genuine answer now and then, never a pattern

    _, rushing = simulate(10_000, "rushing", "rapid-guessing")
    effort = measure_effort(flatten_events(rushing.submissions), bank)
    cohort = rushing.truth["cohort"] == "rushing"
    assert 0.25 < cohort.mean() < 0.35
    # Half of a rusher's items are rapid guesses: every rusher on a test of 20+ items is flagged.
    assert effort.low_effort[cohort].mean() > 0.99
    assert effort.low_effort[~cohort].sum() == 0
    assert np.median(effort.rapid_guess_share[cohort]) == pytest.approx(0.5, abs=0.1)


def test_the_score_without_rapid_guesses_drops_only_the_rapid_responses(bank):
    _, rushing = simulate(500, "rushing", "rapid-guessing")
    flat = flatten_events(rushing.submissions)
    effort = measure_effort(flat, bank)
    kept, rows = without_rapid_guesses(flat, effort.rapid)
    assert len(kept.row) == int((~effort.rapid).sum())
    assert kept.n_rows == len(rows) == flat.n_rows  # nobody rushed every item here
    assert np.array_equal(np.diff(kept.offsets), np.diff(flat.offsets) - np.bincount(
        flat.row, weights=effort.rapid, minlength=flat.n_rows).astype(np.int64))
    assert not measure_effort(kept, bank).rapid.any()


def test_stationary_data_flags_no_item(bank, reference):
    _, stationary = simulate(30_000, "stationary")
    fit = item_fit(flatten_events(stationary.submissions), bank, reference=reference)
    assert (fit["flag"] == "").all(), fit.head()
    assert len(fit) > 500 and fit["responses"].median() > 100


def test_harder_items_raise_item_drift_for_those_items_only(bank, reference):
    simulator, drifted = simulate(30_000, "drift", "item-difficulty-drift")
    flat = flatten_events(drifted.submissions)
    fit = item_fit(flat, bank, reference=reference, exclude=measure_effort(flat, bank).rapid)
    flagged = fit[fit["flag"] != ""]
    changed = changed_items(simulator, "item-difficulty-drift") & set(fit["item_id"])
    # An item already near its guessing floor can hardly get harder (one of nine here: its
    # correct rate moved by 0.05); the others moved by 0.15-0.25 and are all found.
    assert set(flagged["item_id"]) <= changed and len(flagged) >= 0.8 * len(changed)
    assert set(flagged["flag"]) == {"item_drift"} and set(flagged["direction"]) == {"harder"}
    assert (flagged["effect"] < -0.1).all()


def test_a_leaked_item_is_flagged_compromised_with_its_evidence(bank, reference):
    simulator, leaked = simulate(30_000, "leak", "item-leak")
    fit = item_fit(flatten_events(leaked.submissions), bank, reference=reference)
    flagged = fit[fit["flag"] != ""]
    assert set(flagged["item_id"]) == changed_items(simulator, "item-leak") & set(fit["item_id"])
    assert set(flagged["flag"]) == {"item_compromised"}
    assert (flagged["observed_rate"] > 0.9).all() and (flagged["time_residual"] < -0.5).all()
