"""Waiting for a condition and retrying a call: the one place both are written.

:func:`wait_until` polls a predicate until it holds, with a deadline, an optional stop event and
an optional ``check`` that raises early (a child process died); :func:`retry` runs a call again
with exponential back-off on the errors it is told are transient (tenacity underneath).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")
log = logging.getLogger(__name__)


class WaitTimedOut(TimeoutError):
    """The condition did not hold within the time given; the message says what was awaited."""


class WaitStopped(RuntimeError):
    """The stop event was set while waiting."""


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, *, interval_s: float = 0.25,
               stop: threading.Event | None = None, check: Callable[[], object] | None = None,
               clock: Callable[[], float] = time.monotonic) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    ``check`` runs before each try and may raise to end the wait (a dead process). Raises
    :class:`WaitTimedOut` after ``timeout_s`` and :class:`WaitStopped` when ``stop`` is set.

    >>> answers = iter([None, 0, "ready"])
    >>> wait_until(lambda: next(answers), 5, "a test value", interval_s=0)
    'ready'
    >>> wait_until(lambda: False, 0.05, "nothing", interval_s=0.01)
    Traceback (most recent call last):
    ...
    learnscore.core.waiting.WaitTimedOut: timed out after 0.05 s waiting for nothing
    """
    deadline = clock() + timeout_s
    while True:
        if check is not None:
            check()
        value = predicate()
        if value:
            return value
        if clock() >= deadline:
            raise WaitTimedOut(f"timed out after {timeout_s:g} s waiting for {what}")
        if stop is not None:
            if stop.wait(interval_s):
                raise WaitStopped(f"stopped while waiting for {what}")
        elif interval_s > 0:
            time.sleep(interval_s)


class RetriesExhausted(RuntimeError):
    """A call kept failing with a transient error; ``__cause__`` is the last one."""


def retry(call: Callable[[], T], *, what: str, attempts: int, backoff_s: float,
          transient: tuple[type[BaseException], ...], sleep: Callable[[float], None] = time.sleep,
          max_backoff_s: float = 300.0) -> T:
    """Run ``call``; on a ``transient`` error wait ``backoff_s · 2^(n-1)`` and try again, at most
    ``attempts`` times in all. Other errors propagate at once; after the last attempt
    :class:`RetriesExhausted` says what failed how often.

    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise ConnectionError("not yet")
    ...     return "done"
    >>> retry(flaky, what="a flaky call", attempts=4, backoff_s=0, transient=(ConnectionError,))
    'done'
    >>> len(calls)
    3
    """
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s failed (attempt %d of %d: %s: %s); retrying in %.0f s", what, state.attempt_number,
                    attempts, type(exc).__name__, exc, state.next_action.sleep if state.next_action else 0)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=backoff_s, min=backoff_s, max=max_backoff_s) if backoff_s
        else tenacity.wait_none(),
        retry=tenacity.retry_if_exception_type(transient),
        before_sleep=before_sleep, sleep=sleep, reraise=False)
    try:
        return retrying(call)
    except tenacity.RetryError as exc:
        last = exc.last_attempt.exception()
        raise RetriesExhausted(f"{what} failed {attempts} times; last error: {type(last).__name__}: {last}") from last
