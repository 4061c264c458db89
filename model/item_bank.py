"""Item response theory for the features: the item bank a model was trained with, and abilities.

The two-parameter logistic model (2PL): a learner of ability ``θ`` answers item ``i`` correctly
with probability ``σ(a_i (θ − b_i))`` (discrimination ``a``, difficulty ``b``). A lower guessing
asymptote (3PL) is not estimated: on a few dozen responses per learner it is poorly identified,
and the gradient-boosted models downstream absorb what 2PL misses.

Everything here is vectorised over *flat* responses (all responses of a batch in one array,
``row`` saying which submission each belongs to); nothing walks rows in Python.

The item bank is estimated once, at training time (:func:`fit_item_bank`, joint maximum
likelihood with weak priors), and travels inside the model. At scoring time an item the bank
does not know falls back to the mean parameters of its skill, then of the submission's subject,
then of all items.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

ABILITY_BOUND = 4.0  # abilities live on a standard-normal scale; ±4 is beyond any real learner
_MIN_DISCRIMINATION, _MAX_DISCRIMINATION = 0.1, 4.0


class ItemBank:
    """Item parameters (2PL) and mean log response times, with skill/subject/global fallbacks.

    Plain lists and float arrays only, so that the skops format can store it without pickle.
    Parameters are per item, aligned with ``item_ids``; ``skills`` is the skill catalogue known
    at training (sorted), which also fixes the per-skill feature slots.
    """

    def __init__(self, item_ids, item_skills, discrimination, difficulty, log_time,
                 skills, skill_discrimination, skill_difficulty, skill_log_time,
                 subjects, subject_discrimination, subject_difficulty, subject_log_time,
                 global_discrimination, global_difficulty, global_log_time):
        self.item_ids = [str(x) for x in item_ids]
        self.item_skills = [str(x) for x in item_skills]
        self.discrimination = np.asarray(discrimination, dtype=np.float64)
        self.difficulty = np.asarray(difficulty, dtype=np.float64)
        self.log_time = np.asarray(log_time, dtype=np.float64)
        self.skills = [str(x) for x in skills]
        self.skill_discrimination = np.asarray(skill_discrimination, dtype=np.float64)
        self.skill_difficulty = np.asarray(skill_difficulty, dtype=np.float64)
        self.skill_log_time = np.asarray(skill_log_time, dtype=np.float64)
        self.subjects = [str(x) for x in subjects]
        self.subject_discrimination = np.asarray(subject_discrimination, dtype=np.float64)
        self.subject_difficulty = np.asarray(subject_difficulty, dtype=np.float64)
        self.subject_log_time = np.asarray(subject_log_time, dtype=np.float64)
        self.global_discrimination = float(global_discrimination)
        self.global_difficulty = float(global_difficulty)
        self.global_log_time = float(global_log_time)

    def __repr__(self) -> str:
        return (f"ItemBank({len(self.item_ids)} items, {len(self.skills)} skills, "
                f"{len(self.subjects)} subjects)")

    @classmethod
    def neutral(cls) -> ItemBank:
        """No items, skills or subjects: every item has slope 1 and difficulty 0 (a Rasch scale),
        and the expected log time is 0. For models that bring no bank of their own.

        >>> bank = ItemBank.neutral()
        >>> bank, bank.global_difficulty
        (ItemBank(0 items, 0 skills, 0 subjects), 0.0)
        """
        return cls([], [], [], [], [], [], [], [], [], [], [], [], [], 1.0, 0.0, 0.0)

    def to_dict(self) -> dict:
        """Plain JSON-ready values (the ``item_bank.json`` a registered model may carry)."""
        return {name: (value.tolist() if isinstance(value, np.ndarray) else value)
                for name, value in vars(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> ItemBank:
        """The bank :meth:`to_dict` wrote; a missing or unknown field raises ``ValueError`` naming it.

        >>> ItemBank.from_dict(ItemBank.neutral().to_dict())
        ItemBank(0 items, 0 skills, 0 subjects)
        >>> ItemBank.from_dict({"item_ids": []})
        Traceback (most recent call last):
        ...
        ValueError: an item bank needs the fields ['difficulty', ...]; missing: ['difficulty', ...]
        """
        import inspect

        fields = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
        missing, unknown = [f for f in fields if f not in values], sorted(set(values) - set(fields))
        if missing or unknown:
            raise ValueError(f"an item bank needs the fields {sorted(fields)}; "
                             + (f"missing: {sorted(missing)}" if missing else f"unknown: {unknown}"))
        return cls(**{name: values[name] for name in fields})

    def lookup(self, item_id: pa.Array, skill: pa.Array, row_subject: pa.Array, row: np.ndarray):
        """Parameters for each response: ``(a, b, log_time, known)``.

        ``item_id`` and ``skill`` are flat string arrays (one entry per response), ``row_subject``
        the subject of each submission and ``row`` the submission of each response. ``known`` is
        False where the item was not in the bank and a fallback was used.
        """
        n = len(item_id)
        a = np.full(n, self.global_discrimination)
        b = np.full(n, self.global_difficulty)
        t = np.full(n, self.global_log_time)
        subject_index, _ = index_of(row_subject, self.subjects)
        index = subject_index[row]
        found = index >= 0
        a[found], b[found], t[found] = (self.subject_discrimination[index[found]],
                                        self.subject_difficulty[index[found]],
                                        self.subject_log_time[index[found]])
        index, found = index_of(skill, self.skills)
        a[found], b[found], t[found] = (self.skill_discrimination[index[found]],
                                        self.skill_difficulty[index[found]],
                                        self.skill_log_time[index[found]])
        index, known = index_of(item_id, self.item_ids)
        a[known], b[known], t[known] = (self.discrimination[index[known]],
                                        self.difficulty[index[known]], self.log_time[index[known]])
        return a, b, t, known


def index_of(values: pa.Array, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Position of each value in ``names`` (−1 when absent) and the mask of found values.

    >>> index, found = index_of(pa.array(["b", "z", "a"]), ["a", "b"])
    >>> index.tolist(), found.tolist()
    ([1, -1, 0], [True, False, True])
    >>> index_of(pa.array(["b", None, "a"] * 100), ["a", "b"])[0][:3].tolist()
    [1, -1, 0]
    """
    names = tuple(names)
    if len(values) <= _FEW:
        # One submission (the endpoint): a dict lookup per value beats Arrow's per-call set-up.
        positions = _positions(names)
        index = np.fromiter((positions.get(value, -1) for value in values.to_pylist()),
                            dtype=np.int64, count=len(values))
    else:
        index = pc.index_in(values, value_set=_value_set(names)).fill_null(-1) \
            .to_numpy(zero_copy_only=False).astype(np.int64)
    return index, index >= 0


_FEW = 256


@functools.lru_cache(maxsize=32)
def _value_set(names: tuple[str, ...]) -> pa.Array:
    return pa.array(names, type=pa.string())


@functools.lru_cache(maxsize=32)
def _positions(names: tuple[str, ...]) -> dict[str, int]:
    positions: dict[str, int] = {}
    for position, name in enumerate(names):
        positions.setdefault(name, position)  # the first one, as pyarrow's index_in
    return positions


def estimate_ability(correct: np.ndarray, a: np.ndarray, b: np.ndarray, row: np.ndarray,
                     n_rows: int, steps: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """MAP ability per submission under the 2PL with a standard-normal prior, and its SE.

    Newton steps on the log posterior, all submissions at once (six reach 1e-15 from 0 on
    20–40 items). The prior keeps all-correct and all-wrong answer patterns finite.

    >>> correct = np.array([1, 1, 0, 0, 0, 1], dtype=bool)
    >>> ones = np.ones(6)
    >>> theta, se = estimate_ability(correct, ones, np.zeros(6), np.array([0, 0, 0, 1, 1, 1]), 2)
    >>> np.round(theta, 3).tolist(), np.round(se, 3).tolist()
    ([0.287, -0.287], [0.759, 0.759])
    """
    y = correct.astype(np.float64)
    theta = np.zeros(n_rows)
    information = np.zeros(n_rows)
    for _ in range(steps):
        p = _sigmoid(a * (theta[row] - b))
        gradient = np.bincount(row, weights=a * (y - p), minlength=n_rows) - theta
        information = np.bincount(row, weights=a * a * p * (1 - p), minlength=n_rows) + 1.0
        theta = np.clip(theta + np.clip(gradient / information, -1.0, 1.0),
                        -ABILITY_BOUND, ABILITY_BOUND)
    return theta, 1.0 / np.sqrt(information)


def fit_item_bank(item_id: pa.Array, skill: pa.Array, subject: pa.Array, correct: np.ndarray,
                  log_time: np.ndarray, row: np.ndarray, n_rows: int, *, iterations: int = 15,
                  min_responses: int = 20) -> ItemBank:
    """Estimate 2PL parameters by joint maximum likelihood (alternating Newton steps).

    Items seen fewer than ``min_responses`` times stay out of the bank (they use their skill's
    means at scoring time). Weak normal priors on the slope (around 1) and intercept keep
    rare or extreme items finite. Abilities are re-standardised each round, which fixes the scale.
    """
    item_codes, item_names = _factorize(item_id)
    skill_of_item = _first_per_group(item_codes, skill, len(item_names))
    subject_of_item = _first_per_group(item_codes, subject, len(item_names))
    y = correct.astype(np.float64)
    n_items = len(item_names)

    counts = np.bincount(row, minlength=n_rows)
    score = (np.bincount(row, weights=y, minlength=n_rows) + 0.5) / (counts + 1.0)
    theta = _standardise(np.log(score / (1 - score)))
    slope, intercept = np.ones(n_items), np.zeros(n_items)
    for round_ in range(iterations):
        slope, intercept = _item_newton_step(y, theta[row], item_codes, slope, intercept, n_items)
        theta, _ = estimate_ability(correct, slope[item_codes], -intercept[item_codes] / slope[item_codes],
                                    row, n_rows, steps=3)
        theta = _standardise(theta)
        log.debug("item bank round %d/%d", round_ + 1, iterations)

    difficulty = -intercept / slope
    item_log_time = _group_mean(item_codes, log_time, n_items)
    seen = np.bincount(item_codes, minlength=n_items)
    keep = seen >= min_responses

    skills = sorted(set(skill_of_item))
    subjects = sorted(set(subject_of_item))
    skill_codes = np.array([skills.index(s) for s in skill_of_item], dtype=np.int64)
    subject_codes = np.array([subjects.index(s) for s in subject_of_item], dtype=np.int64)
    weights = np.where(keep, seen, 0).astype(np.float64)
    if weights.sum() == 0:  # tiny data: fall back to every item rather than to nothing
        weights = seen.astype(np.float64)
    return ItemBank(
        item_ids=[name for name, k in zip(item_names, keep) if k],
        item_skills=[s for s, k in zip(skill_of_item, keep) if k],
        discrimination=slope[keep], difficulty=difficulty[keep], log_time=item_log_time[keep],
        skills=skills,
        skill_discrimination=_weighted_group_mean(skill_codes, slope, weights, len(skills)),
        skill_difficulty=_weighted_group_mean(skill_codes, difficulty, weights, len(skills)),
        skill_log_time=_weighted_group_mean(skill_codes, item_log_time, weights, len(skills)),
        subjects=subjects,
        subject_discrimination=_weighted_group_mean(subject_codes, slope, weights, len(subjects)),
        subject_difficulty=_weighted_group_mean(subject_codes, difficulty, weights, len(subjects)),
        subject_log_time=_weighted_group_mean(subject_codes, item_log_time, weights, len(subjects)),
        global_discrimination=np.average(slope, weights=weights),
        global_difficulty=np.average(difficulty, weights=weights),
        global_log_time=np.average(item_log_time, weights=weights),
    )


# -- helpers ----------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def _standardise(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / (spread if spread > 0 else 1.0)


def _item_newton_step(y, theta, item, slope, intercept, n_items, prior_slope_sd=1.0,
                      prior_intercept_sd=3.0):
    """One damped Newton step of every item's (slope, intercept) at once, abilities fixed."""
    p = _sigmoid(slope[item] * theta + intercept[item])
    residual, weight = y - p, p * (1 - p)
    g_slope = np.bincount(item, residual * theta, n_items) - (slope - 1) / prior_slope_sd ** 2
    g_intercept = np.bincount(item, residual, n_items) - intercept / prior_intercept_sd ** 2
    h_ss = np.bincount(item, weight * theta * theta, n_items) + 1 / prior_slope_sd ** 2
    h_si = np.bincount(item, weight * theta, n_items)
    h_ii = np.bincount(item, weight, n_items) + 1 / prior_intercept_sd ** 2
    det = h_ss * h_ii - h_si * h_si
    step_slope = (h_ii * g_slope - h_si * g_intercept) / det
    step_intercept = (h_ss * g_intercept - h_si * g_slope) / det
    slope = np.clip(slope + np.clip(step_slope, -0.5, 0.5), _MIN_DISCRIMINATION, _MAX_DISCRIMINATION)
    intercept = intercept + np.clip(step_intercept, -1.0, 1.0)
    return slope, intercept


def _factorize(values: pa.Array) -> tuple[np.ndarray, list[str]]:
    encoded = pc.dictionary_encode(values).combine_chunks() if isinstance(values, pa.ChunkedArray) \
        else pc.dictionary_encode(values)
    return (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            encoded.dictionary.to_pylist())


def _first_per_group(codes: np.ndarray, values: pa.Array, n_groups: int) -> list[str]:
    first = np.full(n_groups, -1, dtype=np.int64)
    positions = np.arange(len(codes))[::-1]
    first[codes[::-1]] = positions  # the last write wins: the first occurrence
    return values.take(pa.array(first)).to_pylist()


def _group_mean(codes: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=n_groups)
    return np.bincount(codes, weights=values, minlength=n_groups) / np.maximum(counts, 1)


def _weighted_group_mean(codes, values, weights, n_groups) -> np.ndarray:
    total = np.bincount(codes, weights=weights, minlength=n_groups)
    mean = np.bincount(codes, weights=values * weights, minlength=n_groups) / np.maximum(total, 1e-12)
    fallback = np.average(values, weights=weights) if weights.sum() > 0 else float(values.mean())
    return np.where(total > 0, mean, fallback)
