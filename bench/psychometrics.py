"""``learnscore bench psychometrics``: rapid guessing, item drift and leaked items, per scenario.

Spark-free, on the project's own parts: an item bank (:func:`~learnscore.model.item_bank.fit_item_bank`)
fitted on a simulated stationary history; a reference window (the items' residuals,
:func:`~learnscore.model.item_fit.item_fit`, and each segment's low-effort share); then windows
of ``window`` submissions of a stream, tested as the stream would test them
(:func:`~learnscore.model.effort.measure_effort`, :func:`~learnscore.model.effort.effort_shift`,
:func:`~learnscore.model.item_fit.item_fit`).

Reported: on a stationary stream, the items flagged (goal 0) and the low-effort submissions
(goal ≤ 1 per 100,000); per scenario (``rapid-guessing``, ``item-leak``,
``item-difficulty-drift``, from submission ``onset``), whether it was detected, the delay in
submissions from the onset to the end of the first window that flags it, and the items flagged
against the items the simulator changed.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from learnscore.model.effort import effort_shift, measure_effort
from learnscore.model.features import flatten_events
from learnscore.model.item_bank import fit_item_bank
from learnscore.model.item_fit import Z_LIMIT, Z_TIME_LIMIT, item_fit
from learnscore.schemas.segments import segment_labels
from learnscore.simulator.generator import Simulator
from learnscore.simulator.irt import SKILLS, SUBJECTS
from learnscore.simulator.scenarios import PSYCHOMETRIC, ScenarioSpec, psychometric_items

log = logging.getLogger(__name__)

START = datetime(2026, 1, 5, tzinfo=timezone.utc)
GOALS = {"stationary_items_flagged_max": 0, "stationary_low_effort_per_100k_max": 1.0}
_EXPECTED_FLAG = {"rapid-guessing": "segment", "item-leak": "item_compromised",
                  "item-difficulty-drift": "item_drift"}


def run_psychometrics_bench(config, *, history: int = 20_000, reference: int = 30_000,
                            stationary: int = 200_000, onset: int = 20_000, after: int = 40_000,
                            window: int = 5_000, seed: int = 11,
                            scenarios: tuple[str, ...] = PSYCHOMETRIC) -> dict[str, Any]:
    """Run the benchmark; return the figures (``bench/results/psychometrics.json``)."""
    began = time.perf_counter()
    bands = tuple(tuple(band) for band in config.drift.grade_bands)
    flat = flatten_events(_simulator(seed, "history").take(history).submissions)
    bank = fit_item_bank(flat.item_id, flat.skill, flat.response_subject, flat.correct,
                         flat.log_time, flat.row, flat.n_rows)
    batch = _simulator(seed, "reference").take(reference)
    flat = flatten_events(batch.submissions)
    effort = measure_effort(flat, bank)
    reference_items = item_fit(flat, bank, exclude=effort.rapid)
    reference_rates = (pd.Series(effort.low_effort, dtype=np.float64)
                       .groupby(_segments(batch, bands)).mean().to_dict())
    watch = _Watcher(bank, reference_items, reference_rates, bands)

    log.info("stationary stream: %d submissions in windows of %d", stationary, window)
    calm = watch.run(_simulator(seed, "stationary"), stationary, window)
    result: dict[str, Any] = {
        "benchmark": "psychometrics",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "parameters": {"history": history, "reference": reference, "stationary": stationary,
                       "onset": onset, "after": after, "window": window, "seed": seed,
                       "grade_bands": [list(b) for b in bands], "bank_items": len(bank.item_ids)},
        "goal": GOALS,
        "stationary": {
            "submissions": stationary,
            "items_flagged": sorted(calm["items"]),
            "segments_flagged": sorted(calm["segments"]),
            "low_effort_submissions": calm["low_effort"],
            "low_effort_per_100k": round(calm["low_effort"] / stationary * 1e5, 3),
            "max_abs_z": round(calm["max_abs_z"], 2), "max_abs_z_time": round(calm["max_abs_z_time"], 2),
            "z_limits": [Z_LIMIT, Z_TIME_LIMIT],
        },
        "scenarios": {},
    }
    skills = len(SKILLS[SUBJECTS[0]])
    for name in scenarios:
        log.info("scenario %s from submission %d", name, onset)
        simulator = _simulator(seed, name, ScenarioSpec(name, at_event=onset))
        seen = watch.run(simulator, onset + after, window, onset=onset, expect=_EXPECTED_FLAG[name])
        entry: dict[str, Any] = {"detected": seen["first_detection"] is not None,
                                 "delay_submissions": seen["first_detection"]}
        if name == "rapid-guessing":
            entry["segments_flagged"] = sorted(seen["segments"])
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
        result["scenarios"][name] = entry
    stationary_entry = result["stationary"]
    result["meets_goal"] = (len(stationary_entry["items_flagged"]) <= GOALS["stationary_items_flagged_max"]
                            and stationary_entry["low_effort_per_100k"]
                            <= GOALS["stationary_low_effort_per_100k_max"])
    result["elapsed_s"] = round(time.perf_counter() - began, 1)
    return result


class _Watcher:
    """Runs a simulated stream through the three signals window by window."""

    def __init__(self, bank, reference_items: pd.DataFrame, reference_rates: dict[str, float], bands):
        self.bank, self.reference_items, self.reference_rates, self.bands = \
            bank, reference_items, reference_rates, bands

    def run(self, simulator: Simulator, total: int, window: int, onset: int | None = None,
            expect: str = "") -> dict:
        """What the windows flagged; ``first_detection``: submissions from ``onset`` to the end of
        the first window that raised ``expect`` (``segment``: a segment's low-effort share, else
        an item flag of that name)."""
        seen: dict[str, Any] = {"items": set(), "item_flags": {}, "segments": set(), "low_effort": 0,
                                "low_effort_after": 0, "first_detection": None,
                                "max_abs_z": 0.0, "max_abs_z_time": 0.0}
        done = 0
        while done < total:
            batch = simulator.take(min(window, total - done))
            flat = flatten_events(batch.submissions)
            effort = measure_effort(flat, self.bank)
            seen["low_effort"] += int(effort.low_effort.sum())
            if onset is not None:
                seen["low_effort_after"] += int(effort.low_effort[np.arange(done, done + len(batch)) >= onset].sum())
            shift = effort_shift(effort.low_effort, _segments(batch, self.bands), self.reference_rates)
            items = item_fit(flat, self.bank, reference=self.reference_items, exclude=effort.rapid)
            flagged = items[items["flag"] != ""]
            if onset is None:  # the null's spread: how far from the limits stationary windows go
                seen["max_abs_z"] = max(seen["max_abs_z"], float(items["z"].abs().max()))
                seen["max_abs_z_time"] = max(seen["max_abs_z_time"], float(items["z_time"].abs().max()))
            seen["items"] |= set(flagged["item_id"])
            seen["item_flags"].update(zip(flagged["item_id"], flagged["flag"]))
            seen["segments"] |= set(shift.loc[shift["flagged"], "segment"])
            done += len(batch)
            raised = (shift["flagged"].any() if expect == "segment"
                      else (flagged["flag"] == expect).any())
            if onset is not None and seen["first_detection"] is None and done > onset and raised:
                seen["first_detection"] = done - onset
        return seen


def _simulator(seed: int, run: str, *scenarios: ScenarioSpec) -> Simulator:
    return Simulator(seed=seed, start=START, interval_s=1.0, scenarios=scenarios, run=run)


def _segments(batch, bands) -> np.ndarray:
    frame = pd.DataFrame({"subject": batch.truth["subject"], "grade_level": batch.truth["grade_level"]})
    return segment_labels(frame, bands).to_numpy()
