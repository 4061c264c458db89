"""Alerts: one call, ``alert(kind, text, key=..., **fields)``, to the log and to a webhook.

Every accepted alert is logged (logger ``learnscore.alerts``, WARNING). With a webhook set
(``alerts.webhook_url``, or ``LEARNSCORE_ALERT_WEBHOOK_URL`` when the URL holds a token) it is
also POSTed as JSON that Slack's incoming webhooks understand (``text``, plus ``attachments``
with the fields) and that a generic receiver can read (``kind``, ``key``, ``fields``, ``env``,
``at``)::

    {"text": "[learnscore local] version 7 rolled back: ...", "kind": "model_rolled_back",
     "key": "7", "env": "local", "at": "2026-12-03T14:05:00Z", "fields": {"version": "7", ...},
     "attachments": [{"fields": [{"title": "version", "value": "7", "short": true}, ...]}]}

**One alert per incident.** An incident is ``(kind, key)`` (``key`` defaults to the text);
it alerts again only after ``alerts.dedupe_seconds``. Each kind is also rate-limited to
``alerts.max_per_hour``; both can be set per kind under ``alerts.kinds``.

**Never in the caller's way.** Delivery happens in a background thread with retries and
back-off; a dead or slow webhook, a full queue, an unserialisable field are logged and
counted, never raised. Only an unknown ``kind`` raises (a programming error).

Entry points call :func:`configure_alerts` once with the loaded config; library code and jobs
call :func:`alert`. Before ``configure_alerts`` alerts go to the log only.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("learnscore.alerts")

#: Every kind of alert, and when it is sent.
ALERT_KINDS: dict[str, str] = {
    "drift_detected": "a drift detector in the stream fired and its ops.drift_events rows were written",
    "retrain_requested": "the retrain worker started a run for drift, schedule or manual requests",
    "retrain_failed": "a retrain run failed, or was deferred because MLflow stayed away",
    "model_promoted": "a version became production",
    "model_rolled_back": "production went back to the previous version",
    "rollback_recommended": "the guard found the new version worse but its policy is alert-only",
    "endpoint_error_rate": "the REST endpoint's 5xx share over alerts.endpoint_error_window_seconds is "
                           "above alerts.endpoint_error_rate",
    "stream_lag": "event → score, or the wait of unscored submissions, is above alerts.stream_lag_seconds",
    "performance_below_floor": "estimated performance of a version is below a gates floor",
}


@dataclass(frozen=True)
class Alert:
    kind: str
    text: str
    key: str
    fields: dict[str, Any]
    env: str
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def payload(self) -> dict[str, Any]:
        """The JSON body the webhook receives (see the module docstring).

        >>> Alert("stream_lag", "lag 300 s", "score", {"lag_s": 300}, "local",
        ...       datetime(2026, 12, 3, tzinfo=timezone.utc)).payload()["attachments"]
        [{'color': 'warning', 'fields': [{'title': 'lag_s', 'value': '300', 'short': True}]}]
        """
        fields = {name: _plain(value) for name, value in self.fields.items()}
        return {
            "text": f"[learnscore {self.env}] {self.text}",
            "kind": self.kind,
            "key": self.key,
            "env": self.env,
            "at": self.at.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "fields": fields,
            "attachments": [{"color": "danger" if self.kind in _SEVERE else "warning",
                             "fields": [{"title": name, "value": str(value), "short": True}
                                        for name, value in fields.items()]}],
        }


_SEVERE = {"retrain_failed", "model_rolled_back", "rollback_recommended", "performance_below_floor"}


@dataclass
class DeliveryCounts:
    """What happened to the alerts of one dispatcher (for tests and metrics)."""

    accepted: int = 0
    suppressed: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0


class AlertDispatcher:
    """De-duplicates, rate-limits, logs and (in a background thread) delivers alerts.

    ``settings`` is an ``AlertsConfig`` (``conf/`` ``alerts:``); ``webhook_url`` the resolved
    URL (None: log only). ``clock`` (monotonic seconds) and ``post(url, body, timeout)`` are
    injectable for tests; ``post`` returns the HTTP status.

    >>> from learnscore.core.config import AlertsConfig
    >>> now = [0.0]
    >>> alerts = AlertDispatcher(AlertsConfig(dedupe_seconds=600), clock=lambda: now[0])
    >>> alerts.alert("stream_lag", "scoring lags 300 s", key="score")
    True
    >>> alerts.alert("stream_lag", "scoring lags 340 s", key="score")   # the same incident
    False
    >>> now[0] = 601.0
    >>> alerts.alert("stream_lag", "scoring lags 20 min", key="score")  # still there 10 min later
    True
    """

    def __init__(self, settings, *, webhook_url: str | None = None, env: str = "local",
                 clock: Callable[[], float] = time.monotonic,
                 post: Callable[[str, bytes, float], int] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.webhook_url = webhook_url
        self.env = env
        self.counts = DeliveryCounts()
        self._clock = clock
        self._post = post
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_sent: dict[tuple[str, str], float] = {}
        self._sent_by_kind: dict[str, deque[float]] = {}
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=settings.queue_size)
        self._worker: threading.Thread | None = None
        self._pending = 0  # queued or being delivered
        self._settled = threading.Condition(self._lock)

    # -- the caller's side (never blocks on the network) -----------------------------------
    def alert(self, kind: str, text: str, *, key: str | None = None, **fields: Any) -> bool:
        """Send an alert unless it repeats an incident or its kind is over its rate; True when
        it was accepted (logged, and queued for the webhook)."""
        if kind not in ALERT_KINDS:
            raise ValueError(f"unknown alert kind {kind!r}; known: {', '.join(ALERT_KINDS)}")
        override = self.settings.kinds.get(kind)
        if not self.settings.enabled or (override is not None and not override.enabled):
            return False
        incident = (kind, key if key is not None else text)
        dedupe = _pick(override, "dedupe_seconds", self.settings.dedupe_seconds)
        per_hour = _pick(override, "max_per_hour", self.settings.max_per_hour)
        with self._lock:
            now = self._clock()
            last = self._last_sent.get(incident)
            if last is not None and now - last < dedupe:
                self.counts.suppressed += 1
                log.debug("alert %s suppressed (same incident %.0f s ago): %s", kind, now - last, text)
                return False
            sent = self._sent_by_kind.setdefault(kind, deque())
            while sent and now - sent[0] >= 3600:
                sent.popleft()
            if len(sent) >= per_hour:
                self.counts.suppressed += 1
                log.info("alert %s rate-limited (%d in the last hour): %s", kind, len(sent), text)
                return False
            sent.append(now)
            self._last_sent[incident] = now
            self.counts.accepted += 1
        item = Alert(kind, text, incident[1], dict(fields), self.env)
        log.warning("ALERT %s: %s%s", kind, text,
                    f" ({', '.join(f'{k}={_plain(v)}' for k, v in fields.items())})" if fields else "")
        if self.webhook_url:
            self._enqueue(item)
        return True

    def _enqueue(self, item: Alert) -> None:
        with self._lock:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.counts.dropped += 1
                log.error("alert queue full (%d waiting): %s alert not delivered to the webhook",
                          self.settings.queue_size, item.kind)
                return
            self._pending += 1
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._deliver_forever, name="alert-delivery",
                                                daemon=True)
                self._worker.start()

    # -- delivery (background thread) ------------------------------------------------------------
    def _deliver_forever(self) -> None:
        import httpx

        with httpx.Client(headers={"Content-Type": "application/json"}) as client:
            post = self._post or (lambda url, body, timeout: client.post(url, content=body,
                                                                         timeout=timeout).status_code)
            while True:
                item = self._queue.get()
                if item is None:
                    return
                self._deliver_one(item, post)

    def _deliver_one(self, item: Alert, post: Callable[[str, bytes, float], int]) -> None:
        try:
            self._deliver(item, post)
        except Exception as exc:  # noqa: BLE001 - the delivery thread must outlive any alert
            self.counts.failed += 1
            log.error("alert %s could not be delivered: %s", item.kind, exc)
        finally:
            with self._settled:
                self._pending -= 1
                self._settled.notify_all()

    def _deliver(self, item: Alert, post: Callable[[str, bytes, float], int]) -> None:
        body = json.dumps(item.payload(), default=str).encode()
        attempts = self.settings.retry_attempts
        for attempt in range(1, attempts + 1):
            problem = None
            try:
                status = post(self.webhook_url, body, self.settings.timeout_s)
                if 200 <= status < 300:
                    self.counts.delivered += 1
                    return
                problem = f"HTTP {status}"
            except Exception as exc:  # noqa: BLE001 - any failure to deliver is retried, then logged
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                self._sleep(self.settings.retry_backoff_seconds * 2 ** (attempt - 1))
        self.counts.failed += 1
        log.error("alert %s not delivered to the webhook after %d attempts (%s); it is in this log",
                  item.kind, attempts, problem)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued alert was delivered or given up; True if that happened in time."""
        with self._settled:
            return self._settled.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout_s``) and stop the delivery thread."""
        self.flush(timeout_s)
        if self._worker is not None and self._worker.is_alive():
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                return
            self._worker.join(timeout=1.0)


def _pick(override, name: str, default):
    value = getattr(override, name, None) if override is not None else None
    return default if value is None else value


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a field value (numbers rounded for reading)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


# -- the process's dispatcher ---------------------------------------------------------------------
_dispatcher: AlertDispatcher | None = None
_dispatcher_lock = threading.Lock()


def configure_alerts(config, environ: dict[str, str] | None = None) -> AlertDispatcher:
    """Build this process's dispatcher from the loaded config (the webhook URL from
    ``LEARNSCORE_ALERT_WEBHOOK_URL`` if set, else ``alerts.webhook_url``) and use it from now on."""
    from learnscore.core.config import Secrets

    global _dispatcher
    url = Secrets(config, environ).alert_webhook_url or config.alerts.webhook_url
    dispatcher = AlertDispatcher(config.alerts, webhook_url=url, env=config.env)
    with _dispatcher_lock:
        previous, _dispatcher = _dispatcher, dispatcher
    if previous is not None:
        previous.close(timeout_s=2.0)
    log.debug("alerts: log%s", " and webhook" if url else " only")
    return dispatcher


def current_dispatcher() -> AlertDispatcher:
    """The dispatcher :func:`alert` uses (log only until :func:`configure_alerts`)."""
    global _dispatcher
    with _dispatcher_lock:
        if _dispatcher is None:
            from learnscore.core.config import AlertsConfig

            _dispatcher = AlertDispatcher(AlertsConfig())
        return _dispatcher


def alert(kind: str, text: str, *, key: str | None = None, **fields: Any) -> bool:
    """Raise an alert of ``kind`` (one of :data:`ALERT_KINDS`): logged, and sent to the webhook
    in the background. ``key`` names the incident (default: the text); ``fields`` travel as
    structured data. Returns whether it was sent (False: a repeat, rate-limited, or disabled).
    Never raises for delivery problems."""
    return current_dispatcher().alert(kind, text, key=key, **fields)
