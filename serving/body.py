"""Reading a request body under a size limit, chunked bodies included."""

from __future__ import annotations

from collections.abc import AsyncIterator


class BodyTooLarge(ValueError):
    """The body is larger than the endpoint accepts."""

    def __init__(self, limit: int, seen: int | None = None):
        self.limit = limit
        self.seen = seen
        size = f"{seen} bytes" if seen is not None else "more bytes"
        super().__init__(f"request body has {size}; the limit is {limit} bytes "
                         f"(serving.max_body_bytes) — send fewer submissions per request")


def declared_length(content_length: str | None) -> int | None:
    """The Content-Length a client declared, or ``None`` when absent or not a number.

    >>> declared_length("42"), declared_length(None), declared_length("x")
    (42, None, None)
    """
    if content_length is None:
        return None
    try:
        value = int(content_length)
    except ValueError:
        return None
    return value if value >= 0 else None


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Join the body's chunks, stopping with :class:`BodyTooLarge` as soon as it passes ``limit``.

    Stopping early matters for chunked uploads, which declare no length up front.
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)
