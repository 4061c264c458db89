"""The contract language: the compiled acceptor and the explaining validator never disagree."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learnscore.schemas.contract import (
    Field,
    Integer,
    Record,
    compile_acceptor,
    find_problems,
    json_schema,
    parse_timestamp,
)
from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, EVENTS, OUTCOME_OBSERVED, validate_bytes, validate_event
from learnscore.schemas.examples import example_events

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
ACCEPTORS = {name: compile_acceptor(record) for name, record in EVENTS.items()}




# -- mutations ---------------------------------------------------------------------------------

_EDGE_STRINGS = [
    "", " ", "x" * 65, "x" * 129, "x" * 2001, "math", "Math", "beginner", "Advanced", "drift",
    "8d7e3c52-4b1a-4f0e-9a57-1c2d3e4f5a6b", "8d7e3c52-4b1a-4f0e-9a57-1c2d3e4f5a6b\n",
    "8D7E3C52-4B1A-4F0E-9A57-1C2D3E4F5A6B", "8d7e3c524b1a4f0e9a571c2d3e4f5a6b",
    "2026-01-31T09:30:00Z", "2026-01-31t09:30:00z", "2026-01-31 09:30:00Z", "2026-01-31T09:30:00",
    "2026-01-31T09:30:00.123456789Z", "2026-01-31T09:30:00+18:00", "2026-01-31T09:30:00-19:00",
    "2026-02-30T09:30:00Z", "2026-01-31T24:00:00Z", "2026-01-31T09:30:60Z", "0000-01-01T00:00:00Z",
    "2026-05-31T23:59:00Z", "2026-06-01T00:04:59Z", "2026-06-01T00:05:01Z", "2999-01-01T00:00:00Z",
    "2026-01-31T09:30:00Z\n", "٢٠٢٦-01-31T09:30:00Z",
]
_EDGE_INTS = [0, 1, -1, 5, 12, 13, 100, 101, 200, 3_600_000, 3_600_001, 2**63 - 1, 2**63, -(2**63), 2**64]
_EDGE_FLOATS = [0.0, -0.0, 5.0, 1.5, 99.99, 100.0, 100.5, -0.1, 1e300]

json_leaf = st.one_of(
    st.none(), st.booleans(), st.sampled_from(_EDGE_INTS), st.integers(),
    st.sampled_from(_EDGE_FLOATS), st.floats(allow_nan=False, allow_infinity=False),
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
        return st.one_of(st.sampled_from(_EDGE_FLOATS), st.floats(-1, 101))
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
        if not isinstance(event, dict):
            break
    return name, event


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_acceptor_and_validator_agree_on_mutated_events(case):
    name, event = case
    accepted = ACCEPTORS[name](event, NOW)
    problems = find_problems(EVENTS[name], event, NOW)
    assert accepted == (not problems), (accepted, problems)
    verdict = validate_event(EVENTS[name], event, NOW)
    assert verdict.reason_code != "contract_mismatch"


@settings(max_examples=300, deadline=None)
@given(json_value)
def test_acceptor_and_validator_agree_on_any_json(value):
    for name, record in EVENTS.items():
        assert ACCEPTORS[name](value, NOW) == (not find_problems(record, value, NOW))


# -- the bugs these tests found, pinned --------------------------------------------------------


@pytest.mark.parametrize("text", [
    "2026-01-31t09:30:00z",  # Spark reads lower-case t/z as null
    "2026-01-31T09:30:00+19:00",  # Spark allows offsets up to 18 hours
    "2026-01-31T09:30:00Z\n",
    "٢٠٢٦-01-31T09:30:00Z",  # Arabic-Indic digits matched \\d
    "2026-02-30T09:30:00Z",
])
def test_timestamps_spark_cannot_read_are_refused(text):
    assert parse_timestamp(text) is None


def test_uuid_with_a_trailing_newline_is_refused():
    event = example_events()["DiagnosticSubmitted"]
    event["event_id"] += "\n"
    assert validate_event(DIAGNOSTIC_SUBMITTED, event, NOW).reason_code == "invalid_uuid"


def test_integers_beyond_64_bits_are_out_of_range_even_without_bounds():
    record = Record("Counter", (Field("n", Integer()),))
    accept = compile_acceptor(record)
    assert accept({"n": 2**63 - 1}, NOW) and not accept({"n": 2**63}, NOW)
    assert [p.code for p in find_problems(record, {"n": 2**63})] == ["out_of_range"]
    assert json_schema(record)["properties"]["n"]["maximum"] == 2**63 - 1


@pytest.mark.parametrize("version, code", [(2, "unsupported_schema_version"), ("1", "wrong_type"),
                                           (1.0, "wrong_type"), (True, "wrong_type")])
def test_schema_version(version, code):
    event = example_events()["OutcomeObserved"]
    event["schema_version"] = version
    assert validate_event(OUTCOME_OBSERVED, event, NOW).reason_code == code


def test_validate_bytes_reasons_for_undecodable_messages():
    assert validate_bytes(DIAGNOSTIC_SUBMITTED, None).reason_code == "empty"
    assert validate_bytes(DIAGNOSTIC_SUBMITTED, b'{"a": "caf\xe9"}').reason_code == "not_utf8"
    assert validate_bytes(DIAGNOSTIC_SUBMITTED, b'{"a": NaN}').reason_code == "not_json"
    assert validate_bytes(DIAGNOSTIC_SUBMITTED, b"[1, 2]").reason_code == "not_an_object"
    assert validate_bytes(DIAGNOSTIC_SUBMITTED, b" " * (256 * 1024 + 1)).reason_code == "too_large"
    ok = validate_bytes(DIAGNOSTIC_SUBMITTED, orjson.dumps(example_events()["DiagnosticSubmitted"]), NOW)
    assert ok.ok and ok.reason is None


def test_reason_names_the_first_problems_and_counts_the_rest():
    event = example_events()["DiagnosticSubmitted"]
    for response in event["responses"]:
        response["attempts"] = 0
        response["correct"] = "yes"
    verdict = validate_event(DIAGNOSTIC_SUBMITTED, event, NOW)
    assert verdict.reason_code == "wrong_type"
    assert verdict.reason.startswith("wrong_type at responses[0].correct: expected true/false, got string")
    assert verdict.reason.endswith("; and 1 more")
