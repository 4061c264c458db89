"""One ``ops.stream_progress`` row per micro-batch of each query: what it read, landed, refused, scored.

The landing query appends its own row. The others (score, gold, pairs) send theirs to
``streaming.scorer-progress`` (:class:`ProgressPublisher`), and the landing query lands them in
the same append as its own row: a Delta commit costs about a second of CPU on two cores, and
those queries then make none for their bookkeeping (the scoring query none at all).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import orjson

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """Counters of one micro-batch of one query, filled in as its handler goes.

    ``latency_*`` are the query's own latency: event time → published score for ``score``,
    event time → the gold row's commit for ``gold``.
    """

    query: str
    batch_id: int
    started_at: datetime
    rows_read: int = 0
    submissions_valid: int = 0
    quarantined: int = 0
    duplicates: int = 0
    scored: int = 0
    failed: int = 0
    pending_unscored: int | None = 0  # None: the broker could not say
    outcomes: int = 0
    endpoint_requests: int = 0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_p99_s: float | None = None
    model_version: str | None = None
    model_status: str | None = None
    duration_s: float = 0.0
    query_id: str | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # stage → seconds (not in the row)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def row(self) -> dict:
        """The ``ops.stream_progress`` row.

        >>> report = BatchReport("score", 7, datetime(2026, 1, 1), rows_read=3, model_status="no_model")
        >>> report.note("no production model: 3 submissions wait")
        >>> row = report.row()
        >>> row["query"], row["batch_id"], row["rows_read"], row["message"]
        ('score', 7, 3, 'no production model: 3 submissions wait')
        """
        values = asdict(self)
        notes = values.pop("notes")
        values.pop("timings")
        return {**values, "message": "; ".join(notes) or None}

    def summary(self) -> str:
        """One status line for the log."""
        latency = f" p95 {self.latency_p95_s:.2f}s" if self.latency_p95_s is not None else ""
        return (f"{self.query} batch {self.batch_id}: read {self.rows_read}, valid {self.submissions_valid}, "
                f"quarantined {self.quarantined} (dup {self.duplicates}), scored {self.scored}, "
                f"failed {self.failed}, pending {self.pending_unscored}, outcomes {self.outcomes}, "
                f"requests {self.endpoint_requests}, model {self.model_version or '-'} "
                f"[{self.model_status or '-'}]{latency}")


class ProgressPublisher:
    """Sends batch reports to ``streaming.scorer-progress`` (key: the query id); the landing query
    lands them (a replay's second record has the same query id and batch id: the first is kept).
    Shared by the queries of one process (kafka-python's producer is thread-safe)."""

    def __init__(self, config, names):
        self.config, self.topic = config, names.progress
        self._producer = None
        self._lock = threading.Lock()

    def send(self, report: BatchReport) -> None:
        """Send the batch's report; never fail the batch on it. What the batch wrote is already
        written: a broker away (its outage) leaves the record to the producer, which keeps retrying
        it until ``delivery_timeout_ms``, and a warning here; the report stays in /metrics."""
        from kafka.errors import KafkaError

        from learnscore.core.kafka_io import BrokerUnreachable, producer

        row = report.row()
        row["duration_s"] = round((datetime.now(timezone.utc) - report.started_at).total_seconds(), 3)
        value = orjson.dumps(row, default=_iso)
        try:
            with self._lock:  # read under the lock: close() may run on another thread
                if self._producer is None:
                    self._producer = producer(self.config)
                client = self._producer
            # A send racing close() raises IllegalStateError, a KafkaError: warned below.
            client.send(self.topic, key=(report.query_id or "").encode(), value=value).get(
                timeout=self.config.kafka.request_timeout_s)
        except (KafkaError, BrokerUnreachable) as exc:
            log.warning("%s batch %s: its progress record was not acknowledged in %gs (%s); the "
                        "producer keeps trying while the broker is away", report.query, report.batch_id,
                        self.config.kafka.request_timeout_s, type(exc).__name__)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None


def _iso(value):
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")
