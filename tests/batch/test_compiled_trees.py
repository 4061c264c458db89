"""The compiled trees answer exactly what scikit-learn answers; small batches take them."""

import numpy as np
import pandas as pd

from learnscore.model.compiled_trees import SMALL_BATCH, CompiledTrees, compiled_trees
from learnscore.model.features import flatten_events, model_input_from_events


def _held_out_features(fitted_model, small_history_events) -> pd.DataFrame:
    return fitted_model.features(model_input_from_events(small_history_events[0][2000:2600]))


def test_raw_predictions_equal_scikit_learn_bit_for_bit(fitted_model, small_history_events):
    features = _held_out_features(fitted_model, small_history_events)
    rng = np.random.default_rng(3)
    odd = features.to_numpy().copy()
    # Beyond what submissions give: missing values everywhere, infinities and extremes.
    odd[rng.random(odd.shape) < 0.15] = np.nan
    odd[rng.random(odd.shape) < 0.02] = np.inf
    odd[rng.random(odd.shape) < 0.02] = -1e300
    for estimator in (fitted_model.score_pipeline_[-1], fitted_model.level_pipeline_[-1]):
        compiled = CompiledTrees(estimator)
        for matrix in (features.to_numpy(), odd):
            expected = estimator._raw_predict(pd.DataFrame(matrix, columns=features.columns))
            assert np.array_equal(compiled.raw_predict(matrix), expected), type(estimator).__name__


def test_small_batches_predict_exactly_as_large_ones(fitted_model, small_history_events):
    """Batches up to SMALL_BATCH rows go through the compiled trees, larger ones through scikit-learn."""
    events = small_history_events[0][2000:2300]
    everything = fitted_model.predict(model_input_from_events(events))  # scikit-learn
    for start, size in ((0, 1), (7, 5), (100, SMALL_BATCH)):
        part = fitted_model.predict(model_input_from_events(events[start:start + size]))
        expected = everything.iloc[start:start + size].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, expected, check_exact=True)
        columns = fitted_model.predict_flat(flatten_events(events[start:start + size]))
        pd.testing.assert_frame_equal(pd.DataFrame(columns), expected, check_exact=True)


def test_models_it_cannot_describe_stay_with_scikit_learn():
    from sklearn.ensemble import HistGradientBoostingRegressor

    X = np.column_stack([np.arange(200) % 4, np.linspace(0, 1, 200)])
    categorical = HistGradientBoostingRegressor(max_iter=3, categorical_features=[0]).fit(X, X[:, 0] + X[:, 1])
    assert compiled_trees(categorical) is None
    plain = HistGradientBoostingRegressor(max_iter=3).fit(X, X[:, 1])
    assert compiled_trees(plain) is compiled_trees(plain)  # built once per estimator
