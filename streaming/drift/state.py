"""The drift state file: detector state + the last applied batch id, written atomically.

Format and security stance: plain JSON (``json`` module), written and read only by the stream
that owns the checkpoint folder it lives in. Nothing in it is executable: River's ADWIN window
is stored as the bytes River itself serialises its Rust struct to (numbers only, base64), and
restoring it decodes numbers — there is no pickle and no code path from file content to code.
A tampered file can at worst make the detectors alarm or stay quiet, which is why it lives with
the stream's checkpoint, under the same access control. A file that is not valid JSON or of an
unknown format is refused with a message, never guessed at.

Exactly once: the monitor state, ``last_batch_id`` and the outputs not yet written (the
*outboxes*) are replaced in one atomic step (temp file, fsync, rename, fsync of the folder). A
batch replayed after a crash (``batch_id <= last_batch_id``) therefore never feeds the
detectors again, and its outputs can be re-emitted from the saved outboxes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_FORMAT = "learnscore.drift-state/1"


class DriftStateError(RuntimeError):
    """The drift state file cannot be used; the message names the file and what to do."""


@dataclass
class DriftState:
    """What the file holds. ``outbox`` is ``{"unsent": [...]}``: the outputs (rows and events) of
    applied batches not yet known to be written, oldest first."""

    monitor: dict[str, Any] | None = None
    last_batch_id: int = -1
    outbox: dict[str, Any] = field(default_factory=dict)


class DriftStateStore:
    """Load and atomically replace the drift state at ``path`` (a local file)."""

    def __init__(self, path: str | os.PathLike):
        text = str(path)
        if "://" in text and not text.startswith("file://"):
            raise DriftStateError(
                f"drift state must live on a local (POSIX) filesystem for its atomic rename; "
                f"got {text}. Point the stream's checkpoint (lake.checkpoints) at a local or "
                f"mounted folder, or give the drift hook a local state_path")
        self.path = Path(text.removeprefix("file://"))

    def load(self) -> DriftState:
        """The saved state, or a fresh one when there is no file yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return DriftState()
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise DriftStateError(
                f"drift state {self.path} is not valid JSON ({exc}); it is written atomically, "
                f"so it was changed by hand or by another program. Restore it or delete it "
                f"(the detectors then learn their references afresh)") from None
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise DriftStateError(f"drift state {self.path} has format {found!r}, expected "
                                  f"{FILE_FORMAT!r}; delete it to start the detectors afresh")
        return DriftState(monitor=data["monitor"], last_batch_id=int(data["last_batch_id"]),
                          outbox=data.get("outbox") or {})

    def save(self, state: DriftState) -> None:
        """Replace the file with ``state`` in one atomic step."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"format": FILE_FORMAT, "last_batch_id": state.last_batch_id,
                              "outbox": state.outbox, "monitor": state.monitor},
                             separators=(",", ":"), allow_nan=False).encode("utf-8")
        handle, temp_name = tempfile.mkstemp(prefix=".drift-state-", dir=self.path.parent)
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(payload)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, self.path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def write_oldest_first(unsent: list[dict[str, Any]], write: Callable[[dict[str, Any]], None],
                       on_written: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
    """Write saved outboxes oldest first, dropping each from ``unsent`` once written; the first
    that fails raises (the stream logs it) and stays, to be tried with the next batch. In order,
    because Delta's ``txnVersion`` skips a batch id older than one it committed. ``on_written``
    gets the outboxes written, also when a later one failed: the hook saves its state there (so a
    restart does not write them, and announce them, again) and then announces them."""
    written: list[dict[str, Any]] = []
    try:
        while unsent:
            write(unsent[0])
            written.append(unsent.pop(0))
    finally:
        if written and on_written is not None:
            on_written(written)
