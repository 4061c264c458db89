"""Rapid guessing: responses given too fast to be an attempt, told from response times alone.

**Thresholds.** A response to item ``i`` is a rapid guess when its time is below the item's
normative threshold NT10: 10 % of the item's typical time, capped at 10 s (Wise & Ma, 2012,
*Setting response time thresholds for a CAT algorithm*, NCME annual meeting; the cap as in
Wise, 2017, *Rapid-guessing behavior: its identification, interpretation, and implications*,
Educational Measurement: Issues and Practice 36(4)). The typical time is the item bank's mean
log time (the mean of ``log1p(ms)``, so ``expm1`` of it is the geometric mean: the median of a
log-normal time), with the bank's skill, subject and global fallbacks for items it does not
know. A bank that carries no times (:meth:`ItemBank.neutral`) gives 0-ms thresholds: nothing
is called a rapid guess rather than everything.

**Per submission.** Response-time effort (RTE; Wise & Kong, 2005, *Response time effort: a new
measure of examinee motivation in computer-based tests*, Applied Measurement in Education
18(2)) is the share of a submission's responses that are *not* rapid guesses; a submission whose
share of rapid guesses exceeds a limit is ``low_effort`` (Wise & Kong flag RTE < .90, a limit
of 0.10).

Vectorised over flat responses like :mod:`learnscore.model.item_bank`; nothing walks rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from learnscore.model.features import FlatResponses
from learnscore.model.item_bank import ItemBank

NORMATIVE_SHARE = 0.10  # NT10
THRESHOLD_CAP_MS = 10_000.0
LOW_EFFORT_SHARE = 0.10  # RTE < .90


@dataclass(frozen=True)
class Effort:
    """Per response: the threshold and whether it was a rapid guess; per submission: the share
    of rapid guesses and the ``low_effort`` flag."""

    threshold_ms: np.ndarray
    rapid: np.ndarray
    rapid_guess_share: np.ndarray
    low_effort: np.ndarray


def rapid_guess_thresholds_ms(flat: FlatResponses, bank: ItemBank, *,
                              share: float = NORMATIVE_SHARE,
                              cap_ms: float = THRESHOLD_CAP_MS) -> np.ndarray:
    """NT10 per response: ``share`` of the item's typical time in ms, at most ``cap_ms``.

    >>> from learnscore.model.features import flatten_events
    >>> flat = flatten_events([_example_event([900, 30_000, 400])])
    >>> rapid_guess_thresholds_ms(flat, _example_bank()).round().tolist()   # items of 20 s, 200 s, unknown
    [2000.0, 10000.0, 0.0]
    """
    _, _, log_time, _ = bank.lookup(flat.item_id, flat.skill, flat.subject, flat.row)
    return np.minimum(share * np.expm1(np.maximum(log_time, 0.0)), cap_ms)


def measure_effort(flat: FlatResponses, bank: ItemBank, *, share: float = NORMATIVE_SHARE,
                   cap_ms: float = THRESHOLD_CAP_MS,
                   low_effort_share: float = LOW_EFFORT_SHARE) -> Effort:
    """Rapid guesses per response and the effort of each submission.

    >>> from learnscore.model.features import flatten_events
    >>> flat = flatten_events([_example_event([900, 30_000, 400]), _example_event([5_000, 60_000, 400])])
    >>> effort = measure_effort(flat, _example_bank())
    >>> effort.rapid.tolist()
    [True, False, False, False, False, False]
    >>> effort.rapid_guess_share.round(3).tolist(), effort.low_effort.tolist()
    ([0.333, 0.0], [True, False])
    """
    threshold = rapid_guess_thresholds_ms(flat, bank, share=share, cap_ms=cap_ms)
    rapid = flat.response_time_ms < threshold
    counts = np.diff(flat.offsets)
    rapid_share = (np.bincount(flat.row, weights=rapid, minlength=flat.n_rows)
                   / np.maximum(counts, 1))
    return Effort(threshold_ms=threshold, rapid=rapid, rapid_guess_share=rapid_share,
                  low_effort=rapid_share > low_effort_share)


def judges_effort(bank: ItemBank) -> bool:
    """Whether ``bank`` knows response times (a neutral bank does not: nothing can be a rapid guess).

    >>> judges_effort(_example_bank()), judges_effort(ItemBank.neutral())
    (True, False)
    """
    return bool(np.any(bank.log_time > 0) or np.any(bank.subject_log_time > 0) or bank.global_log_time > 0)


def effort_per_submission(flat: FlatResponses, bank: ItemBank, *, share: float = NORMATIVE_SHARE,
                          cap_ms: float = THRESHOLD_CAP_MS) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per submission: its share of rapid guesses and its rapid-guess mask (one flag per response,
    in answer order) — what the stream and the endpoint attach to a score.

    >>> from learnscore.model.features import flatten_events
    >>> shares, masks = effort_per_submission(flatten_events([_example_event([900, 30_000, 400])]),
    ...                                       _example_bank())
    >>> shares.round(3).tolist(), [mask.tolist() for mask in masks]
    ([0.333], [[True, False, False]])
    """
    effort = measure_effort(flat, bank, share=share, cap_ms=cap_ms)
    if not flat.n_rows:
        return effort.rapid_guess_share, []
    return effort.rapid_guess_share, np.split(effort.rapid, flat.offsets[1:-1])


def without_rapid_guesses(flat: FlatResponses, rapid: np.ndarray) -> tuple[FlatResponses, np.ndarray]:
    """The effortful responses only, for the score "without the rapid guesses", and the rows
    that keep at least one response (a submission of rapid guesses alone has no such score).

    >>> from learnscore.model.features import flatten_events
    >>> flat = flatten_events([_example_event([900, 30_000, 400]), _example_event([100, 100, 100])])
    >>> kept, rows = without_rapid_guesses(flat, np.array([True, False, False, True, True, True]))
    >>> kept.n_rows, kept.item_id.to_pylist(), rows.tolist()
    (1, ['m-2', 'm-9'], [0])
    """
    keep = ~rapid
    per_row = np.bincount(flat.row, weights=keep, minlength=flat.n_rows).astype(np.int64)
    rows = np.flatnonzero(per_row > 0)  # a row with no kept response has none in `keep` either
    lengths = per_row[rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    mask = pa.array(keep)
    taken = pa.array(rows)
    return FlatResponses(
        n_rows=len(rows), row=np.repeat(np.arange(len(rows)), lengths), offsets=offsets,
        subject=flat.subject.take(taken), grade_level=flat.grade_level[rows],
        item_id=flat.item_id.filter(mask), skill=flat.skill.filter(mask),
        correct=flat.correct[keep], response_time_ms=flat.response_time_ms[keep],
        attempts=flat.attempts[keep], hint_used=flat.hint_used[keep]), rows


def effort_shift(low_effort: np.ndarray, segment: np.ndarray, reference_rate: dict[str, float], *,
                 z_limit: float = 4.5, min_effect: float = 0.02, min_rows: int = 200) -> pd.DataFrame:
    """Per segment, the share of low-effort submissions in a window against its reference share:
    a segment is ``flagged`` (a cohort that started rushing) when the share rose by more than
    ``min_effect`` and by more than ``z_limit`` binomial standard errors, on ``min_rows`` or more.
    The reference share is floored at 1 in 10,000 (stationary data may have none at all).

    >>> flags = np.array([True] * 30 + [False] * 270 + [False] * 300)
    >>> shift = effort_shift(flags, np.array(["math/1-12"] * 300 + ["reading/1-12"] * 300), {})
    >>> shift[["segment", "rows", "rate", "flagged"]].values.tolist()
    [['math/1-12', 300, 0.1, True], ['reading/1-12', 300, 0.0, False]]
    """
    frame = pd.DataFrame({"segment": segment, "low_effort": low_effort.astype(np.float64)})
    by = frame.groupby("segment", sort=True)["low_effort"].agg(["size", "mean"]).reset_index()
    by.columns = ["segment", "rows", "rate"]
    reference = np.maximum(by["segment"].map(reference_rate).fillna(0.0).to_numpy(np.float64), 1e-4)
    z = (by["rate"] - reference) / np.sqrt(reference * (1 - reference) / by["rows"])
    return by.assign(reference_rate=reference, z=z,
                     flagged=(by["rows"] >= min_rows) & (by["rate"] - reference > min_effect) & (z > z_limit))


def _example_bank() -> ItemBank:
    """Two math items: ``m-1`` typically 20 s, ``m-2`` 200 s; subject and global times 0."""
    return ItemBank(["m-1", "m-2"], ["fractions", "fractions"], [1.0, 1.0], [0.0, 0.0],
                    [np.log1p(20_000), np.log1p(200_000)], [], [], [], [], [], [], [], [],
                    1.0, 0.0, 0.0)


def _example_event(times_ms: list[int]) -> dict:
    items = ["m-1", "m-2", "m-9"]
    return {"subject": "math", "grade_level": 5, "responses": [
        {"item_id": item, "skill": "fractions", "correct": True, "response_time_ms": ms,
         "attempts": 1, "hint_used": False} for item, ms in zip(items, times_ms)]}
