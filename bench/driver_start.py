"""Benchmark: a fresh Spark driver's start, with and without the class archive
(``learnscore bench driver-start``).

Each run is a new Python process, as every learnscore command and test subprocess is: it builds
the session (``core.spark``), runs a first job, writes a 1,000-row Delta table and reads it back.
Runs alternate between ``spark.class_archive`` on and off, so a change in the machine's load
touches both; the JSON keeps every run and the medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from learnscore.bench.results import write_result
from learnscore.core.class_archive import java_options
from learnscore.core.config import Config

PHASES = ("session_s", "first_job_s", "delta_write_read_s")


def run_driver_start_bench(config: Config, runs: int = 3,
                           output: Path = Path("bench/results/driver_start.json")) -> dict[str, Any]:
    if not java_options(config):
        raise RuntimeError("no driver class archive to compare with: run `learnscore jars` first")
    measured: dict[str, list[dict[str, float]]] = {"archive": [], "no_archive": []}
    for _ in range(runs):
        for mode in measured:
            measured[mode].append(_one_start(archive=mode == "archive"))
    medians = {mode: {key: round(statistics.median(run[key] for run in rows), 2)
                      for key in ("wall_s", *PHASES)} for mode, rows in measured.items()}
    result = {
        "benchmark": "driver_start",
        "command": f"learnscore bench driver-start --runs {runs}",
        "median": medians,
        "saved_s": round(medians["no_archive"]["wall_s"] - medians["archive"]["wall_s"], 2),
        "runs": measured,
        "archive": java_options(config).split("=", 1)[1],
    }
    return write_result(result, output)


def _one_start(archive: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="learnscore-driver-start-") as scratch:
        env = {**os.environ, "LEARNSCORE__STATE_DIR": scratch,
               "LEARNSCORE__SPARK__CLASS_ARCHIVE": str(archive).lower()}
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "learnscore.bench.driver_start"], env=env,
                                capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"the driver did not start:\n{result.stderr[-1500:]}")
    phases = json.loads(result.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), **phases}


def _start_a_driver() -> None:
    """The child: time the session, a first job and a Delta write + read; print them as JSON."""
    started = time.perf_counter()
    from learnscore.core.config import load_config
    from learnscore.core.spark import create_spark_session

    config = load_config()
    spark = create_spark_session(config, app_name="learnscore-driver-start")
    session = time.perf_counter()
    spark.range(1000).count()
    first_job = time.perf_counter()
    table = str(config.state_dir / "numbers")
    spark.range(1000).write.format("delta").save(table)
    spark.read.format("delta").load(table).count()
    delta = time.perf_counter()
    spark.stop()
    print(json.dumps({"session_s": round(session - started, 2), "first_job_s": round(first_job - session, 2),
                      "delta_write_read_s": round(delta - first_job, 2)}))


if __name__ == "__main__":
    _start_a_driver()
