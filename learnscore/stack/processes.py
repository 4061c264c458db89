"""Background processes the project starts itself: pid files, liveness, clean stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from learnscore.core.waiting import WaitStopped, WaitTimedOut, wait_until

# Every process we start refuses pickle-based model formats (models load through skops only),
# whatever the environment it was started from says.
SAFE_ENV = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}


class StackError(RuntimeError):
    """A local service cannot start or stop; the message says why and what to do."""


@dataclass
class ProcessRecord:
    """What ``up`` started, written next to the service's log so ``down`` stops exactly that."""

    name: str
    pid: int
    create_time: float
    command: list[str]
    log_file: str
    endpoint: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def is_running(self) -> bool:
        # The create time guards against a recycled pid that now belongs to someone else.
        try:
            process = psutil.Process(self.pid)
            return (abs(process.create_time() - self.create_time) < 1.0
                    and process.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False


def start_background(name: str, command: list[str], log_file: Path, endpoint: str,
                     env: dict[str, str] | None = None, cwd: Path | None = None) -> ProcessRecord:
    """Start ``command`` detached in its own session, output appended to ``log_file``.

    The child gets the environment plus ``env`` plus :data:`SAFE_ENV` (which wins).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {}), **SAFE_ENV}, cwd=cwd, start_new_session=True,
        )
    return ProcessRecord(
        name=name, pid=process.pid, create_time=psutil.Process(process.pid).create_time(),
        command=command, log_file=str(log_file), endpoint=endpoint,
    )


def stop_process(record: ProcessRecord, timeout_s: float = 30.0, *, leader_first: bool = False,
                 hurry: threading.Event | None = None) -> bool:
    """SIGTERM the process group ``record`` started, then SIGKILL after ``timeout_s``.

    ``leader_first``: SIGTERM the leading process only and give it ``timeout_s`` (cut short
    when ``hurry`` is set) to finish its work in flight and stop what it started itself — the
    scorer its micro-batch and its JVM; whatever of the group is left then gets the treatment
    above, with 10 s before SIGKILL.
    """
    if not record.is_running():
        return False
    try:
        if leader_first:
            os.kill(record.pid, signal.SIGTERM)
        else:
            os.killpg(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    try:
        wait_until(lambda: not record.is_running(), timeout_s, f"pid {record.pid} to stop", interval_s=0.2,
                   stop=hurry)
    except (WaitTimedOut, WaitStopped):
        pass  # escalate below
    if record.is_running():
        if leader_first:
            stop_process(record, timeout_s=10)
            return True
        try:
            os.killpg(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:  # reap it when it is our own child (tests start the stack in-process)
        os.waitpid(record.pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


def wait_http(url: str, timeout_s: float, *, ready: Callable[[int], bool] = lambda status: status < 500,
              check: Callable[[], None] | None = None, interval_s: float = 1.0) -> bool:
    """Poll ``url`` until its HTTP status is ``ready``; False when ``timeout_s`` passes first.

    ``check`` runs before every try and raises to give up early (the process died, a stop was
    asked).
    """
    import httpx

    def answers() -> bool:
        try:
            return ready(httpx.get(url, timeout=2).status_code)
        except httpx.HTTPError:
            return False

    try:
        return wait_until(answers, timeout_s, url, interval_s=interval_s, check=check)
    except WaitTimedOut:
        return False


def tail(path: Path | str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log yet)"
