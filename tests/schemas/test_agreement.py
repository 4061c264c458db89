"""JSON Schema, the Spark schema and the validator agree on one shared set of examples.

Where they cannot agree, it is written down here (and in schemas/README.md):
- JSON Schema's data model cannot tell ``5`` from ``5.0``; the validator refuses ``5.0`` for an
  integer field because Spark reads it as null.
- "not far in the future" depends on the reader's clock; JSON Schema has no way to say it.
Spark itself checks types only: it reads a range or enum violation as a value, and a type or
timestamp violation as null — the validator must refuse both kinds before Spark sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import jsonschema
import orjson
import pytest

from learnscore.schemas.contract import json_schema, parse_timestamp, spark_schema
from learnscore.schemas.events import EVENTS, validate_bytes
from learnscore.schemas.examples import example_events

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Case:
    name: str
    event: str  # contract name
    change: Callable[[dict], None]
    reason: str | None  # expected reason_code; None = valid
    spark: str = "value"  # "value": Spark reads a value at `path`; "null": Spark reads null there
    path: str | None = None  # dotted path Spark is checked at (invalid cases)
    json_schema_accepts: bool = False  # a documented divergence (see the module docstring)


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def change(event: dict) -> None:
        node = event
        steps = [int(s) if s.isdigit() else s for s in path.split(".")]
        for step in steps[:-1]:
            node = node[step]
        if value is _DELETE:
            del node[steps[-1]]
        else:
            node[steps[-1]] = value
    return change


_DELETE = object()


def _same(event: dict) -> None:
    pass


def _grow_responses(count: int) -> Callable[[dict], None]:
    def change(event: dict) -> None:
        event["responses"] = (event["responses"] * count)[:count]
    return change


CASES = [
    *[Case(f"example {name}", name, _same, None) for name in EVENTS],
    Case("offset and nanoseconds", "DiagnosticSubmitted", _set("event_time", "2026-01-31T15:00:00.123456789+05:30"), None),
    Case("unknown extra field", "DiagnosticSubmitted", _set("device", {"os": "android"}), None),
    Case("optional field null", "ScoreIssued", _set("model_alias", None), None),
    Case("optional field absent", "ModelRolledBack", _set("previous_version", _DELETE), None),
    Case("200 responses", "DiagnosticSubmitted", _grow_responses(200), None),
    Case("boundaries", "DiagnosticSubmitted", lambda e: (_set("grade_level", 12)(e), _set("responses.0.response_time_ms", 3_600_000)(e), _set("responses.1.response_time_ms", 0)(e)), None),
    Case("score 0", "OutcomeObserved", _set("observed_progress_score", 0), None),
    Case("score 100", "OutcomeObserved", _set("observed_progress_score", 100.0), None),
    # invalid: types (Spark reads null)
    Case("grade as string", "DiagnosticSubmitted", _set("grade_level", "5"), "wrong_type", "null", "grade_level"),
    Case("grade as 5.0", "DiagnosticSubmitted", _set("grade_level", 5.0), "wrong_type", "null", "grade_level", json_schema_accepts=True),
    Case("correct as string", "DiagnosticSubmitted", _set("responses.0.correct", "yes"), "wrong_type", "null", "responses.0.correct"),
    Case("response time as float", "DiagnosticSubmitted", _set("responses.1.response_time_ms", 1234.5), "wrong_type", "null", "responses.1.response_time_ms"),
    Case("responses as object", "DiagnosticSubmitted", _set("responses", {"a": 1}), "wrong_type", "null", "responses"),
    Case("score as string", "OutcomeObserved", _set("observed_progress_score", "64.5"), "wrong_type", "null", "observed_progress_score"),
    Case("probability as string", "ScoreIssued", _set("probabilities.advanced", "high"), "wrong_type", "null", "probabilities.advanced"),
    Case("missing learner", "DiagnosticSubmitted", _set("learner_id", _DELETE), "missing_field", "null", "learner_id"),
    Case("null required field", "OutcomeObserved", _set("submission_event_id", None), "missing_field", "null", "submission_event_id"),
    Case("lower-case t and z", "DiagnosticSubmitted", _set("event_time", "2026-01-31t09:30:00z"), "invalid_timestamp", "null", "event_time"),
    Case("offset beyond 18h", "OutcomeObserved", _set("event_time", "2026-02-28T10:00:00+19:00"), "invalid_timestamp", "null", "event_time"),
    Case("no such day", "DiagnosticSubmitted", _set("event_time", "2026-02-30T09:30:00Z"), "invalid_timestamp", "null", "event_time"),
    Case("not a date", "RetrainRequested", _set("detected_at", "yesterday"), "invalid_timestamp", "null", "detected_at"),
    # invalid: only the validator (and JSON Schema) can see it; Spark reads a value
    Case("learner id as number", "DiagnosticSubmitted", _set("learner_id", 123), "wrong_type", "value", "learner_id"),
    Case("no time zone", "DiagnosticSubmitted", _set("event_time", "2026-01-31T09:30:00"), "invalid_timestamp", "value", "event_time"),
    Case("unknown subject", "DiagnosticSubmitted", _set("subject", "history"), "unknown_value", "value", "subject"),
    Case("unknown level", "OutcomeObserved", _set("observed_comprehension_level", "expert"), "unknown_value", "value", "observed_comprehension_level"),
    Case("unknown trigger", "RetrainRequested", _set("trigger", "cron"), "unknown_value", "value", "trigger"),
    Case("grade 13", "DiagnosticSubmitted", _set("grade_level", 13), "out_of_range", "value", "grade_level"),
    Case("negative response time", "DiagnosticSubmitted", _set("responses.0.response_time_ms", -1), "out_of_range", "value", "responses.0.response_time_ms"),
    Case("response time over an hour", "DiagnosticSubmitted", _set("responses.0.response_time_ms", 3_600_001), "out_of_range", "value", "responses.0.response_time_ms"),
    Case("no attempts", "DiagnosticSubmitted", _set("responses.1.attempts", 0), "out_of_range", "value", "responses.1.attempts"),
    Case("score above 100", "OutcomeObserved", _set("observed_progress_score", 100.5), "out_of_range", "value", "observed_progress_score"),
    Case("bad uuid", "DiagnosticSubmitted", _set("event_id", "evt-123"), "invalid_uuid", "value", "event_id"),
    Case("uuid and newline", "ScoreIssued", _set("event_id", "3b9f6a1e-2c4d-4e8f-9a0b-1c2d3e4f5061\n"), "invalid_uuid", "value", "event_id"),
    Case("empty assessment id", "DiagnosticSubmitted", _set("assessment_id", ""), "too_short", "value", "assessment_id"),
    Case("long reason", "ModelPromoted", _set("reason", "x" * 2001), "too_long", "value", "reason"),
    Case("no responses", "DiagnosticSubmitted", _grow_responses(0), "too_few_items", "value", "responses"),
    Case("201 responses", "DiagnosticSubmitted", _grow_responses(201), "too_many_items", "value", "responses"),
    Case("schema version 2", "OutcomeObserved", _set("schema_version", 2), "unsupported_schema_version", "value", "schema_version"),
    Case("far future", "DiagnosticSubmitted", _set("event_time", "2999-01-01T00:00:00Z"), "future_timestamp", "value", "event_time", json_schema_accepts=True),
]


def _event(case: Case) -> dict:
    event = example_events()[case.event]
    case.change(event)
    return event


def _format_checker() -> jsonschema.FormatChecker:
    """Draft 2020-12 formats, asserted; date-time by the standard library (jsonschema checks it
    only when the optional rfc3339-validator package is installed)."""
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER

    def date_time(value: object) -> bool:
        if isinstance(value, str):
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True

    checker = jsonschema.FormatChecker(list(checker.checkers))
    checker.checks("date-time", raises=ValueError)(date_time)
    return checker


def test_cases_cover_every_reason_code():
    reasons = {case.reason for case in CASES if case.reason}
    assert reasons == {"wrong_type", "missing_field", "invalid_timestamp", "unknown_value", "out_of_range",
                       "invalid_uuid", "too_short", "too_long", "too_few_items", "too_many_items",
                       "unsupported_schema_version", "future_timestamp"}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_validator_gives_the_expected_reason(case):
    verdict = validate_bytes(EVENTS[case.event], orjson.dumps(_event(case)), NOW)
    assert verdict.reason_code == case.reason, verdict.reason


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_json_schema_agrees_with_the_validator(case):
    schema = json_schema(EVENTS[case.event])
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=_format_checker())
    errors = list(validator.iter_errors(_event(case)))
    valid_for_json_schema = not errors
    expected = case.reason is None or case.json_schema_accepts
    assert valid_for_json_schema == expected, [e.message for e in errors]


def _at(value: Any, path: str) -> Any:
    for step in path.split("."):
        if value is None:
            return None
        value = value[int(step)] if isinstance(value, list) else value.get(step)
    return value


def _same_value(sent: Any, read: Any) -> bool:
    if isinstance(sent, dict):
        return isinstance(read, dict) and all(_same_value(v, read.get(k)) for k, v in sent.items())
    if isinstance(sent, list):
        return isinstance(read, list) and len(sent) == len(read) and all(map(_same_value, sent, read))
    if isinstance(sent, str) and parse_timestamp(sent) is not None and isinstance(read, str):
        return parse_timestamp(sent) == parse_timestamp(read)
    return sent == read


_MICROSECONDS = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"}


@pytest.mark.integration
def test_spark_reads_valid_examples_whole_and_invalid_ones_as_described(spark):
    from pyspark.sql import functions as F

    rows = []
    for index, case in enumerate(CASES):
        rows.append((index, orjson.dumps(_event(case)).decode()))
    frame = spark.createDataFrame(rows, "case int, raw string")
    parsed = {}
    for name, record in EVENTS.items():
        wanted = [i for i, case in enumerate(CASES) if case.event == name]
        result = (frame.where(F.col("case").isin(wanted))
                  .select("case", F.to_json(F.from_json("raw", spark_schema(record)), _MICROSECONDS).alias("json"))
                  .collect())
        parsed.update({row["case"]: orjson.loads(row["json"]) for row in result})

    for index, case in enumerate(CASES):
        sent, read = _event(case), parsed[index]
        if case.reason is None:
            # Every field sent is read back, with the same value (to_json leaves nulls out).
            known = {k: v for k, v in sent.items() if k in {f.name for f in EVENTS[case.event].fields} and v is not None}
            assert _same_value(known, read), (case.name, read)
        elif case.spark == "null":
            assert _at(read, case.path) is None, (case.name, read)
        else:
            assert _at(read, case.path) is not None, (case.name, read)
