"""How an event contract is written, and what is derived from it.

An event is declared once, as a pydantic ``TypedDict`` whose fields carry their constraints
(``Annotated[int, Field(ge=1, le=12)]``, ``Literal[...]``, the :data:`Uuid` and
:data:`Timestamp` types below). A :class:`Contract` wraps it and derives, from that one
declaration:

- the validator (:meth:`Contract.validate_bytes`): pydantic-core in strict mode, straight from
  the raw bytes, with every problem turned into a stable ``reason_code`` and a message;
- the JSON Schema (:func:`json_schema`) other teams read;
- the Spark ``StructType`` (:func:`spark_schema`) the stream decodes valid events with.

Why ``TypedDict`` and not ``BaseModel``: validation returns plain dicts, which the stream and
the endpoint read directly; building ~30 nested model instances per submission halved the
validator's throughput on our events (``learnscore bench validation``).

Rules kept from the contract's first version: a float is not an int (``5.0`` for an integer
field is refused, Spark would read it as null); integers fit in 64 bits; timestamps are
RFC 3339 in the one spelling Spark reads; ``null`` for a required field counts as missing;
unknown fields are ignored (they stay in the raw bronze copy).

Compatibility rule (per ``schema_version``): within a version, changes are additive only —
a new field must be optional, no field changes type or meaning, no constraint gets tighter.
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Annotated, Any, Literal

import typing_extensions
from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError, from_json

# -- the building blocks ---------------------------------------------------------------------------

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
#: Readers accept event times at most this far ahead of their clock (producers' clocks drift).
MAX_FUTURE = timedelta(minutes=5)
#: pydantic-core's JSON parser, the one that decodes every event the stream reads, refuses a
#: document nested deeper than this ("recursion limit exceeded"). A reader that parses with
#: another parser (the endpoint: orjson, limit 1024) must refuse deeper events too, or it would
#: accept what the stream quarantines.
MAX_NESTING = 200


def nesting_depth(value: Any) -> int:
    """How deeply containers nest in a decoded JSON value, counted as pydantic-core's parser counts
    against :data:`MAX_NESTING`: only containers that hold something (the parser descends into
    those), so a scalar, ``[]`` and ``{}`` are 0. Without recursion.

    >>> nesting_depth(1), nesting_depth({"a": [1, {"b": []}]}), nesting_depth([[[]]]), nesting_depth([[[1]]])
    (0, 3, 2, 3)
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        elif not isinstance(node, list):
            continue
        if node:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return deepest

STRICT = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


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
    try:
        # Python 3.11 reads every spelling the pattern lets through ("Z", offsets, and
        # fractions past microseconds, which it truncates); it refuses impossible dates.
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Kind:
    """Marks a string field for the Spark schema (``timestamp``) and the reason codes."""

    name: str


def _check_uuid(value: str) -> str:
    if not UUID_RE.match(value):
        raise PydanticCustomError("invalid_uuid", "{value} is not a UUID", {"value": repr(value[:64])})
    return value


def _check_timestamp(value: str) -> str:
    if parse_timestamp(value) is None:
        raise PydanticCustomError("invalid_timestamp", "{value} is not an RFC 3339 date-time such as "
                                  "2026-01-31T09:30:00Z", {"value": repr(value[:64])})
    return value


def _check_event_time(value: str, info: ValidationInfo) -> str:
    moment = parse_timestamp(value)
    if moment is None:
        return _check_timestamp(value)
    now = (info.context or {}).get("now") or datetime.now(timezone.utc)
    if moment - now > MAX_FUTURE:
        raise PydanticCustomError("future_timestamp", "{value} is more than {limit} ahead of now ({now})",
                                  {"value": value, "limit": str(MAX_FUTURE), "now": now.isoformat()})
    return value


Uuid = Annotated[str, _Kind("uuid"), AfterValidator(_check_uuid),
                 WithJsonSchema({"type": "string", "format": "uuid", "pattern": UUID_RE.pattern})]
Timestamp = Annotated[str, _Kind("timestamp"), AfterValidator(_check_timestamp),
                      WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_RE.pattern})]
#: A timestamp that may lie at most :data:`MAX_FUTURE` ahead of the reader's clock ("now" from
#: the validation context: the stream passes the Kafka timestamp, so a replay gives the same verdict).
EventTime = Annotated[str, _Kind("timestamp"), AfterValidator(_check_event_time),
                      WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_RE.pattern,
                                      "description": "RFC 3339 such as 2026-01-31T09:30:00.250Z or "
                                                     "2026-01-31T10:30:00+01:00; at most 5 minutes ahead of "
                                                     "the reader's clock"})]
Long = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Number = Annotated[float, Field(allow_inf_nan=False)]


def text(min_length: int = 0, max_length: int = 256) -> Any:
    """A string type with length limits."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length)]


def integer(minimum: int | None = None, maximum: int | None = None) -> Any:
    """An integer type within bounds (and within 64 bits in any case)."""
    low = INT64_MIN if minimum is None else max(minimum, INT64_MIN)
    high = INT64_MAX if maximum is None else min(maximum, INT64_MAX)
    return Annotated[int, Field(ge=low, le=high)]


def number(minimum: float | None = None, maximum: float | None = None) -> Any:
    """A finite number type within bounds (an integer is a number too)."""
    return Annotated[float, Field(ge=minimum, le=maximum, allow_inf_nan=False)]


def described(kind: Any, description: str) -> Any:
    """``kind`` with a description for the JSON Schema readers of the contract."""
    return Annotated[kind, Field(description=description)]


def one_of(values: tuple[str, ...]) -> Any:
    """A string that must be one of ``values``."""
    return Literal[tuple(values)]  # type: ignore[valid-type]


# -- problems ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Why an event was rejected: a short machine-readable ``code`` and a human message."""

    code: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.code} at {self.path}: {self.message}"


@dataclass(frozen=True)
class Verdict:
    """The result of validating one raw event: the decoded event, or why it was refused."""

    event: dict[str, Any] | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reason_code(self) -> str | None:
        return self.problems[0].code if self.problems else None

    @property
    def reason(self) -> str | None:
        """Human message: the first few problems, enough to fix the producer."""
        if not self.problems:
            return None
        shown = "; ".join(str(p) for p in self.problems[:3])
        more = len(self.problems) - 3
        return shown + (f"; and {more} more" if more > 0 else "")


def refused(code: str, message: str, path: str = "") -> Verdict:
    return Verdict(None, (Problem(code, path, message),))


#: pydantic-core error type → our reason code (stable: quarantine rows and dashboards use them).
_CODES = {
    "missing": "missing_field",
    "greater_than": "out_of_range", "greater_than_equal": "out_of_range",
    "less_than": "out_of_range", "less_than_equal": "out_of_range",
    "finite_number": "not_finite",
    "string_too_short": "too_short", "string_too_long": "too_long",
    "too_short": "too_few_items", "too_long": "too_many_items",
    "literal_error": "unknown_value",
    "invalid_uuid": "invalid_uuid", "invalid_timestamp": "invalid_timestamp",
    "future_timestamp": "future_timestamp",
    "json_invalid": "not_json", "json_type": "not_json",
}
_EXPECTED = {"int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
             "bool_type": "true/false", "string_type": "a string", "list_type": "an array",
             "dict_type": "an object", "model_type": "an object", "typed_dict_type": "an object"}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _path(loc: tuple) -> str:
    """``("responses", 0, "correct")`` → ``responses[0].correct``."""
    out = ""
    for step in loc:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def _problem(error: dict) -> Problem:
    kind, loc, value = error["type"], tuple(error.get("loc", ())), error.get("input")
    path = _path(loc)
    if kind == "missing" or value is None:
        # A required field sent as null counts as missing (readers treat null as absent).
        return Problem("missing_field", path, f"required field {str(loc[-1])!r} is missing")
    if kind in _EXPECTED:
        return Problem("wrong_type", path, f"expected {_EXPECTED[kind]}, got {_describe(value)}")
    if kind == "literal_error" and not isinstance(value, str):
        # A number or a list where a name belongs is the wrong type, not an unknown name.
        expected = (error.get("ctx") or {}).get("expected", "")
        return Problem("wrong_type", path, f"expected a string ({expected}), got {_describe(value)}")
    code = _CODES.get(kind, kind)
    if code == "out_of_range":
        bound = next(iter((error.get("ctx") or {}).values()), None)
        side = "below the minimum" if kind.startswith("greater") else "above the maximum"
        return Problem(code, path, f"{value} is {side} {bound}")
    if code == "not_finite":
        return Problem(code, path, f"{value} is not a finite number")
    if code in ("too_few_items", "too_many_items") and isinstance(value, (list, dict)):
        limit = (error.get("ctx") or {}).get("min_length" if code == "too_few_items" else "max_length")
        word = "needs at least" if code == "too_few_items" else "allows at most"
        return Problem(code, path, f"{word} {limit} items, got {len(value)}")
    if code == "too_long":
        return Problem(code, path, f"longer than {(error.get('ctx') or {}).get('max_length')} characters "
                                   f"({len(value)})")
    if code == "too_short":
        return Problem(code, path, f"needs at least {(error.get('ctx') or {}).get('min_length')} characters")
    if code == "unknown_value":
        expected = str((error.get("ctx") or {}).get("expected", "")).replace("'", "").replace(" or ", ", ")
        key = DOMAIN_KEYS.get(path.rsplit(".", 1)[-1])
        return Problem(code, path, f"{str(value)[:64]!r} is not one of {expected}"
                                   + (f" (the config's {key}: add it there to accept it)" if key else ""))
    return Problem(code, path, error.get("msg", kind))


#: Fields whose allowed values come from the config (``domain:``): an unknown value names the key.
DOMAIN_KEYS = {"subject": "domain.subjects", "skill": "domain.skills"}


def _describe(value: Any) -> str:
    """``5.0`` for a float where an integer belongs (the rule people trip over), else the type."""
    if isinstance(value, float) and math.isfinite(value):
        return str(value)
    return _type_name(value)


# -- the contract -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldInfo:
    name: str
    required: bool


class Contract:
    """One event contract: its name, ``schema_version`` and the TypedDict that declares it."""

    def __init__(self, declaration: type, version: int, doc: str = ""):
        self.declaration = declaration
        self.name = declaration.__name__
        self.version = version
        self.doc = doc or (declaration.__doc__ or "").strip()
        self._adapter = TypeAdapter(declaration)

    def __repr__(self) -> str:
        return f"Contract({self.name} v{self.version})"

    @cached_property
    def fields(self) -> tuple[FieldInfo, ...]:
        required = getattr(self.declaration, "__required_keys__", frozenset())
        return tuple(FieldInfo(name, name in required) for name in typing.get_type_hints(self.declaration))

    def validate_bytes(self, raw: bytes | None, now: datetime | None = None, max_bytes: int | None = None) -> Verdict:
        """Decode and validate one raw Kafka value (or HTTP body item)."""
        if raw is None:
            return refused("empty", "the message has no value")
        if max_bytes is not None and len(raw) > max_bytes:
            return refused("too_large", f"{len(raw)} bytes; the limit is {max_bytes}")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return refused("not_utf8", f"not valid UTF-8 at byte {exc.start}")
        if b"NaN" in raw or b"Infinity" in raw:
            # pydantic's parser reads these literals, RFC 8259 does not: only on this rare path,
            # a strict parse tells whether one sits outside a string.
            try:
                from_json(raw, allow_inf_nan=False)
            except ValueError as exc:
                return refused("not_json", f"not a JSON document: {str(exc)[:120]}")
        try:
            event = self._adapter.validate_json(raw, strict=True, context={"now": now})
        except ValidationError as exc:
            return self._explain(exc, None)
        return Verdict(event, ())

    def validate(self, event: Any, now: datetime | None = None) -> Verdict:
        """Validate an already decoded event (a dict from ``json.loads``)."""
        if not isinstance(event, dict):
            return refused("not_an_object", "the event must be a JSON object")
        try:
            return Verdict(self._adapter.validate_python(event, strict=True, context={"now": now}), ())
        except ValidationError as exc:
            return self._explain(exc, event)

    def _explain(self, exc: ValidationError, event: Any) -> Verdict:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] in ("json_invalid", "json_type"):
            return refused("not_json", f"not a JSON document: {errors[0]['msg'][:120]}")
        if errors and not errors[0].get("loc") and errors[0]["type"] in _EXPECTED:
            return refused("not_an_object", "the event must be a JSON object")
        if event is None and any(isinstance(e.get("input"), float) and not math.isfinite(e["input"]) for e in errors):
            # A number past the range of a double (1e400) reads as infinity: not a JSON number we keep.
            return refused("not_json", "not a JSON document: a number is too large for a double")
        for error in errors:
            # Only another integer is another version; "1" or 1.0 are wrong types.
            if (error.get("loc") == ("schema_version",) and type(error.get("input")) is int
                    and error["type"].startswith(("greater", "less"))):
                return refused("unsupported_schema_version",
                               f"{self.name} schema_version {error['input']!r} is not supported "
                               f"(this reader knows version {self.version})", "schema_version")
        return Verdict(None, tuple(_problem(error) for error in errors))

    # -- derived forms ----------------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of this contract, for other teams and tools."""
        schema = self._adapter.json_schema(ref_template="#/$defs/{model}")
        schema = _optional_as_any_of_null(schema)
        out = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://learnscore.dev/schemas/{self.name}.v{self.version}.json",
            "title": self.name,
            "description": self.doc,
            **{key: value for key, value in schema.items() if key not in ("title", "description")},
            "additionalProperties": True,
        }
        if "schema_version" in out["properties"]:
            out["properties"]["schema_version"]["const"] = self.version
        return out

    def spark_schema(self):
        """The Spark ``StructType`` that ``from_json`` parses this contract with.

        Every field is nullable: Spark turns what it cannot parse into null, and the validator
        (run before) has already refused events with missing or mistyped fields.
        """
        return _spark_type(self.declaration)


def _optional_as_any_of_null(schema: Any) -> Any:
    """pydantic writes ``X | None`` as ``anyOf`` already; keep nested TypedDicts open to extra
    fields (readers ignore unknown fields) and drop pydantic's titles (noise for readers)."""
    if isinstance(schema, dict):
        cleaned = {key: _optional_as_any_of_null(value) for key, value in schema.items() if key != "title"}
        if cleaned.get("type") == "object" and "properties" in cleaned:
            cleaned["additionalProperties"] = True
        return cleaned
    if isinstance(schema, list):
        return [_optional_as_any_of_null(item) for item in schema]
    return schema


def _unwrap(annotation: Any) -> tuple[Any, tuple]:
    """``Annotated[X, meta...]`` / ``X | None`` / ``NotRequired[X]`` → (X, metadata)."""
    metadata: tuple = ()
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            metadata += annotation.__metadata__
            annotation = annotation.__origin__
        elif origin in (typing.Union, types.UnionType):
            options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            annotation = options[0]
        elif origin in (typing.NotRequired, typing.Required, typing_extensions.NotRequired, typing_extensions.Required):
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation, metadata


def _spark_type(annotation: Any):
    from pyspark.sql import types as T

    annotation, metadata = _unwrap(annotation)
    if any(isinstance(m, _Kind) and m.name == "timestamp" for m in metadata):
        return T.TimestampType()
    origin = typing.get_origin(annotation)
    if typing_extensions.is_typeddict(annotation):
        hints = typing.get_type_hints(annotation, include_extras=True)
        return T.StructType([T.StructField(name, _spark_type(hint), True) for name, hint in hints.items()])
    if origin is list:
        return T.ArrayType(_spark_type(typing.get_args(annotation)[0]), True)
    if origin is dict:
        return T.MapType(T.StringType(), _spark_type(typing.get_args(annotation)[1]), True)
    if annotation is bool:
        return T.BooleanType()
    if annotation is int:
        return T.LongType()
    if annotation is float:
        return T.DoubleType()
    return T.StringType()  # str, Literal[...]


def json_schema(contract: Contract) -> dict[str, Any]:
    return contract.json_schema()


def spark_schema(contract: Contract):
    return contract.spark_schema()


__all__ = ["Contract", "EventTime", "described", "Long", "MAX_NESTING", "Number", "Problem", "STRICT", "Timestamp",
           "Uuid", "Verdict", "integer", "json_schema", "nesting_depth", "number", "one_of", "parse_timestamp",
           "refused", "spark_schema", "text"]
