"""Figures logged with a training run: feature importance and the level confusion matrix.

matplotlib is optional: without it the run still logs the numbers (as JSON) and says so.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from learnscore.schemas.events import LEVELS

log = logging.getLogger(__name__)


def matplotlib_available() -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never a window
        return True
    except ImportError:
        return False


def permutation_importance_table(model, features: pd.DataFrame, score, level, *, rows: int = 1000,
                                 repeats: int = 2, seed: int = 0) -> pd.DataFrame:
    """Drop in holdout quality when each feature is shuffled (score: MAE rise; level: accuracy
    drop), on at most ``rows`` rows. HistGradientBoosting has no impurity importances."""
    from sklearn.inspection import permutation_importance

    from learnscore.model.diagnostic import single_thread

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(features), size=min(rows, len(features)), replace=False))
    sample = features.iloc[pick]
    with single_thread():
        score_result = permutation_importance(
            model.score_pipeline_, sample, np.asarray(score)[pick], scoring="neg_mean_absolute_error",
            n_repeats=repeats, random_state=seed)
        level_result = permutation_importance(
            model.level_pipeline_, sample, np.asarray(level, dtype=object)[pick], scoring="accuracy",
            n_repeats=repeats, random_state=seed)
    table = pd.DataFrame({"feature": list(features.columns),
                          "score_mae_increase": score_result.importances_mean,
                          "level_accuracy_drop": level_result.importances_mean})
    return table.sort_values("score_mae_increase", ascending=False).reset_index(drop=True)


def feature_importance_figure(table: pd.DataFrame, top: int = 20):
    import matplotlib.pyplot as plt

    shown = table.head(top).iloc[::-1]
    figure, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(shown) + 1.5), sharey=True)
    axes[0].barh(shown["feature"], shown["score_mae_increase"], color="#3b6ea5")
    axes[0].set_xlabel("MAE increase when shuffled (score points)")
    axes[1].barh(shown["feature"], shown["level_accuracy_drop"], color="#c0793a")
    axes[1].set_xlabel("accuracy drop when shuffled (level)")
    figure.suptitle("Permutation feature importance on the holdout")
    figure.tight_layout()
    return figure


def confusion_matrix_figure(observed, predicted):
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = plt.subplots(figsize=(6, 5))
    ConfusionMatrixDisplay.from_predictions(np.asarray(observed, dtype=object),
                                            np.asarray(predicted, dtype=object),
                                            labels=list(LEVELS), ax=axes, colorbar=False)
    axes.set_title("Comprehension level on the holdout")
    figure.tight_layout()
    return figure
