"""Reading a warehouse's values as the contract's types, and the ids an import gives its events.

Exports spell the same value many ways: ``"1"``, ``1``, ``true`` and ``"TRUE"`` for a correct
answer, ``5`` or ``5.0`` for a grade, times with or without an offset. The parsers here turn
one cell into the value the contract expects, or :data:`UNREADABLE` when they cannot; the
contract then judges the value itself (a grade of 13 is read fine and refused by the contract).

Columns are converted one *distinct* value at a time (:func:`convert_column`): a column of two
million answers holds a handful of distinct booleans and a few thousand distinct times, so the
per-value Python costs next to nothing and a bad cell still gets its own verdict.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Kind = Literal["text", "integer", "boolean", "number", "instant"]

#: What a parser returns for a value it cannot read (``None`` means the cell was empty).
UNREADABLE: Any = type("Unreadable", (), {"__repr__": lambda self: "UNREADABLE"})()

# Fixed namespaces: the same key gives the same id in every import, on every machine.
SUBMISSION_NAMESPACE = uuid.UUID("6f0b7a4e-2f5c-5d51-9a8e-1c0d3b7e9f21")
OUTCOME_NAMESPACE = uuid.UUID("0c3e55a2-7b41-5e8d-8f6a-4a2d9e0b6c13")
_KEY_SEPARATOR = "\x1f"  # the ASCII unit separator: never part of an id or a time
_MISSING = "\x00"        # stands for an empty key part, so that "" and no value differ

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_MAX_EXACT = 2**53  # beyond this a double no longer holds every integer


def parse_integer(value: Any) -> int | None:
    """An integer from an int, a whole float or a text; ``None`` for an empty cell.

    >>> parse_integer("7"), parse_integer(7.0), parse_integer(" +3 "), parse_integer(None)
    (7, 7, 3, None)
    >>> parse_integer("7.5"), parse_integer("seven"), parse_integer(True)
    (UNREADABLE, UNREADABLE, UNREADABLE)
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return UNREADABLE
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() and abs(value) < _MAX_EXACT else UNREADABLE
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            number = parse_number(text)
            return parse_integer(number) if number is not UNREADABLE else UNREADABLE
    return UNREADABLE


def parse_number(value: Any) -> float | None:
    """A finite number from a number or a text; NaN and empty cells are ``None`` (missing).

    >>> parse_number("12.5"), parse_number(3), parse_number(" 1e3 "), parse_number(float("nan"))
    (12.5, 3.0, 1000.0, None)
    >>> parse_number("twelve"), parse_number("inf"), parse_number(False)
    (UNREADABLE, UNREADABLE, UNREADABLE)
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return UNREADABLE
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            return UNREADABLE
        if text.lower() in ("nan", "+nan", "-nan"):
            return UNREADABLE  # a text that says "nan" is a value someone wrote, not a gap
    else:
        return UNREADABLE
    if math.isnan(number):
        return None  # pandas writes missing numbers as NaN
    return number if math.isfinite(number) else UNREADABLE


def parse_boolean(value: Any) -> bool | None:
    """True/false from a boolean, 1/0 or a word (true/false, yes/no, t/f, y/n; any case).

    >>> parse_boolean("TRUE"), parse_boolean(0), parse_boolean(" yes "), parse_boolean("")
    (True, False, True, None)
    >>> parse_boolean("maybe"), parse_boolean(2)
    (UNREADABLE, UNREADABLE)
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return UNREADABLE


def parse_text(value: Any) -> str | None:
    """An id or a name as text, trimmed; whole numbers lose the ``.0`` a float column gives them.

    >>> parse_text(" math "), parse_text(1042), parse_text(1042.0), parse_text(None)
    ('math', '1042', '1042', None)
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, str)):
        return str(value).strip()
    return UNREADABLE


def parse_instant(value: Any, zone: tzinfo = timezone.utc) -> datetime | None:
    """A moment in UTC from an ISO 8601 text or a datetime; ``zone`` when it has no offset.

    >>> from zoneinfo import ZoneInfo
    >>> parse_instant("2026-01-31T09:30:00.25+01:00").isoformat()
    '2026-01-31T08:30:00.250000+00:00'
    >>> parse_instant("2026-01-31 09:30", ZoneInfo("Europe/Paris")).isoformat()
    '2026-01-31T08:30:00+00:00'
    >>> parse_instant("31/01/2026"), parse_instant("2026-02-30T00:00:00Z"), parse_instant(1769851800)
    (UNREADABLE, UNREADABLE, UNREADABLE)
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return UNREADABLE
    if not isinstance(value, datetime):
        return UNREADABLE  # epoch numbers are ambiguous (seconds? ms?): ask for ISO 8601
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(timezone.utc)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "text": parse_text, "integer": parse_integer, "boolean": parse_boolean, "number": parse_number,
}
_TYPES = {"text": pa.string(), "integer": pa.int64(), "boolean": pa.bool_(), "number": pa.float64(),
          "instant": pa.timestamp("us", tz="UTC")}


@dataclass(frozen=True)
class Converted:
    """A converted column: ``values`` (null where the cell was empty or unreadable) and
    ``unreadable``, a boolean per row that is True where a value was there but could not be read."""

    values: pa.Array
    unreadable: np.ndarray

    @property
    def any_unreadable(self) -> bool:
        return bool(self.unreadable.any())


def convert_column(array: pa.Array, kind: Kind, *, zone: tzinfo = timezone.utc,
                   renames: dict[str, str] | None = None) -> Converted:
    """``array`` (any Arrow type a file gave) as ``kind``; ``renames`` maps texts to others first
    (``{"Mathematics": "math"}``).

    >>> out = convert_column(pa.array(["1", "0", "yes", None, "maybe"]), "boolean")
    >>> out.values.to_pylist(), out.unreadable.tolist()
    ([True, False, True, None, None], [False, False, False, False, True])
    >>> convert_column(pa.array([5.0, 7.0]), "integer").values.to_pylist()
    [5, 7]
    >>> convert_column(pa.array(["Mathematics", "math"]), "text", renames={"Mathematics": "math"}).values.to_pylist()
    ['math', 'math']
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    target = _TYPES[kind]
    fast = _convert_typed(array, kind, zone)
    if fast is not None and not renames:
        return Converted(fast, np.zeros(len(array), dtype=bool))
    if kind == "instant":
        parse = lambda value: _instant_micros(parse_instant(value, zone))
        target = pa.int64()
    else:
        parse = _PARSERS[kind]
    if renames:
        parse = _renamed(parse, renames)
    values, unreadable = _by_distinct_value(array, parse, target)
    if kind == "instant":
        values = values.cast(_TYPES["instant"])
    return Converted(values, unreadable)


def _convert_typed(array: pa.Array, kind: Kind, zone: tzinfo) -> pa.Array | None:
    """The vectorised conversion when the file's type already fits, else None."""
    kind_of = array.type
    if pa.types.is_null(kind_of):
        return pa.nulls(len(array), _TYPES[kind])
    if kind == "text" and (pa.types.is_string(kind_of) or pa.types.is_large_string(kind_of)):
        return pc.utf8_trim_whitespace(array).cast(pa.string())
    if kind == "integer" and pa.types.is_integer(kind_of):
        return array.cast(pa.int64())
    if kind == "boolean" and pa.types.is_boolean(kind_of):
        return array
    if kind == "number" and (pa.types.is_integer(kind_of) or pa.types.is_floating(kind_of)):
        number = array.cast(pa.float64())
        if pc.any(pc.is_inf(number)).as_py():
            return None  # infinities are unreadable: the per-value path says so row by row
        return pc.if_else(pc.is_nan(number), None, number)  # NaN is how pandas writes a gap
    if kind == "instant" and pa.types.is_timestamp(kind_of):
        if kind_of.tz is None:
            array = pc.assume_timezone(array, timezone=getattr(zone, "key", "UTC"), ambiguous="earliest",
                                       nonexistent="earliest")
        return array.cast(_TYPES["instant"])
    return None


def _by_distinct_value(array: pa.Array, parse: Callable[[Any], Any], target: pa.DataType
                       ) -> tuple[pa.Array, np.ndarray]:
    encoded = pc.dictionary_encode(array)
    parsed = [parse(value) for value in encoded.dictionary.to_pylist()]
    unreadable = pa.array([value is UNREADABLE for value in parsed], pa.bool_())
    dictionary = pa.array([None if value is UNREADABLE else value for value in parsed], target)
    indices = encoded.indices
    flags = unreadable.take(indices).fill_null(False).to_numpy(zero_copy_only=False)
    return dictionary.take(indices), flags


def _renamed(parse: Callable[[Any], Any], renames: dict[str, str]) -> Callable[[Any], Any]:
    def parse_renamed(value: Any) -> Any:
        result = parse(value)
        return renames.get(result, result) if isinstance(result, str) else result
    return parse_renamed


def _instant_micros(moment: Any) -> Any:
    if moment is None or moment is UNREADABLE:
        return moment
    return (moment - _EPOCH) // _MICROSECOND


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def milliseconds(seconds_or_ms: pa.Array, unit: Literal["s", "ms"]) -> tuple[pa.Array, np.ndarray]:
    """Response times in whole milliseconds (rounded) from numbers in ``unit``; the second
    result flags values too large to be a time at all (kept as unreadable).

    >>> values, too_large = milliseconds(pa.array([1.5, 0.0004, None, 1e300]), "s")
    >>> values.to_pylist(), too_large.tolist()
    ([1500, 0, None, None], [False, False, False, True])
    """
    scaled = pc.multiply(seconds_or_ms.cast(pa.float64()), 1000.0 if unit == "s" else 1.0)
    too_large = pc.fill_null(pc.greater(pc.abs(scaled), float(_MAX_EXACT)), False)
    kept = pc.if_else(too_large, None, pc.round(scaled))
    return kept.cast(pa.int64()), too_large.to_numpy(zero_copy_only=False)


def submission_key(learner_id: str | None, assessment_id: str | None, submitted_at: str | None) -> str:
    """The text a submission's id is derived from: learner, assessment and the time it was
    submitted (microseconds since the epoch, or the unreadable text as it was written).

    >>> submission_key("L-1", "A-7", "1769851800000000").split("\\x1f")
    ['L-1', 'A-7', '1769851800000000']
    """
    return _KEY_SEPARATOR.join(_MISSING if part is None else part
                               for part in (learner_id, assessment_id, submitted_at))


def submission_event_id(key: str) -> str:
    """The event id of the submission with this key: a UUID 5, so re-importing gives the same id.

    >>> submission_event_id(submission_key("L-1", "A-7", "1769851800000000"))
    '...-5...'
    >>> submission_event_id("x") == submission_event_id("x")
    True
    """
    return str(uuid.uuid5(SUBMISSION_NAMESPACE, key))


def outcome_event_id(submission_id: str) -> str:
    """The event id of the outcome of a submission (one outcome per submission).

    >>> outcome_event_id("a") != submission_event_id("a")
    True
    """
    return str(uuid.uuid5(OUTCOME_NAMESPACE, submission_id))


def submission_keys(learner_id: pa.Array, assessment_id: pa.Array, submitted_at: pa.Array,
                    submitted_at_text: Sequence[str | None] | None = None) -> pa.Array:
    """:func:`submission_key` for every row; ``submitted_at_text`` holds the text of times that
    could not be read (they still tell submissions apart)."""
    micros = submitted_at.cast(pa.int64()).cast(pa.string())
    if submitted_at_text is not None:
        micros = pc.coalesce(micros, pa.array(submitted_at_text, pa.string()))
    parts = [pc.fill_null(part, _MISSING) for part in (learner_id, assessment_id, micros)]
    return pc.binary_join_element_wise(*parts, _KEY_SEPARATOR)


def event_ids_for(keys: pa.Array, make: Callable[[str], str] = submission_event_id) -> pa.Array:
    """``make(key)`` per row, computed once per distinct key."""
    encoded = pc.dictionary_encode(keys)
    ids = pa.array([None if key is None else make(key) for key in encoded.dictionary.to_pylist()],
                   pa.string())
    return ids.take(encoded.indices)


def row_ranges(rows: Sequence[int] | np.ndarray, limit: int | None = None) -> str:
    """Row numbers as short ranges, for messages and lineage; ``limit`` ranges at most.

    >>> row_ranges([12, 13, 14, 15, 20, 22, 23])
    '12-15,20,22-23'
    >>> row_ranges([1, 3, 5, 7], limit=2)
    '1,3,…'
    """
    ordered = np.unique(np.asarray(rows, dtype=np.int64))
    if not len(ordered):
        return ""
    breaks = np.flatnonzero(np.diff(ordered) != 1)
    starts = np.concatenate(([ordered[0]], ordered[breaks + 1]))
    ends = np.concatenate((ordered[breaks], [ordered[-1]]))
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in zip(starts.tolist(), ends.tolist())]
    if limit is not None and len(parts) > limit:
        parts = [*parts[:limit], "…"]
    return ",".join(parts)


def levels_of(scores: pa.Array, cut_scores: Sequence[float], levels: Sequence[str]) -> pa.Array:
    """The level each score falls in (null for a missing score), as ``Domain.level_of`` says.

    >>> levels_of(pa.array([12.0, 60.0, None]), (40.0, 60.0, 78.0), ("a", "b", "c", "d")).to_pylist()
    ['a', 'c', None]
    """
    values = scores.cast(pa.float64()).to_numpy(zero_copy_only=False)
    present = ~np.isnan(values)
    index = np.searchsorted(np.asarray(cut_scores, dtype=float), np.where(present, values, 0.0), side="right")
    names = np.asarray(levels, dtype=object)[index]
    return pa.array(np.where(present, names, None), pa.string())
