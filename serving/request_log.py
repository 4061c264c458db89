"""The endpoint's inference log: one JSON record per request to Kafka ``serving.requests``.

The request path only appends to a bounded in-memory queue; a background thread sends. When
the broker is away, records wait in the queue (nothing is lost while it has room) and go out
when the broker is back; a full queue drops new records and counts them, so a dead broker can
neither block requests nor exhaust memory.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from learnscore.core.config import Config
from learnscore.schemas.topics import ENDPOINT_REQUESTS

log = logging.getLogger(__name__)

# The fields of ops.endpoint_requests the endpoint fills (the stream adds the Kafka coordinates).
RECORD_FIELDS = ("request_id", "received_at", "status_code", "latency_ms", "model_name",
                 "model_version", "route", "items", "error_code", "error")


def rfc3339(moment: datetime) -> str:
    """UTC RFC 3339 with milliseconds and a ``Z``.

    >>> rfc3339(datetime(2026, 1, 31, 9, 30, 0, 123456, tzinfo=timezone.utc))
    '2026-01-31T09:30:00.123Z'
    """
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def request_record(request_id: str, received_at: datetime, status_code: int, latency_ms: float,
                   model_name: str | None = None, model_version: str | None = None,
                   route: str | None = None, items: int = 0, error_code: str | None = None,
                   error: str | None = None) -> dict[str, Any]:
    """A request-log record with exactly the field names of ``ops.endpoint_requests``.

    >>> sorted(request_record("r1", datetime(2026, 1, 1, tzinfo=timezone.utc), 200, 1.5)) == sorted(RECORD_FIELDS)
    True
    """
    return {"request_id": request_id, "received_at": rfc3339(received_at),
            "status_code": status_code, "latency_ms": round(latency_ms, 3),
            "model_name": model_name, "model_version": model_version, "route": route,
            "items": items, "error_code": error_code, "error": (error or None) and error[:500]}


class RefusalSampler:
    """Which refused requests (401, 429) are written to the request log: the first of each
    status, then one in every ``round(1 / share)``; none when ``share`` is 0.

    Every refusal is counted in /metrics; only this share takes a place in the bounded queue,
    so a flood of bad keys cannot push the records of real requests out. Counting instead of
    drawing at random makes the number written exact: N refusals give ceil(N * share) records.

    >>> sampler = RefusalSampler(0.25)
    >>> [sampler.keep(401) for _ in range(6)], sampler.keep(429)
    ([True, False, False, False, True, False], True)
    >>> RefusalSampler(0.0).keep(401), RefusalSampler(1.0).keep(401)
    (False, True)
    """

    def __init__(self, share: float):
        self.every = 0 if share <= 0 else max(1, round(1 / share))
        self._seen: collections.Counter[int] = collections.Counter()

    def keep(self, status: int) -> bool:
        if self.every == 0:
            return False
        seen = self._seen[status]
        self._seen[status] += 1
        return seen % self.every == 0


@dataclass
class LogCounters:
    """What /metrics shows about the log (plain ints; read without a lock is fine for metrics)."""

    sent: int = 0
    dropped: int = 0
    send_failures: int = 0
    broker_connected: bool = False
    last_error: str | None = field(default=None)


class RequestLog:
    """Bounded queue + background kafka-python producer (``learnscore.core.kafka_io.producer``)."""

    def __init__(self, config: Config, capacity: int | None = None,
                 producer_factory: Callable[[], Any] | None = None, batch_size: int = 500,
                 flush_interval_s: float = 0.1):
        from learnscore.core.kafka_io import producer

        self.topic = config.topic(ENDPOINT_REQUESTS)
        self.capacity = capacity or config.serving.request_log_capacity
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.counters = LogCounters()
        self._config = config
        self._factory = producer_factory or (lambda: producer(
            config, max_block_ms=2000, delivery_timeout_ms=30000, linger_ms=20))
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer = None

    @property
    def queued(self) -> int:
        """Records accepted but not yet confirmed by the broker."""
        return len(self._pending) + self._in_flight

    def record(self, entry: dict[str, Any]) -> bool:
        """Queue one record; ``False`` (and counted as dropped) when the queue is full."""
        with self._lock:
            if len(self._pending) + self._in_flight >= self.capacity:
                self.counters.dropped += 1
                return False
            self._pending.append(entry)
        if not self._wake.is_set():
            self._wake.set()
        return True

    # -- the sender thread -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.5
        while True:
            if self._stop.is_set() and (not self._pending or not self.counters.broker_connected):
                return  # stopping: leave once everything is out or the broker is away
            if not self._pending:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            if self._producer is None and not self._connect():
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.5
            if not self._send_batch():
                self._stop.wait(1.0)
            else:
                # Let records gather: one send per interval instead of one wake-up per request
                # keeps this thread (and Kafka's) off the request path's GIL.
                self._stop.wait(self.flush_interval_s)

    def _connect(self) -> bool:
        from learnscore.core.kafka_io import BrokerUnreachable, create_topics

        try:
            self._producer = self._factory()
            try:
                create_topics(self._config, [ENDPOINT_REQUESTS])
            except Exception as exc:  # noqa: BLE001 - the broker may auto-create; sending will tell
                log.debug("could not ensure topic %s: %s", self.topic, exc)
        except BrokerUnreachable as exc:
            self._note_down(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - any failure to connect: noted, retried
            self._note_down(f"{type(exc).__name__}: {exc}")
            return False
        if not self.counters.broker_connected:
            log.info("request log connected to Kafka; %d records waiting", self.queued)
        self.counters.broker_connected = True
        self.counters.last_error = None
        return True

    def _note_down(self, message: str) -> None:
        if self.counters.broker_connected or self.counters.last_error is None:
            log.warning("request log cannot reach Kafka (%s); keeping up to %d records in memory",
                        message, self.capacity)
        self.counters.broker_connected = False
        self.counters.last_error = message

    def _send_batch(self) -> bool:
        """Send up to ``batch_size`` records and wait for the broker; failures go back in front."""
        with self._lock:
            batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
            self._in_flight = len(batch)
        futures: list[tuple[dict[str, Any], Any]] = []
        failed: list[dict[str, Any]] = []
        for entry in batch:
            try:
                futures.append((entry, self._producer.send(
                    self.topic, key=entry["request_id"].encode(), value=orjson.dumps(entry))))
            except Exception as exc:  # noqa: BLE001 - metadata unavailable in max_block_ms, buffer full
                failed.append(entry)
                self._note_down(f"{type(exc).__name__}: {exc}")
        for entry, future in futures:
            try:
                # Delivery is retried by the producer until delivery_timeout_ms; wait for it.
                future.get(timeout=60)
                self.counters.sent += 1
            except Exception as exc:  # noqa: BLE001 - undelivered: kept for the next try
                failed.append(entry)
                self._note_down(f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._pending.extendleft(reversed(failed))
            self._in_flight = 0
        if failed:
            self.counters.send_failures += len(failed)
            return False
        if not self.counters.broker_connected:
            log.info("request log reaches Kafka again; %d records waiting", self.queued)
        self.counters.broker_connected = True
        self.counters.last_error = None
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (for up to ``timeout_s``), then close the producer."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.queued:
            log.warning("request log stopped with %d records not delivered to Kafka", self.queued)
        if self._producer is not None:
            try:
                self._producer.close(timeout=max(0.5, deadline - time.monotonic()))
            except Exception:
                log.debug("request-log producer close failed", exc_info=True)
