"""One retrain worker trains at a time: a lease in the Delta table ``ops.retrain_lease``.

Why a Delta table and not the registry: a registered-model tag has no compare step — two workers
that each write "mine" and read it back can both see their own write and both train. A Delta
commit is a put-if-absent of the log file for the next table version, so it is a compare-and-swap
on that version: a worker reads the lease at version N and writes its claim at exactly N + 1
(``max_commit_retries=0``); of two workers claiming at once, one commit lands and the other fails,
reads again and sees the winner. The lake is already where the ledger of runs lives, on every
deployment (on object storage it needs a store with conditional writes, as every Delta writer
there does: docs/cluster.md).

The table holds one row, replaced by each claim, renewal and release. The holder renews it every
``ttl / 4`` while it trains; a lease not renewed within ``ttl`` (its worker was killed) may be
taken over, at once when its process is gone from this host. A worker that finds the lease taken
waits and says by whom. Clocks: expiry compares the claimant's clock with the holder's, so the
ttl must be much longer than the clock skew between worker hosts.

Fencing: a worker that stalled past its ttl (a long GC pause, a frozen VM) does not know it lost
the lease until it looks. Every claim therefore takes a new **fencing token** (the previous one
plus one), and the worker calls :meth:`RetrainLease.fence` right before each thing it changes —
the ledger rows, registering a version, tagging it, promoting it; ``fence`` raises
:class:`LeaseLost` unless the row still names this worker and its token. MLflow cannot check a
token itself, so a worker that stalls in the moment between ``fence`` and the write it guards can
still make that one write; the ttl (minutes) against that moment (one call) makes it unlikely,
and the resuming worker finds such a version by its tags instead of training another.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone

from learnscore.core.config import Config
from learnscore.schemas.tables import RETRAIN_LEASE, arrow_schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseRow:
    """The one row of ``ops.retrain_lease``."""

    holder: str
    host: str
    pid: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    released: bool = False
    #: One more for every claim; the holder's writes are checked against it (:meth:`RetrainLease.fence`).
    token: int = 0

    def free_for(self, claimant: str, now: datetime) -> bool:
        """Whether ``claimant`` may take the lease at ``now``: its own, released, expired, or held
        by a process that no longer runs on this host.

        >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
        >>> row = LeaseRow("a", "elsewhere", 1, t, t, t + timedelta(seconds=60))
        >>> row.free_for("a", t), row.free_for("b", t), row.free_for("b", t + timedelta(seconds=61))
        (True, False, True)
        """
        if self.holder == claimant or self.released or now >= self.expires_at:
            return True
        return self.host == socket.gethostname() and not _process_exists(self.pid)

    def describe(self) -> str:
        return (f"worker {self.holder[:8]} (pid {self.pid} on {self.host}, token {self.token}, "
                f"until {self.expires_at:%H:%M:%S} UTC)")


class LeaseLost(RuntimeError):
    """This worker no longer holds the retrain lease: what it was about to do is left undone."""

    def __init__(self, what: str, token: int, current: LeaseRow | None):
        self.current = current
        holder = current.describe() if current else "nobody"
        super().__init__(f"not {what}: this worker's retrain lease (token {token}) was taken over or "
                         f"released ({holder} holds it now); the run is left to the holder, which "
                         f"resumes it (raise retrain.lease_ttl_seconds if this worker was only slow)")


class RetrainLease:
    """``held()`` around a run: waits for the lease, renews it meanwhile, releases it after."""

    def __init__(self, config: Config, *, ttl_seconds: float | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.config = config
        self.ttl = timedelta(seconds=ttl_seconds or config.retrain.lease_ttl_seconds)
        self.holder = str(uuid.uuid4())
        self._clock = clock
        self._path = config.table_path(RETRAIN_LEASE.name)
        self._renewer: threading.Thread | None = None
        self._stop_renewing = threading.Event()
        self.lost = False
        #: The fencing token of this worker's current claim (0: none yet).
        self.token = 0

    # -- one compare-and-swap ------------------------------------------------------------------
    def _read(self):
        """(table at its current version, the lease row or None)."""
        from deltalake import DeltaTable

        from learnscore.core.lake import ensure_deltalake_table

        try:
            ensure_deltalake_table(self.config, RETRAIN_LEASE.name)
        except Exception:  # two workers created it at once: the other one's is fine
            log.debug("ops.retrain_lease was created concurrently", exc_info=True)
        table = DeltaTable(self._path)
        rows = table.to_pyarrow_table().to_pylist()
        if not rows:
            return table, None
        row = rows[0]
        return table, LeaseRow(**{**{k: row.get(k) for k in LeaseRow.__dataclass_fields__},
                                  "token": row.get("token") or 0, "released": bool(row.get("released"))})

    def _swap(self, table, row: LeaseRow) -> bool:
        """Write ``row`` as the next version of ``table`` exactly; False when another commit won."""
        import pyarrow as pa
        from deltalake import CommitProperties, write_deltalake
        from deltalake.exceptions import CommitFailedError

        data = pa.Table.from_pylist([asdict(row)], schema=arrow_schema(RETRAIN_LEASE))
        try:
            write_deltalake(table, data, mode="overwrite",
                            commit_properties=CommitProperties(max_commit_retries=0))
            return True
        except CommitFailedError:
            return False

    # -- the lease -----------------------------------------------------------------------------
    def try_acquire(self) -> LeaseRow | None:
        """Take the lease if it is free; None when it is, else the row of the worker holding it."""
        for _ in range(5):
            table, current = self._read()
            now = self._clock()
            if current is not None and not current.free_for(self.holder, now):
                return current
            if current is not None and current.holder != self.holder and not current.released:
                log.warning("retrain lease of %s is stale: taking it over", current.describe())
            own = current is not None and current.holder == self.holder and not current.released
            token = current.token if own else (current.token if current else 0) + 1
            mine = LeaseRow(self.holder, socket.gethostname(), os.getpid(), now, now, now + self.ttl,
                            token=token)
            if self._swap(table, mine):
                self.lost = False
                self.token = token
                return None
        raise RuntimeError("could not take the retrain lease: the table ops.retrain_lease changed five "
                           "times in a row while claiming it")

    def acquire(self, stop: threading.Event | None = None, poll_seconds: float = 1.0) -> bool:
        """Wait for the lease; False when ``stop`` was set first."""
        stop = stop or threading.Event()
        waited_for: str | None = None
        while not stop.is_set():
            holder = self.try_acquire()
            if holder is None:
                if waited_for:
                    log.info("retrain lease taken after %s released or lost it", waited_for)
                return True
            if waited_for != holder.holder:
                log.info("another retrain worker trains now: %s; waiting for it", holder.describe())
                waited_for = holder.holder
            stop.wait(poll_seconds)
        return False

    def fence(self, what: str) -> None:
        """Raise :class:`LeaseLost` unless this worker still holds the lease with its token;
        call it right before each write the lease guards (``what`` names that write)."""
        _, current = self._read()
        if not self._mine(current):
            self.lost = True
            raise LeaseLost(what, self.token, current)

    def _mine(self, current: LeaseRow | None) -> bool:
        return (current is not None and current.holder == self.holder and current.token == self.token
                and not current.released)

    def renew(self) -> bool:
        """Extend the lease; False (and :attr:`lost`) when another worker holds it now."""
        for _ in range(5):
            table, current = self._read()
            if not self._mine(current):
                if not self.lost:
                    log.error("this retrain worker lost its lease (%s holds it): it was not renewed "
                              "within %.0f s; raise retrain.lease_ttl_seconds if this worker was only slow",
                              current.describe() if current else "nobody", self.ttl.total_seconds())
                self.lost = True
                return False
            now = self._clock()
            if self._swap(table, replace(current, renewed_at=now, expires_at=now + self.ttl)):
                return True
        return not self.lost

    def release(self) -> None:
        for _ in range(5):
            table, current = self._read()
            if not self._mine(current):
                return
            if self._swap(table, replace(current, released=True, renewed_at=self._clock())):
                return

    @contextlib.contextmanager
    def held(self, stop: threading.Event | None = None) -> Iterator[bool]:
        """Hold the lease for the block (renewed every ttl/4); yields False if ``stop`` came first."""
        if not self.acquire(stop):
            yield False
            return
        self._stop_renewing.clear()
        self._renewer = threading.Thread(target=self._renew_until_stopped, name="retrain-lease", daemon=True)
        self._renewer.start()
        try:
            yield True
        finally:
            self._stop_renewing.set()
            self._renewer.join(timeout=30)
            try:
                self.release()
            except Exception:  # an unreleased lease expires after the ttl
                log.warning("could not release the retrain lease; it expires in %.0f s",
                            self.ttl.total_seconds(), exc_info=True)

    def _renew_until_stopped(self) -> None:
        while not self._stop_renewing.wait(self.ttl.total_seconds() / 4):
            try:
                self.renew()
            except Exception:  # the next renewal tries again; the ttl is the margin
                log.warning("could not renew the retrain lease", exc_info=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
