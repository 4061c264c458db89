"""How often a micro-batch was tried: a batch that keeps failing must not be replayed forever.

Spark re-runs a failed micro-batch with the same offsets on every restart. A batch that fails
for its content (a message that crashes the decoder, a batch too large for memory) would stop
the stream for good. Each query counts its attempts of the batch in flight in a small file
beside its checkpoint; on attempt ``streaming.max_batch_attempts`` the handler does not process
the batch's content at all: it copies the raw messages to ``silver.quarantine`` with reason
``poison_batch`` (bytes and Kafka coordinates, nothing decoded) and lets the stream move on.
They can be sent again once the cause is fixed (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class AttemptLog:
    """``begin(batch_id)`` returns the attempt number (1 for the first), ``done(batch_id)`` clears it.

    >>> import tempfile
    >>> log = AttemptLog(tempfile.mkdtemp())
    >>> log.begin(4), log.begin(4), log.begin(5)
    (1, 2, 1)
    >>> log.done(5); log.begin(5)
    1
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(str(folder).removeprefix("file://")) / "batch-attempts.json"

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def begin(self, batch_id: int) -> int:
        current = self._read()
        attempt = current.get("attempt", 0) + 1 if current.get("batch_id") == batch_id else 1
        self._write({"batch_id": batch_id, "attempt": attempt})
        return attempt

    def done(self, batch_id: int) -> None:
        if self._read().get("batch_id") == batch_id:
            self._write({})

    def _write(self, value: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, self.path)
