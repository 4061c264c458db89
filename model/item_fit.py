"""Item drift and compromised items: each item's answers now against its answers before.

For a window of submissions, each learner's ability ``θ`` is estimated from the submission
(:func:`~learnscore.model.item_bank.estimate_ability`, MAP under the bank's 2PL) and each
response is compared with the bank:

* **correctness**: the item's mean residual ``Σ(y − p) / n`` with ``p = σ(a(θ − b))``, whose
  standard error is ``√Σp(1 − p) / n`` — the item-fit residual of IRT practice (Wright & Stone,
  1979, *Best Test Design*);
* **time**: the mean of ``log1p(ms) − expected log time`` over the item's responses, with the
  standard error of its spread.

The bank is a 2PL summary, and a real item departs from it in ways that stay put (a guessing
floor, its own time profile): on 1,500 answers such a stable misfit alone is 5 σ. So an item is
tested for a *change*: the difference between its residuals in the window and in a reference
window (the training data's, :func:`item_fit` without a reference), over the standard error of
that difference. An item **drifted** when ``|z| > z_limit`` with at least ``min_responses``
answers in both (direction ``easier``/``harder``, effect: the change of its correct rate beyond
what the learners' abilities explain); it is **compromised** (a leaked item: answered right more
often *and* faster than before, for learners of the same ability) when ``z > z_limit`` and
``z_time < −z_time_limit``. The limits are wide (5 σ) because every item is tested in every
window, and the statistic's null spread is a little wider than a standard normal's (the
abilities and the reference are estimates): ``learnscore bench psychometrics`` reports the
largest ``|z|`` of its stationary windows beside the limits. ``θ`` uses the item itself, which
pulls every ``z`` a little towards 0 (some power, no false alarms), and is estimated again
without the flagged items until the flags settle (purification).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from learnscore.model.features import FlatResponses
from learnscore.model.item_bank import ItemBank, estimate_ability

Z_LIMIT = 5.0
Z_TIME_LIMIT = 5.0
MIN_RESPONSES = 50
FIT_COLUMNS = ("item_id", "responses", "observed_rate", "expected_rate", "effect", "variance", "z",
               "time_residual", "time_sd", "z_time", "flag", "direction")


SUM_COLUMNS = ("item_id", "responses", "correct", "expected", "variance", "time_sum", "time_squares")


def item_fit(flat: FlatResponses, bank: ItemBank, *, reference: pd.DataFrame | None = None,
             z_limit: float = Z_LIMIT, z_time_limit: float = Z_TIME_LIMIT,
             min_responses: int = MIN_RESPONSES, exclude: np.ndarray | None = None,
             purify_rounds: int = 2) -> pd.DataFrame:
    """One row per item seen in ``flat`` (columns :data:`FIT_COLUMNS`), flagged items first.

    Without ``reference`` the rows describe the window (nothing is flagged); with it — the frame
    this function returned for a reference window, e.g. the model's training data — each item is
    tested for a change against its own reference residuals, which cancels what the 2PL bank
    misses about an item (a guessing floor, a time profile) and leaves what changed. ``flag`` is
    ``item_compromised``, ``item_drift`` or empty; ``direction`` is ``easier`` or ``harder`` for a
    flagged item. Items the bank does not know are left out (nothing to compare with), and so are
    the responses ``exclude`` marks (rapid guesses: chance answers pull every item "harder").
    """
    limits = (z_limit, z_time_limit, min_responses)
    # Purification (as in DIF analysis, Candell & Drasgow, 1988): a leaked item inflates the
    # abilities of those who saw it and so makes their other items look harder; abilities are
    # estimated again without the flagged items until the flags settle.
    flagged: list[str] = []
    frame = pd.DataFrame(columns=list(FIT_COLUMNS))
    for _ in range(1 + purify_rounds):
        frame = compare_items(item_sums(flat, bank, exclude=exclude, not_for_ability=flagged), reference, limits)
        now = sorted(frame.loc[frame["flag"] != "", "item_id"])
        if reference is None or now == flagged:
            break
        flagged = now
    return frame


def item_sums(flat: FlatResponses, bank: ItemBank, *, exclude: np.ndarray | None = None,
              not_for_ability=()) -> pd.DataFrame:
    """Per item the bank knows, additive sums of its responses (:data:`SUM_COLUMNS`): the count,
    correct answers, their expectation and variance under the 2PL at each learner's ``θ``, and the
    sum and squares of the log-time residuals. Sums of micro-batches add up to a window's (the
    stream's way, :mod:`learnscore.streaming.drift.items`). ``θ`` is estimated per submission
    without the items ``not_for_ability`` (those already flagged) and the ``exclude`` responses."""
    a, b, expected_log_time, known = bank.lookup(flat.item_id, flat.skill, flat.subject, flat.row)
    use = known & (True if exclude is None else ~exclude)
    if not use.any():
        return pd.DataFrame({c: pd.Series(dtype=object if c == "item_id" else np.float64) for c in SUM_COLUMNS})
    item_of = pc.cast(flat.item_id, "string").to_numpy(zero_copy_only=False)
    basis = use & ~np.isin(item_of, list(not_for_ability)) if len(not_for_ability) else use
    theta, _ = estimate_ability(flat.correct[basis], a[basis], b[basis], flat.row[basis], flat.n_rows)
    names, code = np.unique(item_of[use], return_inverse=True)
    k = len(names)
    p = 1.0 / (1.0 + np.exp(-a[use] * (theta[flat.row[use]] - b[use])))
    residual_time = np.log1p(flat.response_time_ms[use].astype(np.float64)) - expected_log_time[use]
    return pd.DataFrame({
        "item_id": names,
        "responses": np.bincount(code, minlength=k).astype(np.float64),
        "correct": np.bincount(code, weights=flat.correct[use].astype(np.float64), minlength=k),
        "expected": np.bincount(code, weights=p, minlength=k),
        "variance": np.bincount(code, weights=p * (1.0 - p), minlength=k),  # of the correct count
        "time_sum": np.bincount(code, weights=residual_time, minlength=k),
        "time_squares": np.bincount(code, weights=residual_time ** 2, minlength=k),
    })


def add_sums(*parts: pd.DataFrame) -> pd.DataFrame:
    """The :func:`item_sums` of several batches as one window.

    >>> one = pd.DataFrame({"item_id": ["a"], **{c: [1.0] for c in SUM_COLUMNS[1:]}})
    >>> add_sums(one, one.assign(item_id="b"), one)[["item_id", "responses"]].values.tolist()
    [['a', 2.0], ['b', 1.0]]
    """
    frames = [part for part in parts if part is not None and len(part)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "item_id" else np.float64) for c in SUM_COLUMNS})
    return pd.concat(frames).groupby("item_id", as_index=False, sort=True)[list(SUM_COLUMNS[1:])].sum()


def compare_items(sums: pd.DataFrame, reference: pd.DataFrame | None,
                  limits: tuple[float, float, int] = (Z_LIMIT, Z_TIME_LIMIT, MIN_RESPONSES)) -> pd.DataFrame:
    """The :func:`item_fit` rows of a window's sums; against ``reference`` (those rows of a
    reference window), each item's change and its flag."""
    z_limit, z_time_limit, min_responses = limits
    n = sums["responses"].to_numpy(np.float64)
    if not len(n):
        return pd.DataFrame(columns=list(FIT_COLUMNS))
    time_mean = sums["time_sum"].to_numpy(np.float64) / n
    spread = np.maximum(sums["time_squares"].to_numpy(np.float64) - n * time_mean ** 2, 0.0)
    frame = pd.DataFrame({
        "item_id": sums["item_id"].to_numpy(), "responses": n.astype(np.int64),
        "observed_rate": sums["correct"].to_numpy(np.float64) / n,
        "expected_rate": sums["expected"].to_numpy(np.float64) / n,
        "variance": sums["variance"].to_numpy(np.float64),
        "time_residual": time_mean, "time_sd": np.sqrt(spread / np.maximum(n - 1, 1)),
    })
    frame["effect"] = frame["observed_rate"] - frame["expected_rate"]
    if reference is None:
        return frame.assign(z=0.0, z_time=0.0, flag="", direction="")[list(FIT_COLUMNS)]
    ref = frame[["item_id"]].merge(reference, on="item_id", how="left")
    n_ref = ref["responses"].fillna(0).to_numpy(np.float64)
    effect_se = np.sqrt(frame["variance"] / n ** 2 + ref["variance"].fillna(0) / np.maximum(n_ref, 1) ** 2)
    frame["effect"] = frame["effect"] - ref["effect"].fillna(0.0)
    frame["z"] = frame["effect"] / np.maximum(effect_se, 1e-9)
    time_se = np.sqrt(frame["time_sd"] ** 2 / n + ref["time_sd"].fillna(0) ** 2 / np.maximum(n_ref, 1))
    frame["time_residual"] = frame["time_residual"] - ref["time_residual"].fillna(0.0)
    frame["z_time"] = frame["time_residual"] / np.maximum(time_se, 1e-9)

    enough = (n >= min_responses) & (n_ref >= min_responses)
    drifted = enough & (frame["z"].abs() > z_limit)
    compromised = enough & (frame["z"] > z_limit) & (frame["z_time"] < -z_time_limit)
    frame["flag"] = np.where(compromised, "item_compromised", np.where(drifted, "item_drift", ""))
    frame["direction"] = np.where(drifted, np.where(frame["z"] > 0, "easier", "harder"), "")
    frame = frame.sort_values(["flag", "z"], ascending=[False, False], key=_flag_key)
    return frame[list(FIT_COLUMNS)].reset_index(drop=True)


def _flag_key(column: pd.Series) -> pd.Series:
    if column.name == "flag":
        return column.map({"item_compromised": 2, "item_drift": 1}).fillna(0)
    return column.abs()
