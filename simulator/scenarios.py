"""Named drift scenarios and when they start.

A scenario is written ``name@start``: ``weaker-cohort@15s`` starts 15 seconds (of simulated
time) after the first event, ``item-bank-change@5000`` at the 5000th valid submission (counted
from 0), ``concept-shift@20d`` twenty days into a history, a bare ``name`` at once.
Once started a scenario stays on; several may run at the same time.

- ``weaker-cohort``: new learners' ability mean shifts down by 1.0 (cohort ``weaker``);
- ``item-bank-change``: tests use bank ``v2``: new item ids, harder, less discriminating;
- ``concept-shift``: the observed score follows ability far less (60 + 5θ instead of 50 + 15θ):
  the inputs look the same, the outcomes do not, so the live model's error rises;
- ``response-time-unit-change``: ``response_time_ms`` is sent in seconds (values ÷ 1000);
- ``rapid-guessing``: three in ten new learners (cohort ``rushing``) answer half of their items
  at chance in 0.3–1.5 s (low-effort responses);
- ``item-leak``: three items per subject (:func:`psychometric_items`) become easy (95 % right)
  and fast (a third of their time) for everyone: leaked items;
- ``item-difficulty-drift``: three other items per subject get harder by 1.5 (difficulty).

The three psychometric scenarios change answers only: abilities and outcomes stay as they were,
and a run without them draws exactly the numbers it drew before they existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learnscore.core.durations import DurationError, format_duration, parse_duration
from learnscore.simulator.outcomes import BASE_RELATION, SHIFTED_RELATION

SCENARIOS: dict[str, str] = {
    "weaker-cohort": "new learners' ability mean shifts down by 1.0",
    "item-bank-change": "tests switch to item bank v2 (new item ids, harder, less discriminating)",
    "concept-shift": "observed score = 60 + 5·ability instead of 50 + 15·ability",
    "response-time-unit-change": "response_time_ms carries seconds (values / 1000)",
    "rapid-guessing": "3 in 10 new learners answer half their items at chance in 0.3-1.5 s",
    "item-leak": "3 items per subject become easy (95 % right) and fast for everyone",
    "item-difficulty-drift": "3 items per subject get harder by 1.5",
}
PSYCHOMETRIC = ("rapid-guessing", "item-leak", "item-difficulty-drift")
RUSHING_IN_TEN = 3  # new learners k with k % 10 < 3 rush
RUSHED_ITEM_SHARE = 0.5
RAPID_TIME_MS = (300.0, 1500.0)
CHANCE = 0.25  # four options
LEAKED_RIGHT = 0.95
LEAKED_TIME_FACTOR = 1 / 3
DRIFT_DIFFICULTY = 1.5
_ITEM_POSITIONS = {"item-leak": 1, "item-difficulty-drift": 2}  # item k of the first three skills
WEAKER_COHORT_SHIFT = -1.0



class ScenarioError(ValueError):
    """A scenario or duration the user wrote cannot be understood; the message says how to write it."""


@dataclass(frozen=True)
class ScenarioSpec:
    """One scenario and its start: a time offset in seconds or a valid-submission index."""

    name: str
    at_seconds: float | None = None
    at_event: int | None = None

    def active(self, index: np.ndarray, offset_s: np.ndarray) -> np.ndarray:
        """Which events (by index and time offset from the start) it applies to."""
        if self.at_event is not None:
            return index >= self.at_event
        return offset_s >= (self.at_seconds or 0.0)

    def __str__(self) -> str:
        if self.at_event is not None:
            return f"{self.name}@{self.at_event}"
        return f"{self.name}@{format_duration(self.at_seconds or 0.0)}"


def parse_scenario(text: str) -> ScenarioSpec:
    """``"weaker-cohort@15s"`` → start 15 s in; ``"concept-shift@5000"`` → at event 5000.

    >>> parse_scenario("weaker-cohort@15s")
    ScenarioSpec(name='weaker-cohort', at_seconds=15.0, at_event=None)
    >>> parse_scenario("item-bank-change@5000")
    ScenarioSpec(name='item-bank-change', at_seconds=None, at_event=5000)
    >>> parse_scenario("colder-winter@3s")
    Traceback (most recent call last):
    ...
    learnscore.simulator.scenarios.ScenarioError: unknown scenario 'colder-winter'; known: ...
    """
    name, _, start = text.strip().partition("@")
    if name not in SCENARIOS:
        raise ScenarioError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if not start:
        return ScenarioSpec(name, at_seconds=0.0)
    if start.isdigit():
        return ScenarioSpec(name, at_event=int(start))
    try:
        return ScenarioSpec(name, at_seconds=parse_duration(start))
    except DurationError:
        raise ScenarioError(f"scenario {text!r}: the start must be an event count (5000) or a time "
                            f"offset (15s, 2m, 3d)") from None


@dataclass(frozen=True)
class Effects:
    """What the active scenarios change, per event of a block (arrays of the block's length)."""

    ability_shift: np.ndarray
    bank_version: np.ndarray  # index into ItemBank.versions
    score_intercept: np.ndarray
    score_slope: np.ndarray
    score_noise_sd: np.ndarray
    time_in_seconds: np.ndarray  # response_time_ms carries seconds
    label: np.ndarray  # object array: "+"-joined active scenario names, or "none"
    cohort: np.ndarray  # object array: "baseline", "weaker" or "rushing"
    item_leak: np.ndarray  # the leaked items are easy and fast in this event
    item_drift: np.ndarray  # the drifted items are harder in this event

    @property
    def psychometric(self) -> bool:
        return bool((self.cohort == "rushing").any() or self.item_leak.any() or self.item_drift.any())


def effects_of(scenarios: tuple[ScenarioSpec, ...], index: np.ndarray, offset_s: np.ndarray) -> Effects:
    """Combine the scenarios active at each event (by index and time offset) into :class:`Effects`.

    >>> e = effects_of((parse_scenario("weaker-cohort@2"),), np.arange(4), np.zeros(4))
    >>> e.ability_shift.tolist(), e.label.tolist()
    ([0.0, 0.0, -1.0, -1.0], ['none', 'none', 'weaker-cohort', 'weaker-cohort'])
    """
    n = len(index)
    active = {name: np.zeros(n, dtype=bool) for name in SCENARIOS}
    for spec in scenarios:
        active[spec.name] |= spec.active(index, offset_s)
    shifted = active["concept-shift"]
    label = np.full(n, "", dtype=object)
    for name in SCENARIOS:
        label = np.where(active[name], np.where(label == "", name, label + "+" + name), label)
    return Effects(
        ability_shift=np.where(active["weaker-cohort"], WEAKER_COHORT_SHIFT, 0.0),
        bank_version=active["item-bank-change"].astype(np.int64),
        score_intercept=np.where(shifted, SHIFTED_RELATION.intercept, BASE_RELATION.intercept),
        score_slope=np.where(shifted, SHIFTED_RELATION.slope, BASE_RELATION.slope),
        score_noise_sd=np.where(shifted, SHIFTED_RELATION.noise_sd, BASE_RELATION.noise_sd),
        time_in_seconds=active["response-time-unit-change"],
        label=np.where(label == "", "none", label).astype(object),
        cohort=np.where(active["rapid-guessing"] & (index % 10 < RUSHING_IN_TEN), "rushing",
                        np.where(active["weaker-cohort"], "weaker", "baseline")).astype(object),
        item_leak=active["item-leak"],
        item_drift=active["item-difficulty-drift"],
    )


def psychometric_items(item_id: np.ndarray, items_per_skill: int, skills_per_subject: int,
                       scenario: str) -> np.ndarray:
    """Which items of a simulated bank (laid out by version, subject, skill, item) a psychometric
    scenario changes: item 1 (leak) or 2 (difficulty drift) of the first three skills of every
    subject in every bank version. A mask over ``item_id``.

    >>> ids = np.array([f"i{k}" for k in range(2 * 5 * 4)])   # 2 subjects x 5 skills x 4 items
    >>> ids[psychometric_items(ids, 4, 5, "item-leak")].tolist()
    ['i1', 'i5', 'i9', 'i21', 'i25', 'i29']
    """
    position = np.arange(len(item_id)) % (items_per_skill * skills_per_subject)
    skill, within = position // items_per_skill, position % items_per_skill
    return (skill < 3) & (within == _ITEM_POSITIONS[scenario])


def apply_psychometric_effects(rng: np.random.Generator, bank, answers, theta: np.ndarray,
                               effects: Effects) -> None:
    """Change ``answers`` (a block's :class:`~learnscore.simulator.irt.Answers`, in place) the
    way the active psychometric scenarios say. Called after every other draw of the block, and
    only when one is active, so that other runs keep their numbers."""
    from learnscore.simulator.irt import SKILLS_PER_SUBJECT, p_correct

    counts = np.diff(answers.offsets)
    event = np.repeat(np.arange(len(counts)), counts)
    skills = SKILLS_PER_SUBJECT
    m = len(answers.item_index)
    drifted = (psychometric_items(bank.item_id, bank.items_per_skill, skills, "item-difficulty-drift")
               [answers.item_index] & effects.item_drift[event])
    if drifted.any():
        i = answers.item_index[drifted]
        p = p_correct(theta[event[drifted]], bank.discrimination[i], bank.difficulty[i] + DRIFT_DIFFICULTY,
                      bank.guessing[i])
        answers.correct[drifted] = rng.random(int(drifted.sum())) < p
    leaked = (psychometric_items(bank.item_id, bank.items_per_skill, skills, "item-leak")
              [answers.item_index] & effects.item_leak[event])
    if leaked.any():
        answers.correct[leaked] = rng.random(int(leaked.sum())) < LEAKED_RIGHT
        answers.response_time_ms[leaked] = np.maximum(answers.response_time_ms[leaked] * LEAKED_TIME_FACTOR,
                                                      RAPID_TIME_MS[0])
    rushed = (effects.cohort == "rushing")[event] & (rng.random(m) < RUSHED_ITEM_SHARE)
    if rushed.any():
        answers.correct[rushed] = rng.random(int(rushed.sum())) < CHANCE
        answers.response_time_ms[rushed] = rng.uniform(*RAPID_TIME_MS, int(rushed.sum()))
