"""Exact, vectorised evaluation of a fitted HistGradientBoosting model for small batches.

scikit-learn predicts tree by tree, one call per tree: our score and level models have a few
hundred trees, so one submission costs a few hundred calls plus input validation per model —
milliseconds that dominate a REST request. Here every node of every tree sits in flat arrays
and all trees step down together with numpy, one step per tree level.

The answer is bit-identical to scikit-learn's: the same float64 comparisons on the same
features (``x <= threshold``; NaN follows ``missing_go_to_left``), and the leaf values summed
in scikit-learn's order — baseline, then iteration by iteration — which ``cumsum`` does
sequentially. ``tests/batch/test_compiled_trees.py`` holds the two to equality.

Large batches stay with scikit-learn, whose per-row cost is lower (see :data:`SMALL_BATCH`).
This reads fitted attributes of scikit-learn's estimators (``_predictors``,
``_baseline_prediction``, ``_loss``), which is why scikit-learn is pinned; a model they do not
describe (categorical splits, other estimators) is simply not compiled.
"""

from __future__ import annotations

import logging
import weakref

import numpy as np

log = logging.getLogger(__name__)

#: Up to this many rows the compiled trees are faster than scikit-learn's per-tree loop
#: (measured on the 100 + 50×4 trees of conf/base.yaml: 12× faster for 1 row, equal near 200).
SMALL_BATCH = 64


class CompiledTrees:
    """All trees of one fitted HistGradientBoosting estimator in flat node arrays."""

    def __init__(self, estimator):
        categorical = getattr(estimator, "is_categorical_", None)
        if categorical is not None and np.any(categorical):
            raise ValueError("categorical features are not compiled")
        predictors = estimator._predictors  # [iteration][tree per class]
        self.n_iterations = len(predictors)
        self.trees_per_iteration = len(predictors[0]) if predictors else 1
        self.n_features = estimator.n_features_in_
        self.baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(1, -1)
        nodes = [tree.nodes for iteration in predictors for tree in iteration]
        sizes = np.array([len(tree) for tree in nodes], dtype=np.intp)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        every = np.concatenate(nodes) if nodes else np.zeros(0, dtype=np.float64)
        if len(every) and every["is_categorical"].any():
            raise ValueError("categorical splits are not compiled")
        leaf = every["is_leaf"].astype(bool)
        own = np.arange(len(every), dtype=np.intp)
        shift = np.repeat(starts, sizes)
        # A leaf points at itself, so stepping past it changes nothing.
        self.left = np.where(leaf, own, every["left"].astype(np.intp) + shift)
        self.right = np.where(leaf, own, every["right"].astype(np.intp) + shift)
        self.feature = np.where(leaf, 0, every["feature_idx"]).astype(np.intp)
        self.threshold = every["num_threshold"].astype(np.float64)
        self.missing_left = every["missing_go_to_left"].astype(bool)
        self.value = every["value"].astype(np.float64)
        self.roots = starts
        self.depth = int(every["depth"].max()) if len(every) else 0

    def raw_predict(self, X: np.ndarray) -> np.ndarray:
        """Raw predictions ``(n_rows, trees_per_iteration)``, as ``estimator._raw_predict(X)``."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} features per row, got shape {X.shape}")
        n = X.shape[0]
        node = np.repeat(self.roots[:, None], n, axis=1)  # (trees, rows)
        rows = np.arange(n)[None, :]
        for _ in range(self.depth):
            x = X[rows, self.feature[node]]
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(go_left, self.left[node], self.right[node])
        leaves = self.value[node].reshape(self.n_iterations, self.trees_per_iteration, n)
        start = (np.zeros((n, self.trees_per_iteration)) + self.baseline).T[None]
        return np.cumsum(np.concatenate([start, leaves]), axis=0)[-1].T


_COMPILED: weakref.WeakKeyDictionary[object, CompiledTrees | None] = weakref.WeakKeyDictionary()


def compiled_trees(estimator) -> CompiledTrees | None:
    """The compiled trees of ``estimator``, built once and kept while the estimator lives.

    ``None`` when the estimator cannot be compiled; callers then use scikit-learn. Kept outside
    the estimator on purpose: the model file (skops) must not learn a new type.
    """
    try:
        return _COMPILED[estimator]
    except KeyError:
        pass
    try:
        compiled = CompiledTrees(estimator)
    except (AttributeError, ValueError, TypeError) as exc:
        log.info("%s is evaluated by scikit-learn only: %s", type(estimator).__name__, exc)
        compiled = None
    _COMPILED[estimator] = compiled
    return compiled
