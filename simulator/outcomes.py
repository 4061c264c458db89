"""Observed outcomes: what a learner's progress turned out to be, weeks after the diagnostic.

The observed progress score follows the learner's true ability through a :class:`ScoreRelation`
(``intercept + slope * theta`` plus noise, clipped to 0–100); the comprehension level comes from
the observed score by fixed thresholds, with a little label noise (teachers disagree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learnscore.schemas.events import LEVELS

# beginner < 40 <= developing < 60 <= proficient < 78 <= advanced
LEVEL_THRESHOLDS = (40.0, 60.0, 78.0)
LEVEL_NOISE = 0.05  # share of outcomes whose level is one step off the score's level


@dataclass(frozen=True)
class ScoreRelation:
    """Observed score = intercept + slope × ability + normal noise (sd ``noise_sd``), in 0–100."""

    intercept: float = 50.0
    slope: float = 15.0
    noise_sd: float = 5.0

    def expected(self, theta):
        """The noise-free score: what a perfect model (an oracle knowing theta) would predict.

        >>> ScoreRelation().expected(np.array([-4.0, 0.0, 1.0])).tolist()
        [0.0, 50.0, 65.0]
        """
        return np.clip(self.intercept + self.slope * np.asarray(theta, dtype=float), 0.0, 100.0)


BASE_RELATION = ScoreRelation()
# After a curriculum change the later outcome depends much less on what the diagnostic measures.
SHIFTED_RELATION = ScoreRelation(intercept=60.0, slope=5.0, noise_sd=5.0)


def level_index(score) -> np.ndarray:
    """Index into ``LEVELS`` of each score by the thresholds.

    >>> [LEVELS[i] for i in level_index(np.array([0, 39.9, 40, 59.9, 60, 77.9, 78, 100]))]
    ['beginner', 'beginner', 'developing', 'developing', 'proficient', 'proficient', 'advanced', 'advanced']
    """
    return np.searchsorted(np.asarray(LEVEL_THRESHOLDS), np.asarray(score, dtype=float), side="right")


def observe_outcomes(rng: np.random.Generator, theta: np.ndarray, intercept: np.ndarray,
                     slope: np.ndarray, noise_sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw (observed score rounded to 0.1, level index) per learner; the relation may differ per
    learner (arrays), so one call covers a block that straddles a concept shift."""
    n = len(theta)
    score = np.clip(intercept + slope * theta + rng.normal(0.0, 1.0, n) * noise_sd, 0.0, 100.0)
    score = np.round(score, 1)
    level = level_index(score)
    step = rng.choice(np.array([-1, 0, 1]), size=n, p=[LEVEL_NOISE / 2, 1 - LEVEL_NOISE, LEVEL_NOISE / 2])
    return score, np.clip(level + step, 0, len(LEVELS) - 1)
