"""When the stream lags: the decision behind the ``stream_lag`` alert, from measures the scorer
already reports (``ops.stream_progress``, ``/metrics``).

Two ways a learner's score comes late, each compared with ``alerts.stream_lag_seconds``:

``score_latency``
    event time → published score, the **median** of the last scoring batch
    (``latency_p50_s``). When the stream falls behind Kafka every submission waits, and the median
    rises with it; the p95 would also rise for a handful of submissions a device sent hours after
    they were made (offline clients syncing), which is not the stream's lag.
``unscored_wait``
    how long submissions have been waiting on the retries topic for a version that can score
    them (``learnscore_stream_pending_unscored`` > 0 without a break): no production model, or
    one whose output is unusable. Those submissions get no score at all, so no latency shows it.

:class:`LagWatch` is pure (times are passed in); the scorer's run loop feeds it
(``Scorer.check_lag`` in ``streaming/job.py``) and raises what it finds with
:func:`alert_stream_lag`, keyed by the measure: one incident, one alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from learnscore.core.alerts import alert

SCORE_LATENCY = "score_latency"
UNSCORED_WAIT = "unscored_wait"


@dataclass(frozen=True)
class StreamLag:
    """One reading above the limit: which measure, how many seconds, and what was waiting."""

    measure: str
    seconds: float
    limit_s: float
    pending_unscored: int | None = None
    batch_id: int | None = None

    def describe(self) -> str:
        """The alert's text.

        >>> StreamLag(UNSCORED_WAIT, 300.0, 120.0, pending_unscored=42).describe()
        '42 submissions have waited unscored for 300 s (> 120 s): no model version can score them'
        """
        if self.measure == SCORE_LATENCY:
            return (f"event → score takes {self.seconds:.0f} s (median of scoring batch {self.batch_id}; "
                    f"> {self.limit_s:g} s): the stream is behind its input")
        return (f"{self.pending_unscored} submissions have waited unscored for {self.seconds:.0f} s "
                f"(> {self.limit_s:g} s): no model version can score them")


class LagWatch:
    """Decides, from the scoring query's readings, whether the stream lags.

    :meth:`observe` takes the time, the median latency of a scoring batch not seen before (None
    when no new batch scored rows) and the count of submissions waiting unscored (None when it
    could not be read: the clock of the wait is then kept, not restarted). It returns every
    measure above ``limit_s`` (level-triggered: the alert dispatcher's dedupe makes one alert
    per incident, and a reminder after ``alerts.dedupe_seconds`` while it lasts).

    >>> from datetime import timedelta
    >>> t0 = datetime(2026, 12, 3, 14, 0)
    >>> watch = LagWatch(limit_s=120)
    >>> watch.observe(t0, latency_s=4.2, pending=0)
    []
    >>> watch.observe(t0 + timedelta(seconds=10), latency_s=None, pending=30)  # waiting begins
    []
    >>> [lag.measure for lag in watch.observe(t0 + timedelta(seconds=140), latency_s=None, pending=None)]
    ['unscored_wait']
    >>> watch.observe(t0 + timedelta(seconds=150), latency_s=None, pending=0)  # a version scored them
    []
    >>> watch.observe(t0 + timedelta(seconds=160), latency_s=310.0, pending=0, batch_id=77)
    [StreamLag(measure='score_latency', seconds=310.0, limit_s=120, pending_unscored=None, batch_id=77)]
    """

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self._waiting_since: datetime | None = None
        self._pending: int | None = None

    @property
    def waiting(self) -> bool:
        """Submissions were waiting unscored at the last reading."""
        return self._waiting_since is not None

    def observe(self, now: datetime, *, latency_s: float | None, pending: int | None,
                batch_id: int | None = None) -> list[StreamLag]:
        found = []
        if latency_s is not None and latency_s > self.limit_s:
            found.append(StreamLag(SCORE_LATENCY, latency_s, self.limit_s, batch_id=batch_id))
        if pending is not None:
            self._pending = pending
            if pending <= 0:
                self._waiting_since = None
            elif self._waiting_since is None:
                self._waiting_since = now
        if self._waiting_since is not None:
            waited = (now - self._waiting_since).total_seconds()
            if waited > self.limit_s:
                found.append(StreamLag(UNSCORED_WAIT, waited, self.limit_s, pending_unscored=self._pending))
        return found


def alert_stream_lag(lag: StreamLag) -> None:
    """The ``stream_lag`` alert of one reading, keyed by its measure (``score_latency`` or
    ``unscored_wait``): readings of a lasting lag are one incident."""
    fields = {"measure": lag.measure, "seconds": lag.seconds, "limit_s": lag.limit_s,
              "pending_unscored": lag.pending_unscored, "batch_id": lag.batch_id}
    alert("stream_lag", f"stream: {lag.describe()}", key=lag.measure,
          **{name: value for name, value in fields.items() if value is not None})
