"""Benchmark: ``learnscore import`` of a long warehouse export (``learnscore bench import``).

A seeded simulated history, exported as a warehouse would (``learnscore simulate export``: one
row per answered item, ~30 per submission), cut at ``rows`` answer rows, is imported twice into
a lake of its own, each time by the real command in a child process:

``stage``
    ``--dry-run``: read, convert, group, validate — Python and Arrow only; its peak memory is the
    bounded-memory claim (one chunk, then one partition, never the file).
``import``
    the whole import into an empty lake: staging, then the Delta MERGEs (Spark driver JVM).

Peak memory is sampled every 0.2 s as the resident set of the child and all its descendants
(the Spark JVM included), and read from the kernel for the Python process alone
(the child's ``ru_maxrss`` from ``wait4``). The export is kept under the work folder and reused.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from learnscore.bench.results import write_result

RESPONSES_PER_SUBMISSION = 30  # the simulator's diagnostics (to size the history)
_SAMPLE_S = 0.2


def run_import_benchmark(config, *, rows: int = 2_000_000, file_format: str = "csv", workdir: Path | None = None,
                         mapping: Path | None = None, output: Path = Path("bench/results/import.json")
                         ) -> dict[str, Any]:
    from learnscore.simulator.export import write_export
    from learnscore.simulator.history import HistoryOptions, write_history

    home = Path(workdir or Path(config.state_dir) / "bench" / "import")
    mapping = Path(mapping or Path(__file__).resolve().parents[1] / "examples" / "mappings" / "warehouse-long.yaml")
    if not mapping.is_file():
        raise FileNotFoundError(f"mapping {mapping} not found: run from a checkout (examples/mappings/) or "
                                f"pass --mapping")
    export = home / f"export-{rows}-{file_format}"
    answers, outcomes = export / f"answers.{file_format}", export / f"outcomes.{file_format}"
    if not answers.exists():
        learners = math.ceil(rows / RESPONSES_PER_SUBMISSION * 1.1)
        write_history(home / "history", HistoryOptions(learners=learners, days=60, seed=17,
                                                       end=datetime(2026, 11, 1, tzinfo=timezone.utc)))
        write_export(home / "history", export, file_format=file_format, max_rows=rows)  # type: ignore[arg-type]
    runs = {}
    for phase, extra in (("stage", ["--dry-run"]), ("import", [])):
        lake = home / f"lake-{phase}"
        shutil.rmtree(lake, ignore_errors=True)
        report = home / f"report-{phase}.json"
        command = [sys.executable, "-m", "learnscore", "import", str(answers), "--outcomes", str(outcomes),
                   "--mapping", str(mapping), "--report", str(report), *extra]
        env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
               "LEARNSCORE__LAKE__ROOT": str(lake / "lake"),
               "LEARNSCORE__LAKE__CHECKPOINTS": str(lake / "checkpoints")}
        runs[phase] = {**_measure(command, env, home / f"{phase}.log"),
                       "summary": json.loads(report.read_text())}
    result = {
        "benchmark": "import",
        "command": f"learnscore bench import --rows {rows} --format {file_format}",
        "file": {"path": str(answers), "format": file_format, "bytes": answers.stat().st_size,
                 "rows": runs["stage"]["summary"]["submissions"]["records"],
                 "submissions": runs["stage"]["summary"]["submissions"]["events"]},
        "runs": {phase: {key: value for key, value in run.items() if key != "summary"} | {
            "seconds_by_phase": run["summary"]["seconds"],
            "landed": run["summary"]["submissions"]["landed"]} for phase, run in runs.items()},
    }
    return write_result(result, output)


def _measure(command: list[str], env: dict[str, str], log_path: Path) -> dict[str, Any]:
    """Run ``command`` to completion; wall time, peak RSS of its process tree and of itself."""
    import psutil

    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(_rss(p) for p in tree))
            except psutil.NoSuchProcess:
                return
            done.wait(_SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # wait4: the kernel's peak RSS of this child (the largest of it and its waited-for children).
    _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    if code != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed (exit {code}); see {log_path}")
    return {"seconds": round(time.monotonic() - started, 1), "peak_tree_rss_mib": round(peak[0] / 2**20),
            "peak_python_rss_mib": round(usage.ru_maxrss / 1024)}


def _rss(process) -> int:
    import psutil

    try:
        return process.memory_info().rss
    except psutil.NoSuchProcess:
        return 0
