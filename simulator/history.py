"""A historical batch for the first training: ``learnscore simulate history``.

Layout of the folder (default ``<state_dir>/simulator/history/``):

``submissions.jsonl``
    one ``DiagnosticSubmitted`` event per line, exactly as it would travel on Kafka;
    event times spread evenly over ``[end - days, end - outcome_delay]``.
``outcomes.jsonl``
    one ``OutcomeObserved`` per submission (same order), ``outcome_delay`` after it, so the
    latest outcome is at ``end``; ``submission_event_id`` joins it to its submission.
``truth.parquet``
    one row per submission: the true ability, cohort, active scenario, the oracle's score and
    level (what a model knowing the true ability would predict), the observed outcome, times.
``manifest.json``
    counts, seed, scenarios, time range and file names; written last, so a folder with a
    manifest is complete.

Only valid events go into a history. Read it with Spark as
``spark.read.schema(spark_schema(DIAGNOSTIC_SUBMITTED)).json(".../submissions.jsonl")``, with
pandas/pyarrow line by line, or with :func:`read_manifest`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from learnscore.schemas.history import (
    DEFAULT_HISTORY_SUBDIR,
    MANIFEST_FILE,
    OUTCOMES_FILE,
    SUBMISSIONS_FILE,
    TRUTH_FILE,
)
from learnscore.simulator.generator import SimulatedBatch, Simulator, SimulatorSettings, truth_table
from learnscore.simulator.scenarios import ScenarioSpec

log = logging.getLogger(__name__)

_CHUNK = 8192


@dataclass(frozen=True)
class HistoryOptions:
    """What ``simulate history`` writes.

    >>> HistoryOptions(days=5, outcome_delay_s=7 * 86400)
    Traceback (most recent call last):
    ...
    ValueError: the outcome delay (7 days) must be shorter than the history (5 days)
    """

    learners: int = 20_000
    days: float = 60.0
    outcome_delay_s: float = 7 * 86400.0
    seed: int = 7
    scenarios: tuple[ScenarioSpec, ...] = ()
    end: datetime | None = None  # default: now, to the second
    settings: SimulatorSettings = SimulatorSettings()

    def __post_init__(self) -> None:
        if self.learners < 1:
            raise ValueError(f"learners must be at least 1, got {self.learners}")
        if self.days <= 0:
            raise ValueError(f"days must be positive, got {self.days}")
        if not 0 <= self.outcome_delay_s < self.days * 86400:
            raise ValueError(f"the outcome delay ({self.outcome_delay_s / 86400:g} days) must be shorter "
                             f"than the history ({self.days:g} days)")


def history_dir(config) -> Path:
    """Where ``simulate history`` writes by default: ``<state_dir>/simulator/history``."""
    return Path(config.state_dir) / DEFAULT_HISTORY_SUBDIR


def write_history(out: Path, options: HistoryOptions) -> dict[str, Any]:
    """Simulate ``options.learners`` learners (one diagnostic each) and write the folder described
    in the module docstring to ``out``. Returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # incomplete until the new manifest is written
    end = (options.end or datetime.now(timezone.utc).replace(microsecond=0)).astimezone(timezone.utc)
    start = end - timedelta(days=options.days)
    span_s = options.days * 86400 - options.outcome_delay_s
    simulator = Simulator(seed=options.seed, start=start, interval_s=span_s / options.learners,
                          scenarios=options.scenarios, outcome_delay_s=options.outcome_delay_s,
                          run="history", settings=options.settings)
    truth_parts: list[pa.Table] = []
    responses = 0
    began = next_progress = time.monotonic()
    with _atomic(out / SUBMISSIONS_FILE) as submissions, _atomic(out / OUTCOMES_FILE) as outcomes:
        remaining = options.learners
        while remaining:
            batch: SimulatedBatch = simulator.take(min(_CHUNK, remaining))
            remaining -= len(batch)
            submissions.write(b"".join(orjson.dumps(e) + b"\n" for e in batch.submissions))
            outcomes.write(b"".join(orjson.dumps(e) + b"\n" for e in batch.outcomes))
            truth_parts.append(truth_table(batch.truth))
            responses += int(batch.truth["n_items"].sum())
            if time.monotonic() >= next_progress or not remaining:
                next_progress = time.monotonic() + 5.0
                log.info("simulate history: %d/%d learners", options.learners - remaining, options.learners)
    truth = pa.concat_tables(truth_parts)
    with _atomic(out / TRUTH_FILE) as handle:
        pq.write_table(truth, handle)
    times = truth.column("submission_time")
    scenario_counts = dict(zip(*[col.to_pylist() for col in
                                 truth.group_by("scenario").aggregate([("event_id", "count")]).columns]))
    manifest = {
        "format": 1,
        "submissions": options.learners,
        "outcomes": options.learners,
        "responses": responses,
        "learners": options.learners,
        "seed": options.seed,
        "scenarios": [str(s) for s in options.scenarios],
        "rows_by_scenario": scenario_counts,
        "days": options.days,
        "outcome_delay_s": options.outcome_delay_s,
        "submission_time_min": times[0].as_py().isoformat(),
        "submission_time_max": times[-1].as_py().isoformat(),
        "outcome_time_max": truth.column("outcome_time")[-1].as_py().isoformat(),
        "end": end.isoformat(),
        "files": {"submissions": SUBMISSIONS_FILE, "outcomes": OUTCOMES_FILE, "truth": TRUTH_FILE},
        "generated_in_s": round(time.monotonic() - began, 3),
    }
    with _atomic(out / MANIFEST_FILE) as handle:
        handle.write(json.dumps(manifest, indent=2).encode() + b"\n")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a complete history folder; a clear error when there is none."""
    path = Path(folder) / MANIFEST_FILE
    if not path.exists():
        raise FileNotFoundError(f"no complete simulated history in {folder} ({MANIFEST_FILE} missing); "
                                f'create one with "learnscore simulate history"')
    return json.loads(path.read_text())


class _atomic:
    """Write to ``<path>.part`` and rename over ``path`` only when the block succeeds."""

    def __init__(self, path: Path):
        self.path = path
        self.part = path.with_name(path.name + ".part")

    def __enter__(self):
        self.handle = open(self.part, "wb")
        return self.handle

    def __exit__(self, kind, value, traceback) -> None:
        self.handle.close()
        if kind is None:
            os.replace(self.part, self.path)
        else:
            self.part.unlink(missing_ok=True)
