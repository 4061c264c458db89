"""The shared features: vectorised code against a plain per-row reference, and the input contract."""

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from learnscore.model.features import (
    FEATURE_NAMES,
    MODEL_INPUT_COLUMNS,
    SKILL_FEATURE_PREFIX,
    ModelInputError,
    as_model_input,
    compute_features,
    feature_names,
    model_input_from_events,
)


def _reference_features(event: dict, bank) -> dict[str, float]:
    """One submission's features, the slow obvious way (no numpy tricks)."""
    responses = event["responses"]
    items = dict(zip(bank.item_ids, zip(bank.discrimination, bank.difficulty, bank.log_time)))
    skills = dict(zip(bank.skills, zip(bank.skill_discrimination, bank.skill_difficulty, bank.skill_log_time)))
    subjects = dict(zip(bank.subjects, zip(bank.subject_discrimination, bank.subject_difficulty,
                                           bank.subject_log_time)))
    fallback = (bank.global_discrimination, bank.global_difficulty, bank.global_log_time)
    params = [items.get(r["item_id"]) or skills.get(r["skill"]) or subjects.get(event["subject"]) or fallback
              for r in responses]
    n = len(responses)
    log_times = [math.log1p(r["response_time_ms"]) for r in responses]
    theta, info = 0.0, 1.0
    for _ in range(6):
        ps = [1 / (1 + math.exp(-a * (theta - b))) for a, b, _ in params]
        gradient = sum(a * (r["correct"] - p) for (a, _, _), r, p in zip(params, responses, ps)) - theta
        info = sum(a * a * p * (1 - p) for (a, _, _), p in zip(params, ps)) + 1
        theta = min(4.0, max(-4.0, theta + min(1.0, max(-1.0, gradient / info))))
    mean_log = sum(log_times) / n
    out = {
        "n_responses": n,
        "accuracy": sum(r["correct"] for r in responses) / n,
        "first_try_accuracy": sum(r["correct"] and r["attempts"] == 1 and not r["hint_used"]
                                  for r in responses) / n,
        "mean_attempts": sum(r["attempts"] for r in responses) / n,
        "multi_attempt_share": sum(r["attempts"] > 1 for r in responses) / n,
        "hint_share": sum(r["hint_used"] for r in responses) / n,
        "mean_log_time": mean_log,
        "median_log_time": statistics.median(log_times),
        "std_log_time": math.sqrt(max(0.0, sum(t * t for t in log_times) / n - mean_log ** 2)),
        "log_time_residual": sum(t - p[2] for t, p in zip(log_times, params)) / n,
        "ability": theta,
        "ability_se": 1 / math.sqrt(info),
        "mean_item_difficulty": sum(p[1] for p in params) / n,
        "unknown_item_share": sum(r["item_id"] not in items for r in responses) / n,
        "grade_level": event["grade_level"],
        **{f"subject_{s}": float(event["subject"] == s) for s in bank.subjects},
    }
    for skill in bank.skills:
        answered = [r["correct"] for r in responses if r["skill"] == skill]
        out[SKILL_FEATURE_PREFIX + skill] = sum(answered) / len(answered) if answered else math.nan
    return out


def _with_unknowns(event: dict) -> dict:
    """The event with an unknown item, an unknown item of an unknown skill, and more."""
    responses = [dict(r) for r in event["responses"]]
    responses[0]["item_id"] = "never.seen.item"
    responses[1].update(item_id="never.seen.either", skill="astrology")
    return {**event, "responses": responses}


def test_vectorised_features_equal_the_per_row_reference(small_history_events, fitted_model):
    submissions = small_history_events[0][2000:2150]
    events = submissions[:-2] + [_with_unknowns(e) for e in submissions[-2:]]
    bank = fitted_model.item_bank
    features = compute_features(model_input_from_events(events), bank)
    expected = pd.DataFrame([_reference_features(e, bank) for e in events])
    assert list(features.columns) == feature_names(bank) == list(expected.columns)
    np.testing.assert_allclose(features.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=1e-12)
    assert features["unknown_item_share"].iloc[-1] == pytest.approx(2 / len(events[-1]["responses"]))


def test_feature_names_start_with_the_fixed_ones_then_one_slot_per_subject_and_skill(fitted_model):
    names = feature_names(fitted_model.item_bank)
    assert tuple(names[:len(FEATURE_NAMES)]) == FEATURE_NAMES
    subjects, skills = names[len(FEATURE_NAMES):len(FEATURE_NAMES) + 3], names[len(FEATURE_NAMES) + 3:]
    assert subjects == ["subject_math", "subject_reading", "subject_science"]  # the bank's, sorted
    assert len(skills) == 15 and all(name.startswith(SKILL_FEATURE_PREFIX) for name in skills)


def test_ability_estimate_tracks_the_true_ability(small_history, small_history_events, fitted_model):
    truth = pd.read_parquet(small_history / "truth.parquet").set_index("event_id")
    events = small_history_events[0][2000:]
    ability = compute_features(model_input_from_events(events), fitted_model.item_bank)["ability"]
    true_ability = truth.loc[[e["event_id"] for e in events], "true_ability"].to_numpy()
    assert np.corrcoef(ability, true_ability)[0, 1] > 0.85


def test_row_order_and_index_are_kept(small_history_events, fitted_model):
    model_input = model_input_from_events(small_history_events[0][:40])
    shuffled = model_input.sample(frac=1.0, random_state=3)
    expected = compute_features(model_input, fitted_model.item_bank).loc[shuffled.index]
    pd.testing.assert_frame_equal(compute_features(shuffled, fitted_model.item_bank), expected)


def test_empty_input_gives_empty_features(fitted_model):
    empty = pd.DataFrame({column: [] for column in MODEL_INPUT_COLUMNS})
    features = compute_features(empty, fitted_model.item_bank)
    assert features.shape == (0, len(feature_names(fitted_model.item_bank)))


def test_records_and_column_dicts_are_accepted(small_history_events):
    frame = model_input_from_events(small_history_events[0][:3])
    assert as_model_input(frame.to_dict("records")).equals(frame)
    with pytest.raises(ModelInputError, match="DataFrame, a list of rows or a dict"):
        as_model_input("math")


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns=["hint_used"]), "lacks column\\(s\\) hint_used"),
    (lambda f: f.assign(correct=[[True]] + list(f["correct"][1:])), "row 0: 'correct' has 1 values but 'item_id' has"),
    (lambda f: f.assign(item_id=[[]] + list(f["item_id"][1:]), skill=[[]] + list(f["skill"][1:]),
                        correct=[[]] + list(f["correct"][1:]),
                        response_time_ms=[[]] + list(f["response_time_ms"][1:]),
                        attempts=[[]] + list(f["attempts"][1:]), hint_used=[[]] + list(f["hint_used"][1:])),
     "row 0 has no responses"),
    (lambda f: f.assign(attempts=[None] + list(f["attempts"][1:])), "row 0: 'attempts' must be a list"),
    (lambda f: f.assign(hint_used=[[None] * len(f["hint_used"][0])] + list(f["hint_used"][1:])),
     "'hint_used' has a missing value"),
    (lambda f: f.assign(response_time_ms=[["fast"] * len(f["item_id"][0])] + list(f["response_time_ms"][1:])),
     "'response_time_ms' must hold int64"),
    (lambda f: f.assign(grade_level=["sixth"] + list(f["grade_level"][1:])), "row 0: grade_level"),
    (lambda f: f.assign(subject=[None] + list(f["subject"][1:])), "'subject' has 1 missing"),
])
def test_bad_model_input_is_refused_with_where_and_what(small_history_events, fitted_model, change, message):
    frame = model_input_from_events(small_history_events[0][:3])
    with pytest.raises(ModelInputError, match=message):
        compute_features(change(frame), fitted_model.item_bank)
