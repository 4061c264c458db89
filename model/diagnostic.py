"""The diagnostic model: one estimator predicting the progress score and the comprehension level.

:class:`DiagnosticModel` holds the IRT item bank it estimated from its training data and two
scikit-learn pipelines over the shared features (:mod:`learnscore.model.features`): a
HistGradientBoostingRegressor for the score and a HistGradientBoostingClassifier for the
ordered level. It takes *model input* (one row per submission, see ``schemas/scoring.py``)
and is saved with skops (:mod:`learnscore.model.loader`), never with pickle.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import pandas as pd

from learnscore.model.compiled_trees import SMALL_BATCH, compiled_trees
from learnscore.model.features import (
    FlatResponses,
    as_model_input,
    compute_features,
    feature_matrix,
    features_from_flat,
    flatten_model_input,
)
from learnscore.model.item_bank import ItemBank, fit_item_bank
from learnscore.schemas.events import LEVELS
from learnscore.schemas.scoring import SCORE_RANGE

log = logging.getLogger(__name__)



class DiagnosticModel:
    """Predicts ``progress_score`` (0–100) and ``comprehension_level`` from a submission.

    Parameters are stored under their ``__init__`` names (scikit-learn style); fitted state
    ends in ``_``. ``score_params`` / ``level_params`` are HistGradientBoosting keyword
    arguments (``conf/`` ``model.score`` / ``model.level``).
    """

    #: The model validates its input itself (:func:`learnscore.model.features.flatten_model_input`), so
    #: callers such as the endpoint may skip MLflow's per-call schema enforcement.
    checks_own_input = True

    def __init__(self, score_params: dict[str, Any] | None = None,
                 level_params: dict[str, Any] | None = None, random_state: int = 0,
                 irt_iterations: int = 15, irt_min_responses: int = 20, fit_threads: int = 1):
        self.score_params = dict(score_params or {})
        self.level_params = dict(level_params or {})
        self.random_state = random_state
        self.irt_iterations = irt_iterations
        self.irt_min_responses = irt_min_responses
        self.fit_threads = fit_threads

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, model_input: pd.DataFrame, progress_score, comprehension_level) -> DiagnosticModel:
        """Estimate the item bank, then fit both pipelines on the features."""
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.pipeline import Pipeline

        score = np.asarray(progress_score, dtype=np.float64)
        level = np.asarray(comprehension_level, dtype=object)
        unknown = sorted(set(level) - set(LEVELS))
        if unknown:
            raise ValueError(f"comprehension levels {unknown} are not among {list(LEVELS)}")
        if len(score) != len(model_input) or len(level) != len(model_input):
            raise ValueError(f"{len(model_input)} model input rows but {len(score)} scores and "
                             f"{len(level)} levels")
        flat = flatten_model_input(model_input)
        log.info("estimating the item bank (2PL) from %d responses of %d submissions",
                 len(flat.row), flat.n_rows)
        self.item_bank_ = fit_item_bank(
            flat.item_id, flat.skill, flat.response_subject, flat.correct, flat.log_time,
            flat.row, flat.n_rows, iterations=self.irt_iterations,
            min_responses=self.irt_min_responses)
        features = features_from_flat(flat, self.item_bank_, index=model_input.index)
        self.feature_names_ = list(features.columns)
        with _openmp_controller().limit(limits=self.fit_threads, user_api="openmp"):
            log.info("fitting the score model on %d rows × %d features", *features.shape)
            self.score_pipeline_ = Pipeline([("regressor", HistGradientBoostingRegressor(
                random_state=self.random_state, **self.score_params))]).fit(features, score)
            log.info("fitting the level model")
            self.level_pipeline_ = Pipeline([("classifier", HistGradientBoostingClassifier(
                random_state=self.random_state, **self.level_params))]).fit(features, level)
        return self

    # -- predicting -------------------------------------------------------------------------
    def features(self, model_input: pd.DataFrame) -> pd.DataFrame:
        """The shared features of ``model_input`` for this model's item bank."""
        self._check_fitted()
        return compute_features(model_input, self.item_bank_)

    def predict(self, model_input, params: dict | None = None) -> pd.DataFrame:
        """One row per submission: :data:`learnscore.schemas.scoring.PREDICTION_COLUMNS`, in the input's row order.

        ``model_input`` is a DataFrame (or a list of row dicts / a dict of columns); ``params``
        (the pyfunc protocol's inference parameters) are not used. The score is clipped to 0–100;
        the probabilities are in :data:`learnscore.schemas.events.LEVELS`
        order and sum to 1; the level is the most probable one.
        """
        self._check_fitted()
        model_input = as_model_input(model_input)
        return pd.DataFrame(self.predict_flat(flatten_model_input(model_input)), index=model_input.index)

    def predict_features(self, features: pd.DataFrame) -> pd.DataFrame:
        """:meth:`predict` from already computed features (training evaluation uses it)."""
        self._check_fitted()
        if list(features.columns) != self.feature_names_:
            raise ValueError(f"features must have the columns the model was fitted on, in order: "
                             f"{self.feature_names_}")
        return pd.DataFrame(self._predict_matrix(features.to_numpy(dtype=np.float64)), index=features.index)

    def predict_flat(self, flat: FlatResponses) -> dict[str, np.ndarray]:
        """:meth:`predict` on flattened responses, as columns: the endpoint's path, no DataFrame.

        ``flat`` comes from :func:`learnscore.model.features.flatten_events` (events the contract
        accepted) or :func:`learnscore.model.features.flatten_model_input`.
        """
        self._check_fitted()
        return self._predict_matrix(feature_matrix(flat, self.item_bank_))

    def _predict_matrix(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """The prediction columns for a feature matrix whose columns are ``feature_names_``."""
        score = np.clip(self._score_raw(features), *SCORE_RANGE).astype(np.float64)
        probabilities = self.level_probabilities(features)
        columns = {"progress_score": score,
                   "comprehension_level": np.asarray(LEVELS, dtype=object)[probabilities.argmax(axis=1)]}
        for position, level in enumerate(LEVELS):
            columns[f"p_{level}"] = probabilities[:, position]
        return columns

    def _score_raw(self, features: np.ndarray) -> np.ndarray:
        regressor = self.score_pipeline_[-1]
        small = len(features) <= SMALL_BATCH and len(self.score_pipeline_) == 1
        compiled = compiled_trees(regressor) if small else None
        if compiled is not None:
            return regressor._loss.link.inverse(compiled.raw_predict(features).ravel())
        # One OpenMP thread: the stream runs a Python worker per core, and tree threads spinning
        # against each other (or other processes) made scoring 5x slower under load (measured).
        with single_thread():
            return self.score_pipeline_.predict(self._frame(features))

    def level_probabilities(self, features) -> np.ndarray:
        """Class probabilities with one column per level of ``LEVELS`` (0 for unseen levels)."""
        classifier = self.level_pipeline_[-1]
        small = len(features) <= SMALL_BATCH and len(self.level_pipeline_) == 1
        compiled = compiled_trees(classifier) if small else None
        if compiled is not None:
            raw = classifier._loss.predict_proba(compiled.raw_predict(np.asarray(features, dtype=np.float64)))
        else:
            with single_thread():
                raw = self.level_pipeline_.predict_proba(self._frame(features))
        classes = list(self.level_pipeline_.classes_)
        probabilities = np.zeros((len(features), len(LEVELS)))
        for position, level in enumerate(LEVELS):
            if level in classes:
                probabilities[:, position] = raw[:, classes.index(level)]
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def _frame(self, features) -> pd.DataFrame:
        # scikit-learn was fitted with feature names and checks them on every call.
        return features if isinstance(features, pd.DataFrame) else pd.DataFrame(features, columns=self.feature_names_)

    @property
    def item_bank(self) -> ItemBank:
        self._check_fitted()
        return self.item_bank_

    def _check_fitted(self) -> None:
        if not hasattr(self, "level_pipeline_"):
            raise RuntimeError("DiagnosticModel is not fitted yet: call fit() first")

    def __repr__(self) -> str:
        state = f"{len(self.feature_names_)} features, {self.item_bank_!r}" \
            if hasattr(self, "feature_names_") else "unfitted"
        return f"DiagnosticModel({state})"


def single_thread():
    """A context in which scikit-learn's OpenMP code runs on one thread (cheap to enter)."""
    return _openmp_controller().limit(limits=1, user_api="openmp")


@functools.cache
def _openmp_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # inspecting the loaded libraries costs ms: once per process


def model_from_config(model_config) -> DiagnosticModel:
    """A :class:`DiagnosticModel` with the hyperparameters of ``conf/`` ``model:``."""
    return DiagnosticModel(
        score_params=model_config.score.model_dump(),
        level_params=model_config.level.model_dump(),
        random_state=model_config.random_state,
        irt_iterations=model_config.irt_iterations,
        irt_min_responses=model_config.irt_min_responses,
        fit_threads=model_config.fit_threads,
    )

