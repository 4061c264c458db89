"""``learnscore bench stream``: how fast the scorer drains a backlog, and how quickly it answers.

Three figures, written to ``bench/results/stream.json``:

- ``throughput_eps``: submissions per second while the scorer drains a pre-loaded backlog
  (default 200,000 simulated submissions of 20–40 responses, plus their outcomes for a tenth
  of them, some broken events and request-log lines) through every table: bronze,
  silver, quarantine, gold predictions, ScoreIssued on Kafka, prediction-outcome pairs and the
  progress table. Measured from the start of the first micro-batch to the end of the last one.
- ``latency_p50_s``/``p95``/``p99``: event time → the row committed in ``gold.predictions``
  (the modification time of the Delta data file that holds it; the commit follows within
  milliseconds) while submissions are produced live at a steady rate (default 500/s).
- ``raw_model_eps``: the same featurize + predict on the same submissions in a plain Python
  loop (no Kafka, Spark or Delta), and ``ratio_to_raw`` = throughput / raw.

The backlog is generated and produced before the clock starts. Per-stage wall times summed over
the drain's micro-batches (``stage_seconds``) show where the time goes; bench/README.md reads them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from learnscore.config import Config

log = logging.getLogger(__name__)


def machine() -> dict[str, Any]:
    """Cores, memory and CPU model of this machine (for the results file)."""
    import psutil

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu_model": model, "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def percentiles(values: list[float], points=(50, 95, 99)) -> dict[int, float | None]:
    """Nearest-rank percentiles of ``values`` (None when empty).

    >>> percentiles([1.0, 2.0, 3.0, 4.0])
    {50: 2.0, 95: 4.0, 99: 4.0}
    """
    import math

    ordered = sorted(values)
    if not ordered:
        return {p: None for p in points}
    return {p: ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in points}


def write_result(result: dict[str, Any], output: str | Path) -> Path:
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path
