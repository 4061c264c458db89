"""Benchmark: contract validation speed (``learnscore bench validation``).

The same seeded simulated submissions every run (seed 7, 50,000 by default, ~4.2 KB each), as
raw bytes; each is validated the way the stream and the endpoint do it
(:func:`learnscore.schemas.events.validate_bytes`): decode, check every field, return the event
or the reasons. Best of three passes on one core; ``decode_only`` is orjson parsing alone, the
floor any validator in Python pays. The figure of the validator this replaced is kept in the
JSON for comparison (measured the same way at commit 618dcf6).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from learnscore.bench.results import write_result

#: The exec-compiled validator of schemas/contract.py before pydantic (commit 618dcf6), same
#: 50,000 events, same method, on the project machine (2 cores, idle: load 0.9).
PREVIOUS = {"validator": "orjson + exec-compiled acceptor (commit 618dcf6)", "events_per_s": 25_532,
            "events": 50_000, "load_average": [0.89, 0.54, 0.23]}


def run_validation_benchmark(events: int = 50_000, output: Path = Path("bench/results/validation.json"),
                             repeats: int = 3) -> dict[str, Any]:
    from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, validate_bytes
    from learnscore.simulator.generator import Simulator

    simulator = Simulator(seed=7, start=datetime(2026, 11, 1, tzinfo=timezone.utc), interval_s=0.01)
    raw = [orjson.dumps(event) for event in simulator.take(events).submissions]
    now = datetime.now(timezone.utc)

    def best_of(function) -> float:
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            function()
            best = min(best, time.perf_counter() - started)
        return best

    valid = sum(validate_bytes(DIAGNOSTIC_SUBMITTED, value, now).ok for value in raw)
    seconds = best_of(lambda: [validate_bytes(DIAGNOSTIC_SUBMITTED, value, now) for value in raw])
    decode = best_of(lambda: [orjson.loads(value) for value in raw])
    result = {
        "benchmark": "validation",
        "command": f"learnscore bench validation --events {events}",
        "validator": "pydantic-core strict TypedDict (learnscore.schemas.contract)",
        "events": events, "valid": valid, "mean_bytes": round(sum(map(len, raw)) / len(raw), 1),
        "seconds": round(seconds, 3), "events_per_s": round(events / seconds, 1),
        "decode_only_events_per_s": round(events / decode, 1),
        "previous": PREVIOUS,
    }
    return write_result(result, output)
