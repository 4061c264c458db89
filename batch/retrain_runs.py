"""The ledger of retrain runs, ``ops.retrain_runs`` (append-only, written with ``deltalake``).

A run writes a ``started`` row before it trains and one final row when it ends:
``succeeded`` (a version was registered; promoted if the policy allowed), ``refused`` (the
gates refused to promote it), ``failed`` (an error that retrying cannot mend). A request that
broke its contract gets one ``invalid`` row. A run whose MLflow / registry calls still failed
after the retries ends its attempt ``deferred``: not final, its requests stay unacknowledged
and are run again later. The ledger is what makes the worker idempotent: a request that appears
in a final row is done; one with only ``started`` or ``deferred`` rows is run again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from learnscore.core.config import Config
from learnscore.core.lake import append_rows, read_table
from learnscore.schemas.tables import RETRAIN_RUNS

log = logging.getLogger(__name__)

FINAL_STATUSES = ("succeeded", "refused", "failed", "invalid")
DEFERRED = "deferred"  # an attempt that ended with MLflow unreachable: not final


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

    def finished(self, status: str, **changes: Any) -> RetrainRun:
        """The row that ends this attempt: a final status, or :data:`DEFERRED`."""
        if status not in (*FINAL_STATUSES, DEFERRED):
            raise ValueError(f"{status!r} is not a final status ({', '.join(FINAL_STATUSES)}) "
                             f"or {DEFERRED!r}")
        return replace(self, status=status, finished_at=datetime.now(timezone.utc), **changes)

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["request_ids"] = json.dumps(list(self.request_ids))
        row["data_versions"] = json.dumps(self.data_versions, sort_keys=True, default=str)
        return row


def record_run(config: Config, run: RetrainRun) -> None:
    """Append one row (one Delta commit)."""
    append_rows(config, RETRAIN_RUNS.name, [run.as_row()])
    log.info("retrain run %s: %s%s", run.run_id, run.status,
             f" ({run.message})" if run.message else "")


def request_statuses(config: Config) -> dict[str, str]:
    """Request id → its final status, else the status of its last attempt (``started`` when it
    was interrupted, ``deferred`` when MLflow was away)."""
    frame = runs(config)  # attempts in order: a later attempt's status replaces an earlier one
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
