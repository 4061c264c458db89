"""``learnscore bench psychometrics``: rapid guessing, item drift and leaked items, per scenario.

Spark-free, over the code the stream runs: an item bank (:func:`~learnscore.model.item_bank.fit_item_bank`)
fitted on a simulated stationary history stands for the production version's; a stream of
submissions then goes, in micro-batches of ``batch`` submissions, through
:class:`~learnscore.streaming.drift.items.ItemMonitor` (the landing query's item watch: the first
``psychometrics.item_reference_submissions`` are its reference, then one test per
``item_window_submissions``) and through the ``rapid_guess_share`` drift signal of
:class:`~learnscore.streaming.drift.monitor.DriftMonitor` (the gold query's effort detector),
each submission's share measured as the scoring query measures it
(:func:`~learnscore.model.effort.measure_effort`).

Reported: on a stationary stream, the items flagged (goal 0), the effort drift events and the
low-effort submissions (goal ≤ 1 per 100,000); per scenario (``rapid-guessing``, ``item-leak``,
``item-difficulty-drift``, from submission ``onset``), whether it was detected, the delay in
submissions from the onset to the batch that raised it, and the items flagged against the items
the simulator changed.
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

from learnscore.model.effort import measure_effort
from learnscore.model.features import flatten_events
from learnscore.model.item_bank import fit_item_bank
from learnscore.simulator.generator import Simulator
from learnscore.simulator.irt import SKILLS_PER_SUBJECT
from learnscore.simulator.scenarios import PSYCHOMETRIC, ScenarioSpec, psychometric_items
from learnscore.streaming.drift.items import ItemMonitor
from learnscore.streaming.drift.monitor import DriftMonitor, DriftSettings
from learnscore.streaming.drift.signals import SIGNALS

log = logging.getLogger(__name__)

START = datetime(2026, 1, 5, tzinfo=timezone.utc)
GOALS = {"stationary_items_flagged_max": 0, "stationary_low_effort_per_100k_max": 1.0}
_EXPECTED_FLAG = {"rapid-guessing": "segment", "item-leak": "item_compromised",
                  "item-difficulty-drift": "item_drift"}


def run_psychometrics_bench(config, *, history: int = 20_000, stationary: int = 200_000,
                            onset: int = 20_000, after: int = 40_000, batch: int = 500, seed: int = 11,
                            scenarios: tuple[str, ...] = PSYCHOMETRIC) -> dict[str, Any]:
    """Run the benchmark; return the figures (``bench/results/psychometrics.json``)."""
    began = time.perf_counter()
    settings = config.psychometrics
    flat = flatten_events(_simulator(seed, "history").take(history).submissions)
    bank = fit_item_bank(flat.item_id, flat.skill, flat.response_subject, flat.correct,
                         flat.log_time, flat.row, flat.n_rows)
    watch = _Watcher(config, bank)

    log.info("stationary stream: %d submissions in micro-batches of %d", stationary, batch)
    calm = watch.run(_simulator(seed, "stationary"), stationary, batch)
    result: dict[str, Any] = {
        "benchmark": "psychometrics",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "parameters": {"history": history, "stationary": stationary, "onset": onset, "after": after,
                       "batch": batch, "seed": seed, "bank_items": len(bank.item_ids),
                       "grade_bands": [list(b) for b in config.drift.grade_bands],
                       **{k: v for k, v in settings.model_dump().items() if k.startswith(("item_", "low_", "norm"))}},
        "goal": GOALS,
        "stationary": {
            "submissions": stationary,
            "items_flagged": sorted(calm["items"]),
            "effort_events": sorted(calm["segments"]),
            "low_effort_submissions": calm["low_effort"],
            "low_effort_per_100k": round(calm["low_effort"] / stationary * 1e5, 3),
            "max_abs_z": round(calm["max_abs_z"], 2), "max_abs_z_time": round(calm["max_abs_z_time"], 2),
            "z_limits": [settings.item_z_limit, settings.item_z_time_limit],
        },
        "scenarios": {},
    }
    skills = SKILLS_PER_SUBJECT
    for name in scenarios:
        log.info("scenario %s from submission %d", name, onset)
        simulator = _simulator(seed, name, ScenarioSpec(name, at_event=onset))
        seen = watch.run(simulator, onset + after, batch, onset=onset, expect=_EXPECTED_FLAG[name])
        entry: dict[str, Any] = {"detected": seen["first_detection"] is not None,
                                 "delay_submissions": seen["first_detection"]}
        if name == "rapid-guessing":
            entry["effort_events"] = sorted(seen["segments"])
            entry["low_effort_share_after_onset"] = round(seen["low_effort_after"] / after, 4)
        else:
            changed = set(simulator.bank.item_id[psychometric_items(
                simulator.bank.item_id, simulator.bank.items_per_skill, skills, name)].tolist())
            changed &= set(bank.item_ids)  # the version the stream uses
            flagged = set(seen["items"])
            entry.update(items_changed=len(changed), items_flagged=len(flagged),
                         true_flags=len(flagged & changed), false_flags=sorted(flagged - changed),
                         missed=sorted(changed - flagged),
                         flags=sorted(set(seen["item_flags"].values())))
        entry["effort_events_before_onset"] = seen["segments_before_onset"]
        result["scenarios"][name] = entry
    stationary_entry = result["stationary"]
    result["meets_goal"] = (len(stationary_entry["items_flagged"]) <= GOALS["stationary_items_flagged_max"]
                            and not stationary_entry["effort_events"]
                            and stationary_entry["low_effort_per_100k"]
                            <= GOALS["stationary_low_effort_per_100k_max"])
    result["elapsed_s"] = round(time.perf_counter() - began, 1)
    return result


class _Watcher:
    """Runs a simulated stream through the item watch and the effort detector, batch by batch."""

    def __init__(self, config, bank):
        self.config, self.bank = config, bank

    def run(self, simulator: Simulator, total: int, batch_size: int, onset: int | None = None,
            expect: str = "") -> dict:
        """What the stream flagged; ``first_detection``: submissions from ``onset`` to the end of
        the batch that raised ``expect`` (``segment``: an effort drift event, else an item flag
        of that name)."""
        settings = self.config.psychometrics
        items = ItemMonitor(settings, stream_id="bench")
        effort_signal = next(signal for signal in SIGNALS if signal.name == "rapid_guess_share")
        detectors = DriftMonitor(DriftSettings.from_config(self.config.drift), signals=(effort_signal,),
                                 stream_id="bench")
        seen: dict[str, Any] = {"items": set(), "item_flags": {}, "segments": set(), "low_effort": 0,
                                "low_effort_after": 0, "first_detection": None, "segments_before_onset": 0,
                                "max_abs_z": 0.0, "max_abs_z_time": 0.0}
        done = 0
        while done < total:
            chunk = simulator.take(min(batch_size, total - done))
            flat = flatten_events(chunk.submissions)
            effort = measure_effort(flat, self.bank, share=settings.normative_share,
                                    cap_ms=settings.threshold_cap_ms, low_effort_share=settings.low_effort_share)
            seen["low_effort"] += int(effort.low_effort.sum())
            if onset is not None:
                seen["low_effort_after"] += int(effort.low_effort[np.arange(done, done + len(chunk)) >= onset].sum())
            now = START + timedelta(seconds=done)
            findings = items.observe(done // batch_size, flat, "1", self.bank, now)
            if onset is None and items.last_fit is not None:  # the null's spread: how near the limits
                seen["max_abs_z"] = max(seen["max_abs_z"], float(items.last_fit["z"].abs().max()))
                seen["max_abs_z_time"] = max(seen["max_abs_z_time"], float(items.last_fit["z_time"].abs().max()))
                items.last_fit = None
            frame = pd.DataFrame({"event_id": chunk.truth["event_id"],
                                  "event_time": pd.to_datetime(chunk.truth["submission_time"], utc=True),
                                  "subject": chunk.truth["subject"], "grade_level": chunk.truth["grade_level"],
                                  "model_version": "1", "rapid_guess_share": effort.rapid_guess_share})
            raised_effort = detectors.observe(done // batch_size, frame, None, now)
            seen["items"] |= {f.item_id for f in findings}
            seen["item_flags"].update({f.item_id: f.flag for f in findings})
            seen["segments"] |= {f.segment for f in raised_effort}
            done += len(chunk)
            if onset is not None and done <= onset:
                seen["segments_before_onset"] += len(raised_effort)
            raised = (bool(raised_effort) if expect == "segment"
                      else any(f.flag == expect for f in findings))
            if onset is not None and seen["first_detection"] is None and done > onset and raised:
                seen["first_detection"] = done - onset
        return seen


def _simulator(seed: int, run: str, *scenarios: ScenarioSpec) -> Simulator:
    return Simulator(seed=seed, start=START, interval_s=1.0, scenarios=scenarios, run=run)
