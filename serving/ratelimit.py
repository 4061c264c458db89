"""Rate limits per client, in process: token buckets in front of every route but the probes.

A client is its address (``scope["client"]``; behind a proxy, run uvicorn with
``--proxy-headers --forwarded-allow-ips`` so that it is the real client). Requests that carry the
right API key and requests that do not fill separate buckets: a flood of wrong keys is cut off at
``serving.unauthenticated_rate_per_second`` before it costs anything, and cannot use up the
allowance of a client that sends the right key (``serving.rate_limit_per_second``). Past its
bucket a request gets 429 with ``Retry-After``.

The buckets live in this process: each endpoint process limits on its own, and a restart
forgets them. Memory is bounded: past ``max_clients`` the least recently seen client is dropped.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from learnscore.serving.auth import api_key_matches, presented_api_key

#: Probes must answer while a client is throttled (load balancers, the dashboard).
EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})


class TokenBucketLimiter:
    """Per-key token buckets: ``rate`` tokens a second, at most ``burst`` saved up.

    :meth:`acquire` has no ``await`` between reading and updating a bucket, so it is atomic on
    one event loop.

    >>> now = [0.0]
    >>> limiter = TokenBucketLimiter(rate=2, burst=3, clock=lambda: now[0])
    >>> [limiter.acquire("a") for _ in range(4)], limiter.acquire("b")
    ([0.0, 0.0, 0.0, 0.5], 0.0)
    >>> now[0] = 0.5; limiter.acquire("a")
    0.0
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.max_keys, self._clock = rate, burst, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, at)

    def acquire(self, key: str) -> float:
        """0.0 when the request may go ahead, else the seconds until a token is there."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1 if wait == 0.0 else tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


@dataclass(frozen=True)
class Limited:
    """What the app is told about one throttled request."""

    request_id: str
    path: str
    authenticated: bool
    retry_after_s: int


class RateLimitMiddleware:
    """Pure ASGI middleware: two limiters (right key / no or wrong key), keyed by client address.

    ``on_limited`` is called for every 429 (metrics, the sampled request log). A rate of 0
    switches that limiter off.
    """

    def __init__(self, app, *, api_key: str, rate: float, burst: int, unauthenticated_rate: float,
                 unauthenticated_burst: int, on_limited: Callable[[Limited], None] = lambda limited: None,
                 clock: Callable[[], float] = time.monotonic):
        self.app = app
        self._api_key = api_key
        self._limiters = {
            True: TokenBucketLimiter(rate, burst, clock=clock) if rate > 0 else None,
            False: TokenBucketLimiter(unauthenticated_rate, unauthenticated_burst, clock=clock)
            if unauthenticated_rate > 0 else None,
        }
        self._on_limited = on_limited

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            return await self.app(scope, receive, send)
        headers = {name: value for name, value in scope["headers"] if name in (b"x-api-key", b"authorization")}
        presented = presented_api_key(_text(headers.get(b"x-api-key")), _text(headers.get(b"authorization")))
        authenticated = api_key_matches(presented, self._api_key)
        limiter = self._limiters[authenticated]
        wait = limiter.acquire((scope.get("client") or ("unknown",))[0]) if limiter is not None else 0.0
        if not wait:
            return await self.app(scope, receive, send)
        limited = Limited(uuid.uuid4().hex, scope["path"], authenticated, max(1, math.ceil(wait)))
        self._on_limited(limited)
        which = ("serving.rate_limit_per_second" if authenticated else
                 "serving.unauthenticated_rate_per_second, for requests without the right API key")
        body = orjson.dumps({"request_id": limited.request_id, "error": "rate_limited",
                             "message": f"too many requests from this client ({which}); "
                                        f"retry after {limited.retry_after_s} s"})
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(limited.retry_after_s).encode()),
            (b"x-request-id", limited.request_id.encode())]})
        await send({"type": "http.response.body", "body": body})


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
