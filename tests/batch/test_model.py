"""DiagnosticModel behaviour: the prediction contract, determinism, and sense."""

import numpy as np
import pandas as pd
import pytest

from learnscore.model.diagnostic import DiagnosticModel
from learnscore.model.features import ModelInputError, model_input_from_events
from learnscore.schemas.events import LEVELS
from learnscore.schemas.scoring import PREDICTION_COLUMNS


@pytest.fixture(scope="module")
def holdout(small_history_events):
    submissions, outcomes = small_history_events
    return model_input_from_events(submissions[2000:]), pd.DataFrame(outcomes[2000:])


def test_predictions_follow_the_contract(fitted_model, holdout):
    model_input, _ = holdout
    predictions = fitted_model.predict(model_input)
    assert tuple(predictions.columns) == PREDICTION_COLUMNS
    assert predictions.index.equals(model_input.index)
    assert predictions["progress_score"].between(0, 100).all()
    assert predictions["comprehension_level"].isin(LEVELS).all()
    probabilities = predictions[[f"p_{level}" for level in LEVELS]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert (predictions["comprehension_level"].to_numpy()
            == np.asarray(LEVELS)[probabilities.argmax(axis=1)]).all()


def test_scores_rise_with_ability_and_beat_the_mean(fitted_model, holdout):
    model_input, outcomes = holdout
    predictions = fitted_model.predict(model_input)
    error = np.abs(predictions["progress_score"] - outcomes["observed_progress_score"]).mean()
    naive = np.abs(outcomes["observed_progress_score"].mean() - outcomes["observed_progress_score"]).mean()
    assert error < 0.6 * naive
    ability = fitted_model.features(model_input)["ability"]
    assert np.corrcoef(ability, predictions["progress_score"])[0, 1] > 0.85


def test_more_right_answers_never_lower_the_score_much(fitted_model, holdout):
    model_input = holdout[0].head(300)
    better = model_input.assign(correct=[[True] * len(c) for c in model_input["correct"]])
    before = fitted_model.predict(model_input)["progress_score"]
    after = fitted_model.predict(better)["progress_score"]
    assert (after >= before - 1.0).mean() > 0.97
    assert (after - before).mean() > 0


def test_fitting_is_deterministic(small_history_events, fitted_model, holdout):
    submissions, outcomes = small_history_events
    again = DiagnosticModel(score_params={"max_iter": 40, "max_leaf_nodes": 15},
                            level_params={"max_iter": 20, "max_leaf_nodes": 15}, random_state=0).fit(
        model_input_from_events(submissions[:2000]), [o["observed_progress_score"] for o in outcomes[:2000]],
        [o["observed_comprehension_level"] for o in outcomes[:2000]])
    pd.testing.assert_frame_equal(again.predict(holdout[0]), fitted_model.predict(holdout[0]))


def test_records_in_give_the_same_predictions(fitted_model, holdout):
    model_input = holdout[0].head(5)
    pd.testing.assert_frame_equal(fitted_model.predict(model_input.to_dict("records")),
                                  fitted_model.predict(model_input))


def test_bad_labels_and_inputs_are_refused(small_history_events, fitted_model):
    model_input = model_input_from_events(small_history_events[0][:200])
    with pytest.raises(ValueError, match=r"\['excellent'\] are not among"):
        DiagnosticModel().fit(model_input, [50.0] * 200, ["excellent"] * 200)
    with pytest.raises(ModelInputError, match="lacks column"):
        fitted_model.predict(model_input.drop(columns=["skill"]))
    with pytest.raises(RuntimeError, match="not fitted"):
        DiagnosticModel().predict(model_input)
