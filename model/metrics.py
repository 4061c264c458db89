"""Model quality: metrics for the score and the ordered level, baselines and the oracle ceiling.

Pure functions over arrays; the training job and the registry gates both call them, so a
version's holdout metrics and its gate metrics mean the same thing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from learnscore.schemas.events import LEVELS

KEY_METRICS = ("mae", "rmse", "r2", "accuracy", "macro_f1", "qwk", "brier", "ece")


def score_metrics(observed, predicted) -> dict[str, float]:
    """MAE, RMSE and R² of predicted progress scores.

    >>> score_metrics([10, 20, 30], [12, 20, 27])
    {'mae': 1.6667, 'rmse': 2.0817, 'r2': 0.935}
    """
    observed = np.asarray(observed, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    error = predicted - observed
    total = ((observed - observed.mean()) ** 2).sum()
    r2 = 1.0 - (error ** 2).sum() / total if total > 0 else 0.0
    return {"mae": _round(np.abs(error).mean()), "rmse": _round(np.sqrt((error ** 2).mean())),
            "r2": _round(r2)}


def level_metrics(observed, predicted, probabilities: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy, macro-F1 and quadratic weighted kappa of the ordered level; with class
    probabilities (columns in ``LEVELS`` order) also the multi-class Brier score and the
    expected calibration error of the top class.

    >>> level_metrics(["beginner", "advanced"], ["beginner", "proficient"])["accuracy"]
    0.5
    """
    from sklearn.metrics import cohen_kappa_score, f1_score

    observed = np.asarray(observed, dtype=object)
    predicted = np.asarray(predicted, dtype=object)
    out = {
        "accuracy": _round((observed == predicted).mean()),
        "macro_f1": _round(f1_score(observed, predicted, labels=list(LEVELS), average="macro",
                                    zero_division=0)),
        "qwk": _round(_kappa(cohen_kappa_score, observed, predicted)),
    }
    if probabilities is not None:
        out["brier"] = _round(brier_score(observed, probabilities))
        out["ece"] = _round(expected_calibration_error(observed, probabilities))
    return out


def brier_score(observed, probabilities: np.ndarray) -> float:
    """Mean over rows of Σ_k (p_k − 1[level = k])² (0 is perfect, 2 is worst).

    >>> brier_score(["beginner"], np.array([[0.5, 0.5, 0.0, 0.0]]))
    0.5
    """
    truth = one_hot_levels(observed)
    return float(((np.asarray(probabilities) - truth) ** 2).sum(axis=1).mean())


def expected_calibration_error(observed, probabilities: np.ndarray, bins: int = 10) -> float:
    """Top-class ECE: |accuracy − confidence| averaged over confidence bins, weighted by size.

    >>> expected_calibration_error(["beginner", "developing"], np.array([[1., 0, 0, 0], [1., 0, 0, 0]]))
    0.5
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    hit = probabilities.argmax(axis=1) == level_codes(observed)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        members = which == b
        total += members.sum() * abs(hit[members].mean() - confidence[members].mean())
    return float(total / len(confidence)) if len(confidence) else 0.0


def baseline_metrics(train_score, train_level, holdout_score, holdout_level) -> dict[str, float]:
    """A naive model: the training mean score and the majority level for everyone."""
    train_level = pd.Series(np.asarray(train_level, dtype=object))
    majority = train_level.value_counts().sort_index().idxmax()
    prior = train_level.value_counts(normalize=True).reindex(list(LEVELS)).fillna(0.0).to_numpy()
    n = len(holdout_score)
    return {**score_metrics(holdout_score, np.full(n, float(np.mean(train_score)))),
            **level_metrics(holdout_level, np.full(n, majority, dtype=object), np.tile(prior, (n, 1)))}


def oracle_metrics(train_ability, train_score, train_level, holdout_ability, holdout_score,
                   holdout_level) -> dict[str, float]:
    """What a model that knows each learner's true ability reaches (the ceiling).

    Score: isotonic regression of the observed score on true ability; level: multinomial
    logistic regression on true ability. Both fit on the training rows, scored on the holdout.
    """
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    x_train = np.asarray(train_ability, dtype=np.float64)
    x_holdout = np.asarray(holdout_ability, dtype=np.float64)
    score = IsotonicRegression(out_of_bounds="clip").fit(x_train, train_score).predict(x_holdout)
    classifier = LogisticRegression(max_iter=1000).fit(x_train.reshape(-1, 1), np.asarray(train_level))
    raw = classifier.predict_proba(x_holdout.reshape(-1, 1))
    probabilities = np.zeros((len(x_holdout), len(LEVELS)))
    for position, level in enumerate(LEVELS):
        if level in classifier.classes_:
            probabilities[:, position] = raw[:, list(classifier.classes_).index(level)]
    predicted = np.asarray(LEVELS, dtype=object)[probabilities.argmax(axis=1)]
    return {**score_metrics(holdout_score, score), **level_metrics(holdout_level, predicted, probabilities)}


def level_codes(levels) -> np.ndarray:
    """Positions in ``LEVELS`` (−1 for anything else).

    >>> level_codes(["advanced", "beginner", "x"]).tolist()
    [3, 0, -1]
    """
    lookup = {level: position for position, level in enumerate(LEVELS)}
    return np.array([lookup.get(level, -1) for level in levels], dtype=np.int64)


def one_hot_levels(levels) -> np.ndarray:
    codes = level_codes(levels)
    out = np.zeros((len(codes), len(LEVELS)))
    out[np.arange(len(codes))[codes >= 0], codes[codes >= 0]] = 1.0
    return out


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    """``{"mae": 1}`` → ``{"<prefix>_mae": 1}``."""
    return {f"{prefix}_{name}": value for name, value in metrics.items()}


def _kappa(cohen_kappa_score, observed, predicted) -> float:
    if len(set(observed) | set(predicted)) < 2:
        return 0.0  # kappa is undefined when everyone gets one label
    return cohen_kappa_score(observed, predicted, labels=list(LEVELS), weights="quadratic")


def _round(value) -> float:
    return round(float(value), 4)
