"""The contract: one pydantic declaration per event; its validator and its JSON Schema agree.

The validator (pydantic-core, strict) and the exported JSON Schema are two derivations of the
same declaration; a property test mutates the example of every event (values on and past their
limits, wrong types, deletions, additions, grown arrays) and holds the two to the same verdict.
The divergences written down in schemas/README.md (an integral float for an integer field; a
timestamp ahead of the reader's clock) are left out of the mutations.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learnscore.schemas.contract import parse_timestamp
from learnscore.schemas.domain import Domain
from learnscore.schemas.events import (
    DIAGNOSTIC_SUBMITTED,
    EVENTS,
    MAX_EVENT_BYTES,
    OUTCOME_OBSERVED,
    contracts_for,
    validate_bytes,
    validate_event,
)
from learnscore.schemas.examples import example_events

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)

# -- mutations ---------------------------------------------------------------------------------

_EDGE_STRINGS = [
    "", " ", "x" * 65, "x" * 129, "x" * 2001, "math", "Math", "beginner", "Advanced", "drift",
    "8d7e3c52-4b1a-4f0e-9a57-1c2d3e4f5a6b", "8d7e3c52-4b1a-4f0e-9a57-1c2d3e4f5a6b\n",
    "8D7E3C52-4B1A-4F0E-9A57-1C2D3E4F5A6B", "8d7e3c524b1a4f0e9a571c2d3e4f5a6b",
    "2026-01-31T09:30:00Z", "2026-01-31t09:30:00z", "2026-01-31 09:30:00Z", "2026-01-31T09:30:00",
    "2026-01-31T09:30:00.123456789Z", "2026-01-31T09:30:00+18:00", "2026-01-31T09:30:00-19:00",
    "2026-01-31T24:00:00Z", "2026-01-31T09:30:60Z", "0000-01-01T00:00:00Z",
    "2026-05-31T23:59:00Z", "2026-06-01T00:04:59Z", "2026-01-31T09:30:00Z\n", "٢٠٢٦-01-31T09:30:00Z",
    "\ufeff2026-01-31T09:30:00Z", "é" * 64, "é" * 65,
]
_EDGE_INTS = [0, 1, -1, 5, 12, 13, 100, 101, 200, 3_600_000, 3_600_001, 2**63 - 1, 2**63, -(2**63), 2**64]
_EDGE_FLOATS = [1.5, 99.99, 100.5, -0.1, 1e300, 0.25]  # no integral floats: a documented divergence

json_leaf = st.one_of(
    st.none(), st.booleans(), st.sampled_from(_EDGE_INTS), st.integers(),
    st.sampled_from(_EDGE_FLOATS),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    st.sampled_from(_EDGE_STRINGS), st.text(max_size=20),
)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)


def _near(value: Any):
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.one_of(st.sampled_from(_EDGE_INTS), st.sampled_from([value - 1, value + 1, -value]))
    if isinstance(value, float):
        return st.one_of(st.sampled_from(_EDGE_FLOATS), st.floats(-1, 101).filter(lambda f: not f.is_integer()))
    if isinstance(value, str):
        return st.one_of(st.sampled_from(_EDGE_STRINGS), st.just(value[:-1]), st.just(value + "x"))
    return json_value


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location inside a decoded JSON value (dict keys and list indices)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, prefix + (index,))
    return found


@st.composite
def mutated_events(draw, names=tuple(EVENTS)):
    name = draw(st.sampled_from(names))
    event = example_events()[name]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(event)[1:]))
        parent = event
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["near", "near", "near", "replace", "delete", "add", "grow"]))
        last = path[-1]
        if action == "near":  # a value of the same type, often on or just past a boundary
            parent[last] = draw(_near(parent[last]))
        elif action == "replace":
            parent[last] = draw(json_value)
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_value)
        elif action == "grow" and isinstance(parent[last], list):
            parent[last] = parent[last] * draw(st.sampled_from([0, 2, 101, 201]))
    return name, event


def _json_schema_verdict(name: str, event: Any) -> bool:
    validator = jsonschema.Draft202012Validator(EVENTS[name].json_schema(), format_checker=_format_checker())
    return not any(True for _ in validator.iter_errors(event))


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(list(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers))

    @checker.checks("date-time", raises=ValueError)
    def date_time(value: object) -> bool:
        return not isinstance(value, str) or parse_timestamp(value) is not None

    return checker


def _floats_anywhere(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value) or value.is_integer()
    if isinstance(value, dict):
        return any(_floats_anywhere(v) for v in value.values())
    if isinstance(value, list):
        return any(_floats_anywhere(v) for v in value)
    return False


@settings(max_examples=600, deadline=None)
@given(mutated_events())
def test_validator_and_json_schema_agree_on_mutated_events(case):
    name, event = case
    if _floats_anywhere(event):  # an integral float: the documented divergence
        return
    verdict = validate_event(EVENTS[name], event, NOW)
    assert verdict.ok == _json_schema_verdict(name, event), (verdict.reason, event)
    # bytes and decoded dicts take the same path to the same verdict
    raw = json.dumps(event).encode()  # the standard library: orjson refuses integers past 64 bits
    from_bytes = validate_bytes(EVENTS[name], raw, NOW)
    if len(raw) > MAX_EVENT_BYTES:  # the size check comes first on bytes (a dict has no size)
        assert from_bytes.reason_code == "too_large"
    else:
        assert from_bytes.reason_code == verdict.reason_code


@settings(max_examples=200, deadline=None)
@given(json_value)
def test_any_json_is_either_valid_or_has_a_reason(value):
    for contract in EVENTS.values():
        verdict = validate_event(contract, value, NOW)
        assert verdict.ok or (verdict.reason_code and verdict.reason)


# -- the bugs earlier versions had, pinned ------------------------------------------------------


@pytest.mark.parametrize("text", [
    "2026-01-31t09:30:00z",  # Spark reads lower-case t/z as null
    "2026-01-31T09:30:00+19:00",  # Spark allows offsets up to 18 hours
    "2026-01-31T09:30:00Z\n",
    "٢٠٢٦-01-31T09:30:00Z",  # Arabic-Indic digits matched \\d
    "2026-02-30T09:30:00Z",
])
def test_timestamps_spark_cannot_read_are_refused(text):
    assert parse_timestamp(text) is None
    event = example_events()["DiagnosticSubmitted"]
    event["event_time"] = text
    assert validate_event(DIAGNOSTIC_SUBMITTED, event, NOW).reason_code == "invalid_timestamp"


def test_uuid_with_a_trailing_newline_is_refused():
    event = example_events()["DiagnosticSubmitted"]
    event["event_id"] += "\n"
    assert validate_event(DIAGNOSTIC_SUBMITTED, event, NOW).reason_code == "invalid_uuid"


@pytest.mark.parametrize("value, code", [(2**63 - 1, None), (2**63, "out_of_range"), (-(2**63) - 1, "out_of_range"),
                                         (5.0, "wrong_type"), (True, "wrong_type"), ("5", "wrong_type"),
                                         (None, "missing_field")])
def test_integers_are_64_bit_and_never_floats(value, code):
    from typing_extensions import TypedDict

    from learnscore.schemas.contract import STRICT, Contract, integer

    Counter = TypedDict("Counter", {"n": integer()})  # noqa: UP013 - the test module postpones annotations
    Counter.__pydantic_config__ = STRICT

    verdict = Contract(Counter, version=1).validate({"n": value}, NOW)
    assert verdict.reason_code == code
    assert Contract(Counter, version=1).json_schema()["properties"]["n"]["maximum"] == 2**63 - 1


@pytest.mark.parametrize("version, code", [(2, "unsupported_schema_version"), ("1", "wrong_type"),
                                           (1.0, "wrong_type"), (True, "wrong_type")])
def test_schema_version(version, code):
    event = example_events()["OutcomeObserved"]
    event["schema_version"] = version
    assert validate_event(OUTCOME_OBSERVED, event, NOW).reason_code == code


def test_validate_bytes_reasons_for_undecodable_messages():
    assert validate_bytes(DIAGNOSTIC_SUBMITTED, None).reason_code == "empty"
    assert validate_bytes(DIAGNOSTIC_SUBMITTED, b'{"a": "caf\xe9"}').reason_code == "not_utf8"
    assert validate_bytes(DIAGNOSTIC_SUBMITTED, b"{oops").reason_code == "not_json"
    assert validate_bytes(DIAGNOSTIC_SUBMITTED, b"[1, 2]").reason_code == "not_an_object"
    assert validate_bytes(DIAGNOSTIC_SUBMITTED, b" " * (256 * 1024 + 1)).reason_code == "too_large"
    ok = validate_bytes(DIAGNOSTIC_SUBMITTED, orjson.dumps(example_events()["DiagnosticSubmitted"]), NOW)
    assert ok.ok and ok.reason is None and ok.event["grade_level"] == 5


def test_non_finite_numbers_are_refused():
    event = orjson.dumps(example_events()["OutcomeObserved"]).replace(b'"observed_progress_score":64.5',
                                                                       b'"observed_progress_score":NaN')
    assert b"NaN" in event
    assert validate_bytes(OUTCOME_OBSERVED, event, NOW).reason_code in ("not_finite", "not_json")


def test_reason_names_the_first_problems_and_counts_the_rest():
    event = example_events()["DiagnosticSubmitted"]
    for response in event["responses"]:
        response["attempts"] = 0
        response["correct"] = "yes"
    verdict = validate_event(DIAGNOSTIC_SUBMITTED, event, NOW)
    assert verdict.reason_code == "wrong_type"
    assert verdict.reason.startswith("wrong_type at responses[0].correct: expected true/false, got string")
    assert verdict.reason.endswith("; and 1 more")


def test_a_domain_sets_the_subjects_grades_and_skills():
    domain = Domain(subjects=("math", "music"), grade_min=3, grade_max=6, skills=("rhythm", "fractions"))
    contract = contracts_for(domain).diagnostic_submitted
    event = example_events()["DiagnosticSubmitted"]
    for response in event["responses"]:
        response["skill"] = "rhythm"
    event["subject"] = "music"
    assert validate_event(contract, event, NOW).ok
    assert validate_event(DIAGNOSTIC_SUBMITTED, event, NOW).reason_code == "unknown_value"
    event["grade_level"] = 7
    assert validate_event(contract, event, NOW).reason_code == "out_of_range"
    event["grade_level"] = 5
    event["responses"][0]["skill"] = "algebra"
    verdict = validate_event(contract, event, NOW)
    assert verdict.reason_code == "unknown_value" and "rhythm" in verdict.reason
    assert contract.json_schema()["properties"]["subject"]["enum"] == ["math", "music"]
