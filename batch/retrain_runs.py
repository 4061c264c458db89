"""The ledger of retrain runs, ``ops.retrain_runs`` (append-only, written with ``deltalake``).

A run is named after its first request (:func:`run_id_for`): a burst redelivered after a crash,
grown by requests that came meanwhile, is the same run. It writes a ``started`` row before each
attempt and one row when the attempt ends. Final: ``succeeded`` (a version was registered;
promoted if the policy allowed), ``refused`` (the gates refused to promote it), ``failed`` (it
failed ``retrain.failed_attempts`` times, or MLflow stayed away too long), ``covered`` (the
requests were made before another run began training, or report a drift that began before the
data of a promoted run ended, so that run's version answers them: no second version for one
burst, nor for one shift that segments detect minutes apart), and ``invalid`` for a request
that broke its contract. Not final: ``deferred`` (MLflow / the registry still failed after the
retries) and ``attempt_failed`` (an error, tried again after a back-off); their requests stay
unacknowledged and run again. The
ledger is what makes the worker idempotent: a request that appears in a final row is done.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from learnscore.core.config import Config
from learnscore.core.lake import append_rows, read_table
from learnscore.schemas.tables import RETRAIN_RUNS

log = logging.getLogger(__name__)

FINAL_STATUSES = ("succeeded", "refused", "failed", "invalid", "covered")
DEFERRED = "deferred"  # an attempt that ended with MLflow unreachable: not final
ATTEMPT_FAILED = "attempt_failed"  # an attempt that failed; the run is tried again after a back-off
COVERED = "covered"
#: Not stored: a concept-drift run still waiting for outcomes of post-onset submissions.
WAITING = "waiting"
#: A finished run of these answers the requests made before it began training.
TRAINED_STATUSES = ("succeeded", "refused")
RUN_NAMESPACE = uuid.UUID("7c9e2b54-1f0d-4a8e-b3c6-5d2a9e8f1b07")


def run_id_for(first_request_id: str) -> str:
    """A run's id: from its first request alone, so that it is the same run however the burst
    grew before a restart.

    >>> run_id_for("9b1d0e52-2f55-4c1e-9f31-0d8c6f0a1b2c") == run_id_for("9b1d0e52-2f55-4c1e-9f31-0d8c6f0a1b2c")
    True
    """
    return str(uuid.uuid5(RUN_NAMESPACE, first_request_id))


@dataclass(frozen=True)
class RetrainRun:
    """One row of ``ops.retrain_runs``; ``request_ids`` is the list of requests the run serves."""

    run_id: str
    trigger: str
    request_ids: tuple[str, ...]
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    mlflow_run_id: str | None = None
    model_version: str | None = None
    promoted: bool | None = None
    gate_report: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    data_versions: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    #: Not stored: after a ``deferred`` or ``attempt_failed`` attempt, seconds until the next one.
    retry_in_s: float | None = field(default=None, compare=False)

    def finished(self, status: str, **changes: Any) -> RetrainRun:
        """The row that ends this attempt: a final status, :data:`DEFERRED` or :data:`ATTEMPT_FAILED`."""
        if status not in (*FINAL_STATUSES, DEFERRED, ATTEMPT_FAILED):
            raise ValueError(f"{status!r} is not a final status ({', '.join(FINAL_STATUSES)}), "
                             f"{DEFERRED!r} or {ATTEMPT_FAILED!r}")
        return replace(self, status=status, finished_at=datetime.now(timezone.utc), **changes)

    @property
    def first_request_id(self) -> str:
        return self.request_ids[0]

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row.pop("retry_in_s")
        row["request_ids"] = json.dumps(list(self.request_ids))
        row["data_versions"] = json.dumps(self.data_versions, sort_keys=True, default=str)
        return row


def record_run(config: Config, run: RetrainRun) -> None:
    """Append one row (one Delta commit)."""
    append_rows(config, RETRAIN_RUNS.name, [run.as_row()])
    log.info("retrain run %s: %s%s", run.run_id, run.status,
             f" ({run.message})" if run.message else "")


def request_statuses(config: Config, frame=None) -> dict[str, str]:
    """Request id → its final status, else the status of its last attempt (``started`` when it
    was interrupted, ``deferred`` when MLflow was away, ``attempt_failed``); ``frame``: the
    ledger already read (:func:`runs`)."""
    frame = runs(config) if frame is None else frame  # attempts in order: a later one replaces
    statuses: dict[str, str] = {}
    for request_ids, status in zip(frame["request_ids"], frame["status"]):
        for request_id in json.loads(request_ids or "[]"):
            if statuses.get(request_id) not in FINAL_STATUSES:
                statuses[request_id] = status
    return statuses


def runs(config: Config):
    """The ledger as a pandas frame, oldest first."""
    frame = read_table(config, RETRAIN_RUNS.name)
    return frame.sort_values(["started_at", "finished_at"], na_position="first",
                             kind="stable").reset_index(drop=True)


def last_training_at(config: Config) -> datetime | None:
    """When the last run that registered a model started (``succeeded`` or ``refused``)."""
    frame = read_table(config, RETRAIN_RUNS.name, columns=["status", "started_at"])
    done = frame[frame["status"].isin(["succeeded", "refused"])]
    if done.empty:
        return None
    return done["started_at"].max().to_pydatetime()
