"""A tiny contract language: an event is written once as a :class:`Record` of typed fields.

From that one definition come the JSON Schema (:func:`json_schema`), the Spark ``StructType``
(:func:`spark_schema`) and the Python validator (:func:`find_problems`). Keeping the three
derived from one object is what stops them from drifting apart.

Compatibility rule (per ``schema_version``): within a version, changes are additive only —
a new field must be optional, no field changes type or meaning, no constraint gets tighter.
Unknown fields are ignored by readers (they stay in the raw bronze copy), so producers may
add fields before consumers know them. Anything else is a new ``schema_version``.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

# -- field types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class String:
    min_length: int = 0
    max_length: int = 256
    enum: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Uuid:
    pass


@dataclass(frozen=True)
class Timestamp:
    """RFC 3339 date-time with a zone (``Z`` or ``±HH:MM``)."""

    max_future: timedelta | None = None


@dataclass(frozen=True)
class Integer:
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Number:
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Boolean:
    pass


@dataclass(frozen=True)
class Array:
    items: Any
    min_items: int = 0
    max_items: int = 1000


@dataclass(frozen=True)
class NumberMap:
    """A JSON object of string → number (metrics, probabilities)."""

    max_entries: int = 100


@dataclass(frozen=True)
class Field:
    name: str
    type: Any
    required: bool = True
    doc: str = ""


@dataclass(frozen=True)
class Record:
    """A JSON object with known fields. Unknown fields are ignored (see the module docstring)."""

    name: str
    fields: tuple[Field, ...]
    doc: str = ""
    version: int | None = None  # set on top-level events: the schema_version they carry

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


# -- problems ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Why an event was rejected: a short machine-readable ``code`` and a human message."""

    code: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.code} at {self.path}: {self.message}"


# The patterns are exported into the JSON Schema too, so they stay portable: ASCII classes
# (not \d, which is Unicode in Python), and "$(?![\s\S])" as the end anchor because a bare "$"
# also matches before a final newline in Python and Java regexes (not in ECMA-262).
_END = r"$(?![\s\S])"
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}" + _END)
# RFC 3339 in the one spelling Spark's JSON reader turns into a timestamp: upper-case "T" and
# "Z", up to nine fraction digits, offsets within +-18:00 (Spark reads anything else as null).
RFC3339_RE = re.compile(
    r"^(?!0000)[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
    r"(Z|[+-](0[0-9]|1[0-7]):[0-5][0-9]|[+-]18:00)" + _END
)
# Spark reads integers as 64-bit longs: a larger value would silently become null.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parse_timestamp(value: str) -> datetime | None:
    """Parse an RFC 3339 date-time; ``None`` when it is not one.

    >>> parse_timestamp("2026-11-26T10:00:00.5Z").isoformat()
    '2026-11-26T10:00:00.500000+00:00'
    >>> parse_timestamp("26/11/2026") is None
    True
    >>> parse_timestamp("2026-02-30T10:00:00Z") is None  # no such day
    True
    """
    if not isinstance(value, str) or not RFC3339_RE.match(value):
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:  # Python keeps microseconds: cut nanosecond fractions to six digits
        head, _, rest = text.partition(".")
        digits = re.match(r"\d+", rest).group(0)
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _bounds(kind: Integer | Number) -> tuple[Any, Any]:
    """The range a number must lie in: the declared one, and for integers also 64 bits."""
    if isinstance(kind, Number):
        return kind.minimum, kind.maximum
    minimum = INT64_MIN if kind.minimum is None else max(kind.minimum, INT64_MIN)
    maximum = INT64_MAX if kind.maximum is None else min(kind.maximum, INT64_MAX)
    return minimum, maximum


def _check(kind: Any, value: Any, path: str, now: datetime, out: list[Problem]) -> None:
    if isinstance(kind, Record):
        if not isinstance(value, dict):
            out.append(Problem("wrong_type", path, f"expected an object, got {_type_name(value)}"))
            return
        for spec in kind.fields:
            child = f"{path}.{spec.name}" if path else spec.name
            if spec.name not in value or value[spec.name] is None:
                if spec.required:
                    out.append(Problem("missing_field", child, f"required field {spec.name!r} is missing"))
                continue
            _check(spec.type, value[spec.name], child, now, out)
        return
    if isinstance(kind, Array):
        if not isinstance(value, list):
            out.append(Problem("wrong_type", path, f"expected an array, got {_type_name(value)}"))
            return
        if len(value) < kind.min_items:
            out.append(Problem("too_few_items", path, f"needs at least {kind.min_items} items, got {len(value)}"))
        if len(value) > kind.max_items:
            out.append(Problem("too_many_items", path, f"allows at most {kind.max_items} items, got {len(value)}"))
            return  # do not walk a hostile, huge array
        for index, item in enumerate(value):
            before = len(out)
            _check(kind.items, item, f"{path}[{index}]", now, out)
            if len(out) - before and len(out) > 20:
                return  # enough to explain the rejection
        return
    if isinstance(kind, Boolean):
        if not isinstance(value, bool):
            out.append(Problem("wrong_type", path, f"expected true/false, got {_type_name(value)}"))
        return
    if isinstance(kind, (Integer, Number)):
        integral = isinstance(kind, Integer)
        minimum, maximum = _bounds(kind)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            expected = "an integer" if integral else "a number"
            out.append(Problem("wrong_type", path, f"expected {expected}, got {_type_name(value)}"))
            return
        if isinstance(value, float) and not math.isfinite(value):
            out.append(Problem("not_finite", path, f"{value} is not a finite number"))
            return
        if integral and isinstance(value, float):
            # 5.0 is not accepted for an integer field: Spark would read it as null.
            out.append(Problem("wrong_type", path, f"expected an integer, got {value}"))
            return
        if minimum is not None and value < minimum:
            out.append(Problem("out_of_range", path, f"{value} is below the minimum {minimum}"))
        elif maximum is not None and value > maximum:
            out.append(Problem("out_of_range", path, f"{value} is above the maximum {maximum}"))
        return
    if isinstance(kind, NumberMap):
        if not isinstance(value, dict):
            out.append(Problem("wrong_type", path, f"expected an object of numbers, got {_type_name(value)}"))
            return
        if len(value) > kind.max_entries:
            out.append(Problem("too_many_items", path, f"allows at most {kind.max_entries} entries"))
            return
        for key, item in value.items():
            _check(Number(), item, f"{path}.{key}", now, out)
        return
    # the string family
    if not isinstance(value, str):
        out.append(Problem("wrong_type", path, f"expected a string, got {_type_name(value)}"))
        return
    if isinstance(kind, Uuid):
        if not UUID_RE.match(value):
            out.append(Problem("invalid_uuid", path, f"{value[:64]!r} is not a UUID"))
        return
    if isinstance(kind, Timestamp):
        moment = parse_timestamp(value)
        if moment is None:
            out.append(Problem("invalid_timestamp", path,
                               f"{value[:64]!r} is not an RFC 3339 date-time such as 2026-01-31T09:30:00Z"))
        elif kind.max_future is not None and moment - now > kind.max_future:
            out.append(Problem("future_timestamp", path,
                               f"{value} is more than {kind.max_future} ahead of now ({now.isoformat()})"))
        return
    if len(value) > kind.max_length:
        out.append(Problem("too_long", path, f"longer than {kind.max_length} characters ({len(value)})"))
    elif len(value) < kind.min_length:
        out.append(Problem("too_short", path, f"needs at least {kind.min_length} characters"))
    elif kind.enum is not None and value not in kind.enum:
        out.append(Problem("unknown_value", path, f"{value[:64]!r} is not one of {', '.join(kind.enum)}"))


def find_problems(record: Record, event: Any, now: datetime | None = None) -> list[Problem]:
    """Every way ``event`` (decoded JSON) breaks ``record``; empty when it is valid.

    >>> point = Record("Point", (Field("x", Integer(minimum=0)), Field("label", String(), required=False)))
    >>> find_problems(point, {"x": 3})
    []
    >>> [p.code for p in find_problems(point, {"x": -1, "label": 7})]
    ['out_of_range', 'wrong_type']
    """
    now = now or datetime.now(timezone.utc)
    problems: list[Problem] = []
    if record.version is not None and isinstance(event, dict):
        version = event.get("schema_version")
        # Only another integer is another version; "1" or 1.0 are wrong types, said below.
        if type(version) is int and version != record.version:
            return [Problem("unsupported_schema_version", "schema_version",
                            f"{record.name} schema_version {version!r} is not supported "
                            f"(this reader knows version {record.version})")]
    _check(record, event, "", now, problems)
    return problems


# -- JSON Schema --------------------------------------------------------------------------------


def _json_type(kind: Any) -> dict[str, Any]:
    if isinstance(kind, Record):
        return {
            "type": "object",
            "properties": {f.name: {**_json_field(f), **({"description": f.doc} if f.doc else {})}
                           for f in kind.fields},
            "required": [f.name for f in kind.fields if f.required],
            "additionalProperties": True,
        }
    if isinstance(kind, Array):
        return {"type": "array", "items": _json_type(kind.items),
                "minItems": kind.min_items, "maxItems": kind.max_items}
    if isinstance(kind, Boolean):
        return {"type": "boolean"}
    if isinstance(kind, Integer):
        out: dict[str, Any] = {"type": "integer"}
        kind = Integer(*_bounds(kind))
    elif isinstance(kind, Number):
        out = {"type": "number"}
    elif isinstance(kind, NumberMap):
        return {"type": "object", "additionalProperties": {"type": "number"},
                "maxProperties": kind.max_entries}
    elif isinstance(kind, Uuid):
        return {"type": "string", "format": "uuid", "pattern": UUID_RE.pattern}
    elif isinstance(kind, Timestamp):
        return {"type": "string", "format": "date-time", "pattern": RFC3339_RE.pattern}
    else:
        out = {"type": "string", "minLength": kind.min_length, "maxLength": kind.max_length}
        if kind.enum is not None:
            out["enum"] = list(kind.enum)
        return out
    if kind.minimum is not None:
        out["minimum"] = kind.minimum
    if kind.maximum is not None:
        out["maximum"] = kind.maximum
    return out


def _json_field(spec: Field) -> dict[str, Any]:
    # The validator treats an optional field that is null like an absent one; so does Spark.
    if spec.required:
        return _json_type(spec.type)
    return {"anyOf": [_json_type(spec.type), {"type": "null"}]}


def json_schema(record: Record) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``record``, for other teams and tools."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://learnscore.dev/schemas/{record.name}.v{record.version or 1}.json",
        "title": record.name,
        "description": record.doc,
        **_json_type(record),
    }
    if record.version is not None:
        schema["properties"]["schema_version"]["const"] = record.version
    return schema


# -- Spark ------------------------------------------------------------------------------------


def _spark_type(kind: Any):
    from pyspark.sql import types as T

    if isinstance(kind, Record):
        return T.StructType([T.StructField(f.name, _spark_type(f.type), True) for f in kind.fields])
    if isinstance(kind, Array):
        return T.ArrayType(_spark_type(kind.items), True)
    if isinstance(kind, Boolean):
        return T.BooleanType()
    if isinstance(kind, Integer):
        return T.LongType()
    if isinstance(kind, Number):
        return T.DoubleType()
    if isinstance(kind, NumberMap):
        return T.MapType(T.StringType(), T.DoubleType(), True)
    if isinstance(kind, Timestamp):
        return T.TimestampType()
    return T.StringType()


def spark_schema(record: Record):
    """The Spark ``StructType`` that ``from_json`` parses ``record`` with.

    Every field is nullable: Spark turns what it cannot parse into null, and the Python
    validator (run before) has already refused events with missing or mistyped fields.
    """
    return _spark_type(record)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except (ValueError, AttributeError, TypeError):
        return False


# -- fast acceptance ----------------------------------------------------------------------------
# The stream validates every event in Python; a walker over the contract costs ~130 µs per
# 30-response submission. The same contract compiled into straight-line code answers "valid?"
# in a fraction of that; only rejected events take the slow path that explains why.


def _constant(value: Any, constants: dict[str, Any]) -> str:
    """Name under which the compiled code finds ``value`` (built once, not on every call)."""
    name = f"C{len(constants)}"
    constants[name] = value
    return name


def _gen(kind: Any, var: str, lines: list[str], indent: str, depth: int,
         constants: dict[str, Any]) -> None:
    put = lines.append
    if isinstance(kind, Record):
        put(f"{indent}if type({var}) is not dict: return False")
        for spec in kind.fields:
            child = f"v{depth}_{len(lines)}"
            put(f"{indent}{child} = {var}.get({spec.name!r})")
            if spec.required:
                put(f"{indent}if {child} is None: return False")
                _gen(spec.type, child, lines, indent, depth + 1, constants)
            else:
                put(f"{indent}if {child} is not None:")
                _gen(spec.type, child, lines, indent + "    ", depth + 1, constants)
        return
    if isinstance(kind, Array):
        put(f"{indent}if type({var}) is not list or not ({kind.min_items} <= len({var}) <= {kind.max_items}): return False")
        item = f"it{depth}"
        put(f"{indent}for {item} in {var}:")
        _gen(kind.items, item, lines, indent + "    ", depth + 1, constants)
        return
    if isinstance(kind, Boolean):
        put(f"{indent}if type({var}) is not bool: return False")
        return
    if isinstance(kind, (Integer, Number)):
        if isinstance(kind, Integer):
            put(f"{indent}if type({var}) is not int: return False")
        else:
            put(f"{indent}if type({var}) is not int and (type({var}) is not float or not isfinite({var})): return False")
        minimum, maximum = _bounds(kind)
        if minimum is not None:
            put(f"{indent}if {var} < {minimum!r}: return False")
        if maximum is not None:
            put(f"{indent}if {var} > {maximum!r}: return False")
        return
    if isinstance(kind, NumberMap):
        put(f"{indent}if type({var}) is not dict or len({var}) > {kind.max_entries}: return False")
        put(f"{indent}for mv in {var}.values():")
        put(f"{indent}    if type(mv) is not int and (type(mv) is not float or not isfinite(mv)): return False")
        return
    put(f"{indent}if type({var}) is not str: return False")
    if isinstance(kind, Uuid):
        put(f"{indent}if not UUID_MATCH({var}): return False")
    elif isinstance(kind, Timestamp):
        put(f"{indent}ts = parse_timestamp({var})")
        put(f"{indent}if ts is None: return False")
        if kind.max_future is not None:
            put(f"{indent}if ts - now > {kind.max_future.total_seconds()!r} * SECOND: return False")
    else:
        put(f"{indent}if not ({kind.min_length} <= len({var}) <= {kind.max_length}): return False")
        if kind.enum is not None:
            put(f"{indent}if {var} not in {_constant(frozenset(kind.enum), constants)}: return False")


def compile_acceptor(record: Record):
    """Compile ``record`` into ``accept(event, now) -> bool``, True exactly when
    :func:`find_problems` would find nothing (a property test holds them together)."""
    lines = ["def accept(data, now):"]
    if record.version is not None:
        lines.append("    if type(data) is dict and data.get('schema_version') not in (None, %d) "
                     "and type(data.get('schema_version')) is not bool: return False" % record.version)
    constants: dict[str, Any] = {}
    _gen(record, "data", lines, "    ", 0, constants)
    lines.append("    return True")
    namespace = {"isfinite": math.isfinite, "UUID_MATCH": UUID_RE.match,
                 "parse_timestamp": parse_timestamp, "SECOND": timedelta(seconds=1), **constants}
    exec("\n".join(lines), namespace)
    return namespace["accept"]
