"""Where this machine's learnscore processes serve their metrics, for ``learnscore stack status``.

A process that opens an endpoint announces it: a small JSON file under
``<state_dir>/run/endpoints/`` with its name, URL, pid and the pid's start time. Readers list
the announcements whose process still runs (the start time guards against a recycled pid) and
delete the others, so a killed process leaves nothing behind for long.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import psutil

from learnscore.core.config import Config

log = logging.getLogger(__name__)


def endpoints_dir(config: Config) -> Path:
    return Path(config.state_dir) / "run" / "endpoints"


def announce_endpoint(config: Config, name: str, url: str) -> Path:
    """Record that this process serves ``url`` (e.g. its /metrics) as ``name``; returns the file
    (hand it to :func:`withdraw_endpoint` when the endpoint closes)."""
    folder = endpoints_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    path = folder / f"{name}-{pid}.json"
    path.write_text(json.dumps({"name": name, "url": url, "pid": pid,
                                "create_time": psutil.Process(pid).create_time()}))
    return path


def withdraw_endpoint(path: Path) -> None:
    path.unlink(missing_ok=True)


def announced_endpoints(config: Config) -> list[dict[str, Any]]:
    """The announcements of processes that still run, oldest first; stale files are removed."""
    folder = endpoints_dir(config)
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            process = psutil.Process(record["pid"])
            alive = abs(process.create_time() - record["create_time"]) < 1.0
        except (OSError, ValueError, KeyError, psutil.NoSuchProcess):
            alive = False
        except psutil.Error:
            alive = True  # cannot inspect it (another user): keep the record
        if alive:
            found.append(record)
        else:
            path.unlink(missing_ok=True)
    return found
