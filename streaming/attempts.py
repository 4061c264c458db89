"""How often a micro-batch failed: a batch that keeps failing must not be replayed forever.

Spark re-runs a failed micro-batch with the same offsets on every restart. A batch that fails
for its content (a message that crashes a handler) would stop the stream for good. Each query
counts the failures (exceptions) of the batch in flight in a small file beside its checkpoint;
once a batch failed ``streaming.max_batch_attempts - 1`` times, its next attempt does not
process the content at all: the landing query copies the raw messages to ``silver.quarantine``
with reason ``poison_batch`` (bytes and Kafka coordinates, nothing decoded), the scoring query
parks the rows on the retries topic; the stream moves on. They can be sent again once the cause
is fixed (docs/reliability.md).

A process killed in the middle of a batch (Ctrl-C twice, SIGKILL, a machine that dies) is not a
failure of the batch: it is not counted, and the batch simply runs again. Memory is bounded per
batch instead: ``maxOffsetsPerTrigger`` messages at most, handed to Python 1,000 at a time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class AttemptLog:
    """``failed_before(batch_id)`` says how often the batch failed; ``failed(batch_id)`` records one
    more failure; ``done()`` clears the log when a batch succeeded.

    >>> import tempfile
    >>> log = AttemptLog(tempfile.mkdtemp())
    >>> log.failed_before(4)
    0
    >>> log.failed(4); log.failed(4); log.failed_before(4), log.failed_before(5)
    (2, 0)
    >>> log.done(); log.failed_before(4)
    0
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(str(folder).removeprefix("file://")) / "batch-failures.json"

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def failed_before(self, batch_id: int) -> int:
        current = self._read()
        return current.get("failures", 0) if current.get("batch_id") == batch_id else 0

    def failed(self, batch_id: int) -> None:
        self._write({"batch_id": batch_id, "failures": self.failed_before(batch_id) + 1})

    def done(self) -> None:
        if self.path.exists():
            self._write({})

    def _write(self, value: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, self.path)
