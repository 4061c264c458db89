"""Segments: subject × grade band, the unit every monitor (drift, estimated performance,
psychometrics) and the BI aggregates group learners by. Labels look like ``math/5-8``."""

from __future__ import annotations

import pandas as pd


def grade_band_labels(bands: tuple[tuple[int, int], ...]) -> dict[int, str]:
    """Grade → band label.

    >>> grade_band_labels(((1, 4), (5, 8), (9, 12)))[6]
    '5-8'
    """
    return {grade: f"{low}-{high}" for low, high in bands for grade in range(low, high + 1)}


def segment_labels(frame: pd.DataFrame, bands: tuple[tuple[int, int], ...]) -> pd.Series:
    """``subject/band`` of every row, e.g. ``math/5-8``; rows with an unknown grade get None.

    >>> frame = pd.DataFrame({"subject": ["math", "reading"], "grade_level": [3, 11]})
    >>> segment_labels(frame, ((1, 4), (5, 8), (9, 12))).tolist()
    ['math/1-4', 'reading/9-12']
    """
    for column in ("subject", "grade_level"):
        if column not in frame.columns:
            raise KeyError(f"segments need column {column!r}; the frame has "
                           f"{sorted(frame.columns)}")
    band = pd.to_numeric(frame["grade_level"], errors="coerce").map(grade_band_labels(bands))
    labels = frame["subject"].astype("string") + "/" + band.astype("string")
    return labels.astype(object).where(labels.notna(), None)
