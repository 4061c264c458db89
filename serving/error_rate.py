"""The endpoint's share of server errors over a sliding window: when it calls for an alert.

Counted are the scoring requests the endpoint owed an answer: 2xx and 5xx (a 503 for "no
production model" or "unusable model output" included: the endpoint could not score). 4xx are
the client's doing — a wrong key, a malformed body, a rate limit — and are left out of both
sides of the share: a flood of 401s neither raises the alert nor hides an outage behind it.

The window is kept in one-second buckets (a deque, so memory is bounded by the window, not by
the request rate) with running sums, so each request costs an append or an increment and the
eviction of expired seconds; :class:`ErrorRateWatch` is fed from the event loop's thread only
and takes no lock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorRate:
    """Server errors among the counted requests of the last ``window_s`` seconds."""

    errors: int
    requests: int
    window_s: float

    @property
    def share(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def counts_toward_error_rate(status: int) -> bool:
    """Whether a response is one the endpoint owed (2xx, 3xx, 5xx), not a client error (4xx).

    >>> [counts_toward_error_rate(s) for s in (200, 401, 422, 429, 500, 503)]
    [True, False, False, False, True, True]
    """
    return not 400 <= status < 500


class ErrorRateWatch:
    """Sliding-window 5xx share of scoring requests; :meth:`observe` returns the reading when
    an alert is due: the share is above ``threshold`` on at least ``min_requests`` counted
    requests, and the watch has not announced for a window's length (while errors go on it
    re-announces once per window; the alert dispatcher's dedupe makes that one alert per
    incident). ``clock``: monotonic seconds, injectable for tests.

    >>> now = [0.0]
    >>> watch = ErrorRateWatch(window_s=60, min_requests=4, threshold=0.25, clock=lambda: now[0])
    >>> [watch.observe(s) for s in (200, 401, 401, 500)]   # 1 error of 2 counted: too few
    [None, None, None, None]
    >>> watch.observe(200), watch.observe(503)             # 2 of 4 = 50 % > 25 %
    (None, ErrorRate(errors=2, requests=4, window_s=60))
    >>> watch.observe(500) is None                         # announced: not again this window
    True
    >>> now[0] = 61.0                                      # the old seconds left the window
    >>> watch.observe(200), watch.current()
    (None, ErrorRate(errors=0, requests=1, window_s=60))
    """

    def __init__(self, window_s: float, min_requests: int, threshold: float,
                 clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self.min_requests = min_requests
        self.threshold = threshold
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, requests, errors], oldest first
        self._requests = 0
        self._errors = 0
        self._announced_at: float | None = None

    @classmethod
    def from_config(cls, alerts) -> ErrorRateWatch:
        """The watch ``alerts`` (an ``AlertsConfig``) asks for."""
        return cls(alerts.endpoint_error_window_seconds, alerts.endpoint_error_min_requests,
                   alerts.endpoint_error_rate)

    def observe(self, status: int) -> ErrorRate | None:
        """Count one response; the reading when the alert is due, else None."""
        now = self._clock()
        self._expire(now)
        if not counts_toward_error_rate(status):
            return None
        error = int(status >= 500)
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += 1
            self._buckets[-1][2] += error
        else:
            self._buckets.append([second, 1, error])
        self._requests += 1
        self._errors += error
        if not error or self._requests < self.min_requests or self._errors <= self.threshold * self._requests:
            return None
        if self._announced_at is not None and now - self._announced_at < self.window_s:
            return None
        self._announced_at = now
        return self.current()

    def current(self) -> ErrorRate:
        """The share over the window as it stands."""
        self._expire(self._clock())
        return ErrorRate(self._errors, self._requests, self.window_s)

    def _expire(self, now: float) -> None:
        oldest = now - self.window_s
        while self._buckets and self._buckets[0][0] + 1 <= oldest:
            _, requests, errors = self._buckets.popleft()
            self._requests -= requests
            self._errors -= errors
