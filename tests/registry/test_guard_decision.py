"""The guard's decision, pure: margins against the previous version, absolute floors, waiting."""

from __future__ import annotations

from learnscore.core.config import Config
from learnscore.registry.guard import Baseline, Evidence, decide

BEFORE = Baseline("6", "same live pairs", {"mae": 5.0, "macro_f1": 0.72, "accuracy": 0.75})


def _config(**guard) -> Config:
    config = Config()
    return config.model_copy(update={"guard": config.guard.model_copy(update=guard)})


def test_a_version_30_points_off_is_rolled_back_with_every_reason():
    live = Evidence("estimated", 800, 0, {"mae": 29.4, "macro_f1": 0.71, "accuracy": 0.74})
    decision = decide("7", live, BEFORE, Config())
    assert decision.action == "roll_back"
    assert decision.reasons == ("MAE 29.40 is above the limit 10.00",
                                "MAE 29.40 exceeds v6's 5.00 by 24.40 (allowed 1.50)")
    metrics = decision.evidence_metrics()
    assert (metrics["guard_live_mae"], metrics["guard_baseline_mae"], metrics["guard_estimated"],
            metrics["guard_baseline_same_pairs"]) == (29.4, 5.0, 1.0, 1.0)


def test_within_the_margins_is_kept_and_the_margins_come_from_config():
    live = Evidence("realized", 900, 400, {"mae": 6.2, "macro_f1": 0.69})
    assert decide("7", live, BEFORE, Config()).action == "keep"
    strict = decide("7", live, BEFORE, _config(max_mae_increase=1.0, max_macro_f1_drop=0.02))
    assert strict.action == "roll_back" and len(strict.reasons) == 2


def test_floors_alone_decide_when_there_is_no_baseline():
    lost = Evidence("realized", 900, 400, {"mae": 4.0, "macro_f1": 0.31})
    decision = decide("2", lost, Baseline(None, "none"), Config())
    assert decision.reasons == ("macro-F1 0.310 is below the floor 0.400",)
    assert "baseline none (floors only)" in decision.summary()


def test_too_little_evidence_waits():
    decision = decide("7", Evidence("none", 120, 30), BEFORE, Config())
    assert decision.action == "wait" and "judging needs 300 predictions or 300 outcomes" in decision.reasons[0]


def test_below_a_floor_is_kept_when_the_previous_version_is_further_below():
    # After a concept shift the old version fails the floors it was promoted under; rolling back
    # to it would put a worse model in front of learners.
    shifted = Baseline("1", "gate report", {"mae": 12.2, "macro_f1": 0.32})
    live = Evidence("realized", 900, 400, {"mae": 4.2, "macro_f1": 0.36})
    assert decide("2", live, shifted, Config()).action == "keep"
    worse = Evidence("realized", 900, 400, {"mae": 4.2, "macro_f1": 0.30})
    assert decide("2", worse, shifted, Config()).reasons == ("macro-F1 0.300 is below the floor 0.400",)
    assert decide("2", live, Baseline("1", "none", {}), Config()).action == "roll_back"


def test_the_gates_pass_a_floor_only_for_a_candidate_that_beats_a_production_below_it():
    from learnscore.registry.gates import check_floors

    candidate = {"mae": 4.2, "macro_f1": 0.36}
    assert [r.passed for r in check_floors(candidate, Config())] == [True, False]
    assert [r.passed for r in check_floors(candidate, Config(), {"mae": 12.2, "macro_f1": 0.32}, "1")] == [True, True]
    assert [r.passed for r in check_floors(candidate, Config(), {"mae": 3.9, "macro_f1": 0.37}, "1")] == [True, False]
