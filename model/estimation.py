"""Performance estimated before the outcomes arrive: CBPE for the level, DLE for the score.

Outcomes come weeks after a prediction; these estimators say how well a model does on the rows
it scored *now*, from its own outputs and a labelled reference window of the same model.

**Confidence-based performance estimation (CBPE)**, for the comprehension level. If the class
probabilities ``p_ik`` of row ``i`` are calibrated, the true level of that row is a draw from
them, and the expected confusion matrix of a window of ``n`` rows whose predicted levels are
``ŷ_i`` is ``E[C_tc] = Σ_i 1[ŷ_i = c] p_it`` (rows true, columns predicted). Hence

* ``E[TP_k] = Σ_i 1[ŷ_i = k] p_ik``, ``E[FP_k] = n_pred_k − E[TP_k]``, ``E[FN_k] = Σ_i p_ik − E[TP_k]``;
* estimated accuracy ``= (1/n) Σ_i p_{i,ŷ_i}`` (exact in expectation);
* estimated F1 of level k ``= 2E[TP_k] / (2E[TP_k] + E[FP_k] + E[FN_k])``, 0 when the
  denominator is 0; macro-F1 is their mean over the four levels (a plug-in ratio of
  expectations: its bias is O(1/n), negligible for windows of hundreds of rows).

The probabilities are calibrated first, per level (one-vs-rest isotonic regression fitted on the
reference rows, then each row renormalised to sum to 1), because a model's raw confidence is
only approximately calibrated. The predicted level stays the model's own, not the argmax of the
recalibrated probabilities.

**Direct loss estimation (DLE)**, for the progress score. A "nanny" model
(``HistGradientBoostingRegressor``, squared-error loss) learns the absolute error
``|observed − predicted|`` on the reference rows from what is known at scoring time: the
predicted score, the four class probabilities, the subject and the grade. The estimated MAE of a
window is the mean of its predicted errors (clipped at 0). The squared-error loss matters: it
estimates the conditional *mean* of the error, the quantity an MAE averages; an absolute-error
loss would estimate the median of a right-skewed error and bias the MAE low.

Both assume what makes them useful and limits them: the relation between inputs and outcomes
is the reference's (no concept drift: then only realized metrics tell), and the window does not
move far outside the reference's range. They do notice covariate shift — a weaker cohort moves
the estimate before any outcome arrives. The reference must be held-out rows (the model's live
predictions paired with their outcomes, never its training rows: those errors are in-sample).

**Why not a library.** Checked against our pins (2026-12): NannyML 0.13.1 has CBPE and DLE
and installs beside them, but it brings ~30 packages the project does not otherwise need
(LightGBM, FLAML[automl], plotly, matplotlib, seaborn, s3fs, gcsfs, kaleido, APScheduler) and
``segment-analytics-python``, which reports usage to NannyML unless ``NML_DISABLE_USAGE_LOGGING``
is set — for learners' data we would rather not ship that. Evidently 0.7.23 fits our pins but
has no label-free performance estimation. The two methods are a few dozen lines over numpy and
scikit-learn, checked against NannyML's definitions below and by ``learnscore bench estimate``.

References
----------
* NannyML, "How it works: performance estimation" (CBPE, DLE and their calibration), and its
  source ``nannyml/performance_estimation/confidence_based/metrics.py``,
  ``nannyml/calibration.py``, ``nannyml/performance_estimation/direct_loss_estimation/`` —
  https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html
* J. Kivimäki, J. Białek, J. K. Nurminen, W. Kuberski, "Confidence-based Estimators for
  Predictive Performance in Model Monitoring", arXiv:2407.08649 (average confidence is an
  unbiased accuracy estimator under calibration).
* J. Kivimäki, J. Białek, W. Kuberski, J. K. Nurminen, "Performance Estimation in Binary
  Classification Using Calibrated Confidence", arXiv:2505.05295.
* "We don't need no labels: Estimating post-deployment model performance under covariate shift
  without ground truth", arXiv:2401.08348.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from learnscore.model.diagnostic import single_thread
from learnscore.model.metrics import level_codes, level_metrics, score_metrics
from learnscore.schemas.events import LEVELS, SUBJECTS

PROBABILITY_COLUMNS = tuple(f"p_{level}" for level in LEVELS)
#: Columns a frame of predictions needs for an estimate (``gold.predictions`` has them).
PREDICTION_COLUMNS = ("subject", "grade_level", "progress_score", "comprehension_level", *PROBABILITY_COLUMNS)
#: The outcome columns a reference frame adds (``gold.prediction_outcomes`` has them).
OUTCOME_COLUMNS = ("observed_progress_score", "observed_comprehension_level")


# -- CBPE ---------------------------------------------------------------------------------------


def expected_confusion_matrix(probabilities, predicted) -> np.ndarray:
    """``E[C]`` with rows the true level and columns the predicted one (sums to the row count).

    ``probabilities``: (n, K) calibrated; ``predicted``: (n,) level codes 0..K−1.

    >>> expected_confusion_matrix(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])).round(2).tolist()
    [[0.9, 0.2], [0.1, 0.8]]
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted_one_hot = np.eye(probabilities.shape[1])[np.asarray(predicted, dtype=np.int64)]
    return probabilities.T @ predicted_one_hot


def estimated_level_metrics(probabilities, predicted) -> dict[str, float]:
    """Estimated accuracy and macro-F1 from calibrated probabilities and the predicted levels.

    >>> probabilities = np.array([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0], [0, 0, 0.7, 0.3], [0, 0, 0.4, 0.6]])
    >>> estimated_level_metrics(probabilities, np.array([0, 1, 2, 3]))
    {'accuracy': 0.75, 'macro_f1': 0.7494}
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n, k = probabilities.shape
    if n == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    confusion = expected_confusion_matrix(probabilities, predicted)
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp  # predicted k, true another level
    fn = confusion.sum(axis=1) - tp  # true k, predicted another level
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
    return {"accuracy": round(float(tp.sum() / n), 4), "macro_f1": round(float(f1.mean()), 4)}


class ConfidenceBasedEstimator:
    """CBPE for the comprehension level: calibrate on a labelled reference, estimate anywhere.

    ``min_class_rows``: a level seen fewer times than this in the reference (as truth or as
    the rest) keeps its raw probabilities, since isotonic regression on a handful of rows
    would only add noise.

    >>> rng = np.random.default_rng(0)
    >>> truth = rng.integers(0, 4, 4000)
    >>> raw = np.full((4000, 4), 0.1) + 0.6 * np.eye(4)[truth]   # says 0.7 for the level it picks...
    >>> flip = rng.random(4000) < 0.2                            # ...which is wrong for 20% of rows
    >>> truth[flip] = (truth[flip] + 1) % 4
    >>> predicted = raw.argmax(axis=1)
    >>> estimator = ConfidenceBasedEstimator().fit(raw[:2000], truth[:2000])
    >>> estimator.estimate(raw[2000:], predicted[2000:])
    {'accuracy': 0.7932, 'macro_f1': 0.7931}
    >>> float((predicted[2000:] == truth[2000:]).mean())   # what really happened
    0.7955
    >>> estimated_level_metrics(raw[2000:], predicted[2000:])["accuracy"]  # raw confidence: too modest
    0.7
    """

    def __init__(self, min_class_rows: int = 20):
        self.min_class_rows = min_class_rows

    def fit(self, probabilities, observed) -> ConfidenceBasedEstimator:
        """Fit one isotonic calibrator per level on reference probabilities and observed level
        codes (0..K−1; see :func:`learnscore.model.metrics.level_codes`)."""
        from sklearn.isotonic import IsotonicRegression

        probabilities = np.asarray(probabilities, dtype=np.float64)
        observed = np.asarray(observed, dtype=np.int64)
        if len(probabilities) != len(observed):
            raise ValueError(f"{len(probabilities)} rows of probabilities but {len(observed)} observed levels")
        self.calibrators_ = []
        for k in range(probabilities.shape[1]):
            hits = observed == k
            if min(hits.sum(), (~hits).sum()) < self.min_class_rows:
                self.calibrators_.append(None)
                continue
            self.calibrators_.append(IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
                                     .fit(probabilities[:, k], hits.astype(np.float64)))
        self.n_reference_ = len(observed)
        return self

    def calibrate(self, probabilities) -> np.ndarray:
        """Calibrated probabilities, each row renormalised to sum to 1 (uniform if all are 0)."""
        self._check_fitted()
        probabilities = np.asarray(probabilities, dtype=np.float64)
        calibrated = np.column_stack([
            probabilities[:, k] if calibrator is None else calibrator.predict(probabilities[:, k])
            for k, calibrator in enumerate(self.calibrators_)]) if len(probabilities) else probabilities
        total = calibrated.sum(axis=1, keepdims=True)
        return np.divide(calibrated, total, out=np.full_like(calibrated, 1.0 / calibrated.shape[1]),
                         where=total > 0)

    def estimate(self, probabilities, predicted) -> dict[str, float]:
        """Estimated accuracy and macro-F1 of rows with these raw probabilities and predicted levels."""
        return estimated_level_metrics(self.calibrate(probabilities), predicted)

    def _check_fitted(self) -> None:
        if not hasattr(self, "calibrators_"):
            raise RuntimeError("ConfidenceBasedEstimator is not fitted yet: call fit() on a labelled reference")


# -- DLE ----------------------------------------------------------------------------------------


def loss_features(predictions: pd.DataFrame, subjects: Sequence[str] = SUBJECTS) -> np.ndarray:
    """What the DLE nanny sees of a row: predicted score, class probabilities, grade and subject
    (one column per subject of ``subjects``: the reference's, as :class:`DirectLossEstimator` fits).

    >>> frame = pd.DataFrame({"subject": ["math"], "grade_level": [4], "progress_score": [61.5],
    ...                       "p_beginner": [0.1], "p_developing": [0.2], "p_proficient": [0.6],
    ...                       "p_advanced": [0.1]})
    >>> loss_features(frame).tolist()
    [[61.5, 0.1, 0.2, 0.6, 0.1, 4.0, 1.0, 0.0, 0.0]]
    """
    missing = [c for c in PREDICTION_COLUMNS if c != "comprehension_level" and c not in predictions.columns]
    if missing:
        raise KeyError(f"the estimators need the columns {missing}; the frame has {sorted(predictions.columns)}")
    subject = predictions["subject"].to_numpy(dtype=object)
    return np.column_stack([
        predictions["progress_score"].to_numpy(dtype=np.float64),
        predictions[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64),
        predictions["grade_level"].to_numpy(dtype=np.float64),
        *((subject == name).astype(np.float64) for name in subjects),
    ])


class DirectLossEstimator:
    """DLE for the progress score: a gradient-boosted nanny predicts each row's absolute error.

    Hyperparameters are ``HistGradientBoostingRegressor``'s; the loss is always squared error
    (see the module docstring). Small leaves and few iterations: the nanny learns a smooth
    error surface from a few thousand reference rows, not the reference's noise.

    >>> rng = np.random.default_rng(1)
    >>> def frame(n, shift=0.0):
    ...     score = np.clip(rng.normal(55 + shift, 15, n), 0, 100)
    ...     p = np.tile([0.25, 0.25, 0.25, 0.25], (n, 1))
    ...     return pd.DataFrame({"subject": "math", "grade_level": 5, "progress_score": score,
    ...                          **{c: p[:, i] for i, c in enumerate(PROBABILITY_COLUMNS)}})
    >>> def observe(f):      # the error grows with the score
    ...     return f["progress_score"] + rng.normal(0, 2 + f["progress_score"] / 10)
    >>> reference = frame(3000)
    >>> estimator = DirectLossEstimator().fit(reference, observe(reference))
    >>> higher = frame(3000, shift=10)                       # a window of higher scores
    >>> round(estimator.estimate(higher), 2), round(float((observe(higher) - higher["progress_score"]).abs().mean()), 2)
    (6.67, 6.71)
    """

    def __init__(self, max_iter: int = 100, learning_rate: float = 0.05, max_leaf_nodes: int = 15,
                 min_samples_leaf: int = 100, random_state: int = 0):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    def fit(self, predictions: pd.DataFrame, observed_score) -> DirectLossEstimator:
        """Learn ``|observed − predicted|`` of the reference rows."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        observed = np.asarray(observed_score, dtype=np.float64)
        if len(observed) != len(predictions):
            raise ValueError(f"{len(predictions)} reference predictions but {len(observed)} observed scores")
        error = np.abs(observed - predictions["progress_score"].to_numpy(dtype=np.float64))
        self.subjects_ = sorted({str(s) for s in predictions["subject"].dropna()})  # the domain's, as seen
        nanny = HistGradientBoostingRegressor(
            loss="squared_error", max_iter=self.max_iter, learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes, min_samples_leaf=min(self.min_samples_leaf, max(1, len(error) // 10)),
            early_stopping=False, random_state=self.random_state)
        # One OpenMP thread, as the diagnostic model does: threads spinning against other
        # processes made a small fit many times slower on a busy machine.
        with single_thread():
            self.nanny_ = nanny.fit(loss_features(predictions, self.subjects_), error)
        self.reference_mae_ = float(error.mean())
        return self

    def predict_errors(self, predictions: pd.DataFrame) -> np.ndarray:
        """Each row's expected absolute error (≥ 0)."""
        if not hasattr(self, "nanny_"):
            raise RuntimeError("DirectLossEstimator is not fitted yet: call fit() on a labelled reference")
        if len(predictions) == 0:
            return np.zeros(0)
        with single_thread():
            return np.maximum(self.nanny_.predict(loss_features(predictions, self.subjects_)), 0.0)

    def estimate(self, predictions: pd.DataFrame) -> float:
        """The estimated MAE of these rows."""
        errors = self.predict_errors(predictions)
        return round(float(errors.mean()), 4) if len(errors) else float("nan")


# -- both, from a reference frame ------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Estimated metrics of ``n_rows`` predictions."""

    n_rows: int
    accuracy: float
    macro_f1: float
    mae: float

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "mae": self.mae}


class PerformanceEstimator:
    """CBPE and DLE fitted together on one labelled reference of one model version.

    ``reference`` has the prediction columns of ``gold.predictions`` (:data:`PREDICTION_COLUMNS`)
    and the outcome columns of ``gold.prediction_outcomes`` (:data:`OUTCOME_COLUMNS`).
    """

    def __init__(self, level: ConfidenceBasedEstimator | None = None, score: DirectLossEstimator | None = None):
        self.level = level or ConfidenceBasedEstimator()
        self.score = score or DirectLossEstimator()

    def fit(self, reference: pd.DataFrame) -> PerformanceEstimator:
        known = level_codes(reference["observed_comprehension_level"]) >= 0
        reference = reference[known]
        self.level.fit(reference[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64),
                       level_codes(reference["observed_comprehension_level"]))
        self.score.fit(reference, reference["observed_progress_score"])
        self.n_reference_ = len(reference)
        return self

    def estimate(self, predictions: pd.DataFrame) -> Estimate:
        if len(predictions) == 0:
            return Estimate(0, float("nan"), float("nan"), float("nan"))
        level = self.level.estimate(predictions[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64),
                                    np.maximum(level_codes(predictions["comprehension_level"]), 0))
        return Estimate(len(predictions), level["accuracy"], level["macro_f1"], self.score.estimate(predictions))


def realized_metrics(pairs: pd.DataFrame) -> dict[str, float]:
    """Accuracy, macro-F1 and MAE of predictions against their observed outcomes (the same
    definitions the training report and the gates use, :mod:`learnscore.model.metrics`)."""
    if len(pairs) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "mae": float("nan")}
    level = level_metrics(pairs["observed_comprehension_level"], pairs["comprehension_level"])
    score = score_metrics(pairs["observed_progress_score"], pairs["progress_score"])
    return {"accuracy": level["accuracy"], "macro_f1": level["macro_f1"], "mae": score["mae"]}
