"""One scorer per checkpoint: a lease file the running scorer holds and renews.

Two scorers on one checkpoint would each run the same micro-batches and race on the same
commits; Spark itself only notices when both commit the same batch. The lease is a small JSON
file beside the checkpoints (owner, host, pid, renewed_at), created with an exclusive create, so
of two starting scorers exactly one wins, and renewed every ``renew_seconds`` by the holder. A
scorer that finds a lease renewed within ``ttl_seconds`` refuses to start and names the holder;
a lease left behind by a killed scorer expires after ``ttl_seconds`` (or at once when its pid
is gone on this host).

The exclusive create is ``open(path, "x")``: atomic on a local or POSIX-mounted filesystem,
where the checkpoints of the embedded default live. On object storage the checkpoint location
needs a store with conditional writes, or one scorer deployment per checkpoint by other means
(docs/cluster.md).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

LEASE_FILE = "scorer.lease"


class LeaseHeld(RuntimeError):
    """Another scorer holds the lease; the message names it and says what to do."""


@dataclass(frozen=True)
class Lease:
    owner: str
    host: str
    pid: int
    acquired_at: float
    renewed_at: float


class CheckpointLease:
    """``acquire()`` before starting the queries, ``release()`` after stopping them.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> first, second = CheckpointLease(folder), CheckpointLease(folder)
    >>> first.acquire().pid == os.getpid()
    True
    >>> second.acquire()
    Traceback (most recent call last):
    ...
    learnscore.streaming.lease.LeaseHeld: ...
    >>> first.release(); second.acquire().owner == second.owner
    True
    >>> second.release()
    """

    def __init__(self, folder: str | os.PathLike, *, ttl_seconds: float = 60.0, renew_seconds: float = 10.0,
                 clock=time.time):
        self.path = Path(str(folder).removeprefix("file://")) / LEASE_FILE
        # Renewed well inside the ttl whatever it is: a ttl shorter than the renewal period would
        # let a second scorer take a live scorer's lease.
        self.ttl_seconds, self.renew_seconds, self._clock = ttl_seconds, min(renew_seconds, ttl_seconds / 3), clock
        self.owner = str(uuid.uuid4())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> Lease | None:
        try:
            return Lease(**json.loads(self.path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def acquire(self) -> Lease:
        """Take the lease or raise :class:`LeaseHeld`; a stale lease is taken over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            current = self.holder()
            if current is not None and current.owner != self.owner:
                if not self._stale(current):
                    age = self._clock() - current.renewed_at
                    raise LeaseHeld(
                        f"another scorer holds the checkpoint {self.path.parent} (pid {current.pid} on "
                        f"{current.host}, lease renewed {age:.0f} s ago): one scorer per checkpoint. Stop it "
                        f"first, or wait {self.ttl_seconds:.0f} s after it died for its lease to expire")
                self._remove_if(current)
            now = self._clock()
            lease = Lease(self.owner, socket.gethostname(), os.getpid(), now, now)
            try:
                with open(self.path, "x") as handle:  # exclusive: of two starters, one wins
                    json.dump(asdict(lease), handle)
                return lease
            except FileExistsError:
                continue
        raise LeaseHeld(f"could not take the lease {self.path}: another scorer keeps taking it")

    def start_renewing(self) -> None:
        """Renew the lease from a daemon thread until :meth:`release`."""
        def renew() -> None:
            while not self._stop.wait(self.renew_seconds):
                self.renew()

        self._thread = threading.Thread(target=renew, name="scorer-lease", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        current = self.holder()
        if current is None or current.owner != self.owner:
            return  # taken over (we were presumed dead): the new holder's queries win
        renewed = Lease(**{**asdict(current), "renewed_at": self._clock()})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(renewed)))
        os.replace(tmp, self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = self.holder()
        if current is not None and current.owner == self.owner:
            self._remove_if(current)

    def _stale(self, lease: Lease) -> bool:
        if self._clock() - lease.renewed_at > self.ttl_seconds:
            return True
        if lease.host == socket.gethostname():
            try:
                os.kill(lease.pid, 0)
            except ProcessLookupError:
                return True  # its process is gone: no need to wait for the ttl
            except PermissionError:
                return False
        return False

    def _remove_if(self, lease: Lease) -> None:
        if self.holder() == lease:
            self.path.unlink(missing_ok=True)


class LeaseSet:
    """The leases of the queries one process runs (one per query checkpoint): all taken or none.

    One process may run every query, or the scoring query and the landing queries may run in
    two processes (``streaming.queries``); a second process for a query already running refuses.
    """

    def __init__(self, folders, **options):
        self.leases = [CheckpointLease(folder, **options) for folder in folders]

    def acquire(self) -> None:
        taken = []
        try:
            for lease in self.leases:
                lease.acquire()
                taken.append(lease)
        except BaseException:
            for lease in taken:
                lease.release()
            raise

    def start_renewing(self) -> None:
        for lease in self.leases:
            lease.start_renewing()

    def release(self) -> None:
        for lease in self.leases:
            lease.release()
