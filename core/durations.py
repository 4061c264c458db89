"""Durations as people write them on the command line and in config: ``500ms``, ``10s``,
``2m``, ``1.5h``, ``7d``, ``1w`` or a bare number of seconds. One parser for every option."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d|w)?\s*$")


class DurationError(ValueError):
    """Text that is not a duration; the message says how to write one."""


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text``.

    >>> parse_duration("10s"), parse_duration("2m"), parse_duration("7d"), parse_duration(3)
    (10.0, 120.0, 604800.0, 3.0)
    >>> parse_duration("250ms"), parse_duration("1w")
    (0.25, 604800.0)
    >>> parse_duration("daily")
    Traceback (most recent call last):
    ...
    learnscore.core.durations.DurationError: 'daily' is not a duration; write e.g. 500ms, 10s, 2m, 24h, 7d or 1w
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = _DURATION_RE.match(text) if isinstance(text, str) else None
    if not match:
        raise DurationError(f"{text!r} is not a duration; write e.g. 500ms, 10s, 2m, 24h, 7d or 1w")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def format_duration(seconds: float) -> str:
    """The shortest way :func:`parse_duration` reads back.

    >>> format_duration(15), format_duration(1_728_000), format_duration(5400), format_duration(0.25)
    ('15s', '20d', '90m', '250ms')
    """
    for unit in ("d", "h", "m", "s", "ms"):
        count = seconds / _UNITS[unit]
        if count == int(count) and (count or unit == "s"):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"
