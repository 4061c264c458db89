"""How a benchmark writes its figures: the result, the machine it ran on and when, as JSON."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def write_result(result: dict[str, Any], output: Path | str) -> dict[str, Any]:
    """``result`` with ``machine`` (cores, Python, load) and ``measured_at`` added, written to ``output``."""
    result = {**result,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average": [round(x, 2) for x in os.getloadavg()]},
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    return result
