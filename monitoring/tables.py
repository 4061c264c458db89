"""Reading the gold and ops Delta tables for the dashboard, Spark-free, while the stream writes.

Each table is re-read only when its Delta version moved; a read that races a commit (a file
listed by the log but not yet visible, a log entry half-seen) is retried, and a table that
does not exist yet reads as empty.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import pandas as pd

from learnscore.core.config import Config
from learnscore.core.waiting import RetriesExhausted, retry
from learnscore.schemas.tables import TABLES

log = logging.getLogger(__name__)

# What each panel needs: only these columns are read.
COLUMNS: dict[str, list[str]] = {
    "ops.endpoint_requests": ["request_id", "received_at", "status_code", "latency_ms",
                              "model_version", "route", "items", "error_code"],
    "ops.stream_progress": ["query", "batch_id", "started_at", "duration_s", "rows_read", "submissions_valid",
                            "quarantined", "duplicates", "scored", "failed", "pending_unscored",
                            "latency_p50_s", "latency_p95_s", "latency_p99_s", "model_version"],
    "silver.quarantine": ["quarantined_at", "reason_code"],
    "ops.drift_events": ["detected_at", "kind", "detector", "signal", "segment", "statistic",
                         "mean_before", "mean_after", "model_version", "request_id"],
    "ops.drift_metrics": ["computed_at", "window_end", "segment", "feature", "psi", "ks", "js"],
    "ops.model_events": ["occurred_at", "event_type", "version", "alias", "previous_version",
                         "actor", "reason"],
    "gold.prediction_outcomes": ["event_id", "model_version", "abs_error", "level_correct", "outcome_time",
                                 "joined_at"],
    "gold.shadow_prediction_outcomes": ["event_id", "model_version", "model_alias", "abs_error", "level_correct",
                                        "outcome_time", "joined_at"],
    "gold.predictions": ["progress_score", "comprehension_level", "model_version", "scored_at", "subject",
                         "grade_level", "rapid_guess_share", "low_effort"],
    "ops.estimated_performance": ["model_version", "segment", "window_start", "window_end", "n_rows", "n_labelled",
                                  "estimated_macro_f1", "realized_macro_f1", "estimated_mae", "realized_mae"],
    "ops.item_flags": ["item_id", "flag", "direction", "status", "flagged_at", "model_version", "evidence",
                       "reviewed_by"],
}


@dataclass
class _Cached:
    table: object | None
    version: int | None
    frame: pd.DataFrame


class TableReader:
    """Cached, retrying reads of the dashboard's tables (thread-safe)."""

    def __init__(self, config: Config, retries: int = 3):
        self.config = config
        self.retries = retries
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def read(self, name: str) -> pd.DataFrame:
        """The table's dashboard columns; an empty frame with those columns when it is missing."""
        def read_once() -> pd.DataFrame:
            try:
                return self._read(name)
            except Exception:  # a commit raced the read: drop the cached snapshot, read again from the log
                self._cache.pop(name, None)
                raise

        with self._lock:
            fallback = self._cache.get(name)
            try:
                return retry(read_once, what=f"reading {name}", attempts=self.retries + 1, backoff_s=0.1,
                             max_backoff_s=1.0, transient=(Exception,))
            except RetriesExhausted as exc:
                log.warning("%s; showing the last snapshot read", exc)
                return fallback.frame if fallback else self._empty(name)

    def _read(self, name: str) -> pd.DataFrame:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        cached = self._cache.get(name)
        if cached is None or cached.table is None:
            try:
                table = DeltaTable(self.config.table_path(name))
            except TableNotFoundError:
                return self._empty(name)
        else:
            table = cached.table
            table.update_incremental()
        version = table.version()
        if cached is not None and cached.table is table and cached.version == version:
            return cached.frame
        frame = table.to_pandas(columns=COLUMNS[name])
        self._cache[name] = _Cached(table, version, frame)
        return frame

    @staticmethod
    def _empty(name: str) -> pd.DataFrame:
        kinds = dict(TABLES[name].columns)
        return pd.DataFrame({column: pd.Series(dtype="datetime64[us, UTC]" if kinds[column] == "timestamp"
                                               else "object") for column in COLUMNS[name]})
