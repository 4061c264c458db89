"""What the drift detectors watch, and how rows are grouped into segments.

A *signal* is one number per row of a micro-batch: a feature of a scored submission
(covariate drift), its predicted score (prediction drift), or, once its outcome is known,
the error of the prediction (concept drift). A *segment* is subject × grade band; each
(signal, segment) pair has its own detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Kind = Literal["covariate", "prediction", "concept", "effort"]
Source = Literal["predictions", "outcomes"]


@dataclass(frozen=True)
class Signal:
    """One watched quantity.

    ``column`` is read from the predictions frame (``source="predictions"``: one row per scored
    submission) or the joined outcomes frame (``source="outcomes"``). ``model_dependent``
    signals change when the model does (predictions, errors, and the ability estimate, which
    uses the model's item bank): their detectors restart with each new model version, so a
    promotion is never mistaken for drift. ``min_scale`` floors the reference σ (signal units).
    """

    name: str
    kind: Kind
    source: Source
    column: str
    model_dependent: bool
    direction: Literal["both", "increase"] = "both"
    min_scale: float = 1e-3
    invert: bool = False  # value = 1 − column (a "correct" flag watched as an error)
    optional: bool = False  # a frame without the column gives NaN (not fed) instead of an error
    retrain: bool = True  # a detection asks for a retrain (a cohort that rushes is not the model's fault)

    def values(self, frame: pd.DataFrame) -> np.ndarray:
        """This signal's value per row of ``frame`` as float64 (NaN where missing)."""
        if self.column not in frame.columns and self.optional:
            return np.full(len(frame), np.nan)
        if self.column not in frame.columns:
            raise KeyError(
                f"drift signal {self.name!r} needs column {self.column!r} in the {self.source} "
                f"frame; it has {sorted(frame.columns)}"
            )
        values = pd.to_numeric(frame[self.column], errors="coerce").to_numpy(dtype=np.float64,
                                                                              na_value=np.nan)
        return 1.0 - values if self.invert else values


SIGNALS: tuple[Signal, ...] = (
    Signal("accuracy", "covariate", "predictions", "accuracy", model_dependent=False,
           min_scale=0.01),
    Signal("ability", "covariate", "predictions", "ability", model_dependent=True,
           min_scale=0.01),
    Signal("mean_log_time", "covariate", "predictions", "mean_log_time", model_dependent=False,
           min_scale=0.01),
    # Rapid guessing (streaming/effort.py): a segment that starts rushing. Its thresholds come from
    # the scoring version's item bank, so it restarts with each version; it asks for no retrain —
    # a model trained on rushed answers would learn the rushing.
    Signal("rapid_guess_share", "effort", "predictions", "rapid_guess_share", model_dependent=True,
           direction="increase", min_scale=0.01, optional=True, retrain=False),
    Signal("predicted_score", "prediction", "predictions", "progress_score",
           model_dependent=True, min_scale=0.1),
    Signal("abs_error", "concept", "outcomes", "abs_error", model_dependent=True,
           direction="increase", min_scale=0.1),
    Signal("misclassified", "concept", "outcomes", "level_correct", model_dependent=True,
           direction="increase", min_scale=0.01, invert=True),
)
