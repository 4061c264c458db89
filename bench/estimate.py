"""``learnscore bench estimate``: how close estimated performance comes to the realized one.

Spark-free, on the project's own parts: a model from ``conf/`` ``model:``
(:func:`learnscore.model.diagnostic.model_from_config`) fitted on a simulated stationary history;
a labelled reference window it scored afterwards (its "live pairs"); then, per scenario, several
fresh windows of simulated submissions it scores, whose outcomes the simulator also knows.
For each window the estimators of :mod:`learnscore.model.estimation` (fitted on the reference)
estimate accuracy, macro-F1 and MAE from the predictions alone; the realized figures come from
the outcomes. Reported per scenario: mean and worst ``|estimated − realized|``, and how far the
estimate and the realized figure moved from the stationary windows.

Goal: ``|estimated − realized|`` macro-F1 ≤ 0.03 on stationary data; after a covariate shift
(``weaker-cohort``) the estimate moves, before any outcome exists. ``concept-shift`` is the
case the method cannot see (the inputs do not change, the relation does): it is reported to
show that, and the stream's error detectors on realized outcomes cover it. The psychometric
scenarios (rapid guessing, a leaked item, items drifting harder) run too: they change the inputs
the way a cohort of rushing learners or a compromised item would.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

from learnscore.bench.drift import SCENARIOS, START
from learnscore.model.estimation import PerformanceEstimator, realized_metrics
from learnscore.schemas.segments import segment_labels
from learnscore.simulator.scenarios import PSYCHOMETRIC

log = logging.getLogger(__name__)

GOAL_STATIONARY_MACRO_F1 = 0.03
METRICS = ("macro_f1", "accuracy", "mae")


def scored_window(model, *, seed: int, rows: int, scenario: str | None = None, run: str = "window",
                  start: datetime = START) -> pd.DataFrame:
    """``rows`` simulated submissions (``scenario`` active from the first) scored by ``model``:
    the ``gold.prediction_outcomes`` columns the estimators and the realized metrics need."""
    from learnscore.model.features import model_input_from_events
    from learnscore.simulator.generator import Simulator
    from learnscore.simulator.scenarios import ScenarioSpec

    scenarios = (ScenarioSpec(scenario, at_event=0),) if scenario else ()
    batch = Simulator(seed=seed, start=start, interval_s=1.0, scenarios=scenarios, run=run).take(rows)
    predictions = model.predict(model_input_from_events(batch.submissions)).reset_index(drop=True)
    truth = batch.truth
    return pd.DataFrame({
        "event_id": truth["event_id"], "subject": truth["subject"], "grade_level": truth["grade_level"],
        **{column: predictions[column].to_numpy() for column in predictions.columns},
        "observed_progress_score": truth["observed_score"],
        "observed_comprehension_level": truth["observed_level"],
    })


def compare(estimator: PerformanceEstimator, window: pd.DataFrame) -> dict[str, Any]:
    """Estimated (from predictions only) and realized (from outcomes) figures of one window."""
    estimate = estimator.estimate(window.drop(columns=["observed_progress_score",
                                                       "observed_comprehension_level"]))
    realized = realized_metrics(window)
    return {"rows": len(window),
            **{f"estimated_{m}": getattr(estimate, m) for m in METRICS},
            **{f"realized_{m}": realized[m] for m in METRICS},
            **{f"error_{m}": round(abs(getattr(estimate, m) - realized[m]), 4) for m in METRICS}}


def run_estimate_bench(config, *, history_learners: int = 20_000, reference_rows: int = 10_000,
                       window_rows: int = 5_000, windows: int = 5, seed: int = 11,
                       scenarios: tuple[str, ...] = (*SCENARIOS, *PSYCHOMETRIC)) -> dict[str, Any]:
    """Run the comparison; return the figures (``bench/results/estimate.json``)."""
    from learnscore.bench.drift import train_bench_model

    began = time.perf_counter()
    log.info("fitting the model on %d simulated learners", history_learners)
    model = train_bench_model(config, history_learners, seed)
    fitted_s = time.perf_counter() - began
    reference = scored_window(model, seed=seed, rows=reference_rows, run="reference",
                              start=START - timedelta(days=1))
    estimator = PerformanceEstimator().fit(reference)
    log.info("estimators fitted on %d reference rows", len(reference))
    bands = config.drift.grade_bands
    result: dict[str, Any] = {
        "benchmark": "estimate",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "parameters": {"history_learners": history_learners, "reference_rows": reference_rows,
                       "window_rows": window_rows, "windows_per_scenario": windows, "seed": seed,
                       "model": config.model.model_dump(mode="json")},
        "goal": {"stationary_macro_f1_abs_error_max": GOAL_STATIONARY_MACRO_F1},
        "reference": realized_metrics(reference),
        "scenarios": {},
    }
    for scenario in ("stationary", *scenarios):
        entries, segment_errors = [], []
        for w in range(windows):
            window = scored_window(model, seed=seed + 100 + w, rows=window_rows,
                                   scenario=None if scenario == "stationary" else scenario,
                                   run=f"window-{scenario}")
            entries.append(compare(estimator, window))
            segments = segment_labels(window, bands)
            for _, rows in window.groupby(segments):
                if len(rows) >= 200:
                    segment_errors.append(compare(estimator, rows))
        result["scenarios"][scenario] = _summary(entries, segment_errors)
        log.info("%s: %s", scenario, {k: v for k, v in result["scenarios"][scenario].items()
                                      if k.startswith("mean_abs_error")})
    stationary = result["scenarios"]["stationary"]
    for entry in result["scenarios"].values():
        for m in METRICS:
            entry[f"estimate_moved_{m}"] = round(entry[f"mean_estimated_{m}"] - stationary[f"mean_estimated_{m}"], 4)
            entry[f"realized_moved_{m}"] = round(entry[f"mean_realized_{m}"] - stationary[f"mean_realized_{m}"], 4)
    result["meets_goal"] = stationary["max_abs_error_macro_f1"] <= GOAL_STATIONARY_MACRO_F1
    result["seconds"] = round(time.perf_counter() - began, 1)
    result["model_fit_seconds"] = round(fitted_s, 1)
    return result


def _summary(entries: list[dict[str, Any]], segment_errors: list[dict[str, Any]]) -> dict[str, Any]:
    frame = pd.DataFrame(entries)
    out: dict[str, Any] = {"windows": len(frame), "rows_per_window": int(frame["rows"].iloc[0])}
    for m in METRICS:
        out[f"mean_estimated_{m}"] = round(float(frame[f"estimated_{m}"].mean()), 4)
        out[f"mean_realized_{m}"] = round(float(frame[f"realized_{m}"].mean()), 4)
        out[f"mean_abs_error_{m}"] = round(float(frame[f"error_{m}"].mean()), 4)
        out[f"max_abs_error_{m}"] = round(float(frame[f"error_{m}"].max()), 4)
    if segment_errors:
        segments = pd.DataFrame(segment_errors)
        out["segments"] = {"cells": len(segments), "mean_rows": int(segments["rows"].mean()),
                           **{f"mean_abs_error_{m}": round(float(segments[f"error_{m}"].mean()), 4)
                              for m in METRICS},
                           **{f"p90_abs_error_{m}": round(float(np.quantile(segments[f"error_{m}"], 0.9)), 4)
                              for m in METRICS}}
    out["window_figures"] = entries
    return out
