"""``learnscore bench drift``: false alarms and detection delays of the stream's drift detectors.

The fast path runs outside Spark over the *same* code the stream runs: simulated submissions
(:mod:`simulator`) → the shared features and a model trained on a simulated history
(:mod:`learnscore.model.features`, :mod:`learnscore.model.diagnostic`) → :class:`~streaming.drift.monitor.DriftMonitor`
in micro-batches, exactly as the stream's ``foreachBatch`` feeds it:

* submissions arrive at ``rate`` per second and are scored at once; one micro-batch holds one
  trigger interval of them (``batch_size`` = rate × trigger seconds);
* each outcome arrives ``outcome_delay_s`` after its submission and is joined with its
  prediction in the micro-batch of its arrival (``abs_error``, ``level_correct``);
* ``now`` is the simulated clock, so the cooldown behaves as it would live.

Figures: the number of ``RetrainRequested`` (and drift events) on a stationary stream, and per
scenario the delay from onset to the first request, in submissions — and for
``concept-shift``, whose evidence comes only with outcomes, in labelled outcomes of
post-onset submissions.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

from learnscore.streaming.drift.monitor import DriftMonitor, DriftSettings

log = logging.getLogger(__name__)

SCENARIOS = ("weaker-cohort", "item-bank-change", "concept-shift", "response-time-unit-change")
START = datetime(2026, 1, 5, tzinfo=timezone.utc)
TARGETS = {"false_requests_per_million": 1, "delay_submissions": 5000,
           "delay_labelled_outcomes": 5000}
_CHUNK = 20_000


@dataclass
class StreamRun:
    """What one simulated stream did to the detectors."""

    submissions: int = 0
    outcomes: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    first_request: dict[str, Any] | None = None
    seconds: float = 0.0


def train_bench_model(config, learners: int, seed: int):
    """A model fitted on a simulated stationary history (same code path as training)."""
    from learnscore.model.diagnostic import model_from_config
    from learnscore.model.features import model_input_from_events
    from learnscore.simulator.generator import Simulator

    history = Simulator(seed=seed, start=START - timedelta(days=30), interval_s=1.0,
                        run="history").take(learners)
    model_input = model_input_from_events(history.submissions)
    model = model_from_config(config.model).fit(model_input, history.truth["observed_score"],
                                                history.truth["observed_level"])
    return model


def simulate_stream(model, variants: dict[str, DriftSettings], *, submissions: int, seed: int,
                    scenario: str | None = None, onset: int = 0, rate: float = 200.0,
                    trigger_seconds: float = 1.0, outcome_delay_s: float = 10.0,
                    stop_at_first_request: bool = False,
                    model_version: str = "1") -> dict[str, StreamRun]:
    """Feed one simulated stream to a fresh :class:`DriftMonitor` per settings variant.

    The stream is generated and scored once; every variant sees exactly the same micro-batches.
    With ``stop_at_first_request`` it ends once every variant has asked for a retrain after
    the onset.
    """
    from learnscore.model.features import model_input_from_events
    from learnscore.simulator.generator import Simulator
    from learnscore.simulator.scenarios import ScenarioSpec

    scenarios = (ScenarioSpec(scenario, at_event=onset),) if scenario else ()
    simulator = Simulator(seed=seed, start=START, interval_s=1.0 / rate, scenarios=scenarios,
                          outcome_delay_s=outcome_delay_s)
    monitors = {name: DriftMonitor(settings, stream_id=f"bench-{scenario or 'stationary'}-{seed}")
                for name, settings in variants.items()}
    runs = {name: StreamRun() for name in variants}
    batch_size = max(1, int(round(rate * trigger_seconds)))
    chunk_size = batch_size * max(1, _CHUNK // batch_size)  # micro-batches never span chunks
    delay_batches = int(round(outcome_delay_s / trigger_seconds))
    pending_outcomes: dict[int, list[pd.DataFrame]] = defaultdict(list)
    labelled_after_onset = seen = outcomes_seen = 0
    started = time.perf_counter()
    while seen < submissions:
        chunk = simulator.take(min(chunk_size, submissions - seen))
        frame = _scored_frame(model, chunk, model_input_from_events, model_version)
        index = np.arange(seen, seen + len(chunk))
        for first in range(0, len(chunk), batch_size):
            rows = slice(first, first + batch_size)
            predictions = frame.iloc[rows]
            batch_id = (seen + first) // batch_size
            pending_outcomes[batch_id + delay_batches].append(
                _outcome_rows(predictions, chunk.truth, rows, index[rows] >= onset if scenario else None))
            outcomes = pd.concat(pending_outcomes.pop(batch_id, []) or [_EMPTY_OUTCOMES],
                                 ignore_index=True)
            now = START + timedelta(seconds=(batch_id + 1) * trigger_seconds)
            submitted = seen + first + len(predictions)
            outcomes_seen += len(outcomes)
            if scenario and len(outcomes):
                labelled_after_onset += int(outcomes["_after_onset"].sum())
            for name, monitor in monitors.items():
                run = runs[name]
                if stop_at_first_request and run.first_request is not None:
                    continue
                findings = monitor.observe(batch_id, predictions,
                                           outcomes if len(outcomes) else None, now=now)
                run.submissions, run.outcomes = submitted, outcomes_seen
                run.seconds = time.perf_counter() - started
                for finding in findings:
                    record = _finding_record(finding, submitted, labelled_after_onset, onset,
                                             bool(scenario))
                    run.findings.append(record)
                    if finding.request_id and run.first_request is None and (
                            not scenario or submitted > onset):
                        run.first_request = record
            if stop_at_first_request and all(r.first_request for r in runs.values()):
                return runs
        seen += len(chunk)
        log.info("%s: %d submissions, %d outcomes; requests %s (%.0f s)", scenario or "stationary",
                 seen, outcomes_seen,
                 {name: sum(1 for f in run.findings if f["request"]) for name, run in runs.items()},
                 time.perf_counter() - started)
    return runs


_EMPTY_OUTCOMES = pd.DataFrame(columns=["event_id", "event_time", "subject", "grade_level",
                                        "model_version", "abs_error", "level_correct",
                                        "_after_onset"])


def _scored_frame(model, chunk, model_input_from_events, model_version: str) -> pd.DataFrame:
    """Predictions with the features the detectors watch, as the stream hands them over."""
    model_input = model_input_from_events(chunk.submissions)
    features = model.features(model_input)
    predictions = model.predict_features(features)
    truth = chunk.truth
    return pd.DataFrame({
        "event_id": truth["event_id"],
        "event_time": pd.to_datetime(truth["submission_time"], utc=True),
        "subject": truth["subject"], "grade_level": truth["grade_level"],
        "model_version": model_version,
        "accuracy": features["accuracy"].to_numpy(),
        "ability": features["ability"].to_numpy(),
        "mean_log_time": features["mean_log_time"].to_numpy(),
        "progress_score": predictions["progress_score"].to_numpy(),
        "comprehension_level": predictions["comprehension_level"].to_numpy(),
    })


def _outcome_rows(predictions: pd.DataFrame, truth: dict[str, np.ndarray], rows: slice,
                  after_onset: np.ndarray | None) -> pd.DataFrame:
    """The joined prediction + outcome rows (``gold.prediction_outcomes`` shape)."""
    observed = truth["observed_score"][rows]
    observed_level = truth["observed_level"][rows]
    return pd.DataFrame({
        "event_id": predictions["event_id"].to_numpy(),
        "event_time": predictions["event_time"].to_numpy(),
        "subject": predictions["subject"].to_numpy(),
        "grade_level": predictions["grade_level"].to_numpy(),
        "model_version": predictions["model_version"].to_numpy(),
        "abs_error": np.abs(predictions["progress_score"].to_numpy() - observed),
        "level_correct": predictions["comprehension_level"].to_numpy() == observed_level,
        "_after_onset": after_onset if after_onset is not None else np.zeros(len(observed), bool),
    })


def _finding_record(finding, submissions: int, labelled_after_onset: int, onset: int,
                    scenario: bool) -> dict[str, Any]:
    detection = finding.detection
    record = {
        "batch_id": finding.batch_id, "kind": finding.kind, "signal": finding.signal,
        "segment": finding.segment, "effect_sigma": round(detection.effect, 3),
        "mean_before": round(detection.mean_before, 4), "mean_after": round(detection.mean_after, 4),
        "n_before": detection.n_before, "n_after": detection.n_after,
        "request": finding.request_id is not None, "submissions_seen": submissions,
    }
    if scenario:
        record["delay_submissions"] = submissions - onset
        record["labelled_outcomes_after_onset"] = labelled_after_onset
    return record


def sensitivity_variants(settings: DriftSettings) -> dict[str, DriftSettings]:
    """The configured settings and the alternatives the benchmark compares them with."""
    from dataclasses import replace

    return {
        "configured": settings,
        "delta=0.002 (River default)": replace(settings, delta=0.002),
        "delta=1e-7": replace(settings, delta=1e-7),
        "no effect gate (min_effect_sigma=0)": replace(settings, min_effect_sigma=0.0),
    }


def run_drift_bench(config, *, stationary_submissions: int = 1_000_000,
                    onset: int = 30_000, max_after_onset: int = 40_000, seed: int = 11,
                    history_learners: int = 20_000, rate: float = 200.0,
                    trigger_seconds: float = 1.0, outcome_delay_s: float = 10.0,
                    scenarios: tuple[str, ...] = SCENARIOS) -> dict[str, Any]:
    """Run the stationary stream and each scenario; return the figures (bench/results/drift.json).

    The top-level figures are those of the configured ``drift:`` settings; ``sensitivity``
    repeats them for a few alternative settings on the very same streams.
    """
    settings = DriftSettings.from_config(config.drift)
    variants = sensitivity_variants(settings)
    started = time.perf_counter()
    log.info("training the bench model on %d simulated learners", history_learners)
    model = train_bench_model(config, history_learners, seed)
    common = dict(seed=seed, rate=rate, trigger_seconds=trigger_seconds,
                  outcome_delay_s=outcome_delay_s)
    result: dict[str, Any] = {
        "benchmark": "drift",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "parameters": {**settings.__dict__, "grade_bands": [list(b) for b in settings.grade_bands],
                       "rate_per_s": rate, "trigger_seconds": trigger_seconds,
                       "outcome_delay_s": outcome_delay_s, "history_learners": history_learners,
                       "seed": seed, "scenario_onset_submission": onset},
        "targets": TARGETS,
    }
    sensitivity: dict[str, dict[str, Any]] = {name: {} for name in variants}
    if stationary_submissions:
        runs = simulate_stream(model, variants, submissions=stationary_submissions, **common)
        for name, run in runs.items():
            entry = _stationary_entry(run)
            sensitivity[name]["stationary_false_requests"] = entry["retrain_requests"]
            if name == "configured":
                result["stationary"] = entry
    result["scenarios"] = {}
    for scenario in scenarios:
        runs = simulate_stream(model, variants, submissions=onset + max_after_onset,
                               scenario=scenario, onset=onset, stop_at_first_request=True, **common)
        for name, run in runs.items():
            entry = _scenario_entry(scenario, run, onset, max_after_onset)
            sensitivity[name][scenario] = entry.get(entry.get("measured_by", ""), None)
            if name == "configured":
                result["scenarios"][scenario] = entry
                log.info("%s: %s", scenario, {k: v for k, v in entry.items() if k != "first_request"})
    result["sensitivity"] = sensitivity
    result["meets_all_targets"] = (result.get("stationary", {}).get("meets_target", True)
                                   and all(e["meets_target"] for e in result["scenarios"].values()))
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _stationary_entry(run: StreamRun) -> dict[str, Any]:
    requests = [f for f in run.findings if f["request"]]
    per_million = len(requests) * 1e6 / max(run.submissions, 1)
    return {"submissions": run.submissions, "outcomes": run.outcomes,
            "retrain_requests": len(requests), "drift_events": len(run.findings),
            "false_requests_per_million": round(per_million, 3), "events": run.findings[:20],
            "meets_target": per_million <= TARGETS["false_requests_per_million"]}


def _scenario_entry(scenario: str, run: StreamRun, onset: int, searched: int) -> dict[str, Any]:
    first = run.first_request
    before = [f for f in run.findings if f["submissions_seen"] <= onset and f["request"]]
    entry: dict[str, Any] = {"onset_submission": onset, "detected": first is not None,
                             "false_requests_before_onset": len(before)}
    measure = "delay_labelled_outcomes" if scenario == "concept-shift" else "delay_submissions"
    entry["measured_by"] = measure
    if first is None:
        entry.update(meets_target=False, searched_submissions_after_onset=searched)
        return entry
    entry.update(delay_submissions=first["delay_submissions"],
                 delay_labelled_outcomes=first["labelled_outcomes_after_onset"],
                 first_request=first)
    entry["meets_target"] = entry[measure] <= TARGETS[measure]
    return entry
