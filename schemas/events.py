"""The event contracts of learnscore (DESIGN §4), each written once.

``validate_bytes`` is the one validator: the stream, the REST endpoint and the tests call it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from learnscore.schemas.contract import (
    Array,
    Boolean,
    Field,
    Integer,
    Number,
    NumberMap,
    Problem,
    Record,
    String,
    Timestamp,
    Uuid,
    compile_acceptor,
    find_problems,
)

SUBJECTS = ("math", "reading", "science")
LEVELS = ("beginner", "developing", "proficient", "advanced")  # ordered, lowest first
MAX_EVENT_BYTES = 256 * 1024
MAX_FUTURE = timedelta(minutes=5)  # producers' clocks may run a little ahead, not more
ONE_HOUR_MS = 3_600_000

log = logging.getLogger(__name__)

_ID = String(min_length=1, max_length=128)


def _envelope(version: int) -> tuple[Field, ...]:
    return (
        Field("event_id", Uuid(), doc="UUID; the idempotency key of the event"),
        Field("schema_version", Integer(minimum=version, maximum=version), doc="contract version"),
        Field("event_time", Timestamp(max_future=MAX_FUTURE),
              doc="when it happened, RFC 3339 such as 2026-01-31T09:30:00.250Z or "
                  "2026-01-31T10:30:00+01:00; at most 5 minutes ahead of the reader's clock"),
    )


RESPONSE = Record(
    "Response",
    (
        Field("item_id", String(min_length=1, max_length=64)),
        Field("skill", String(min_length=1, max_length=64)),
        Field("correct", Boolean()),
        Field("response_time_ms", Integer(minimum=0, maximum=ONE_HOUR_MS)),
        Field("attempts", Integer(minimum=1, maximum=100)),
        Field("hint_used", Boolean()),
    ),
    doc="One answered item of a diagnostic test.",
)

DIAGNOSTIC_SUBMITTED = Record(
    "DiagnosticSubmitted",
    _envelope(1) + (
        Field("learner_id", _ID, doc="the platform's learner id (pseudonymised in BI tables)"),
        Field("assessment_id", _ID),
        Field("subject", String(enum=SUBJECTS)),
        Field("grade_level", Integer(minimum=1, maximum=12)),
        Field("responses", Array(RESPONSE, min_items=1, max_items=200)),
    ),
    doc="A learner submitted a diagnostic test. Topic diagnostic.submissions, key = learner_id.",
    version=1,
)

OUTCOME_OBSERVED = Record(
    "OutcomeObserved",
    _envelope(1) + (
        Field("submission_event_id", Uuid(), doc="event_id of the DiagnosticSubmitted it measures"),
        Field("learner_id", _ID),
        Field("observed_progress_score", Number(minimum=0, maximum=100)),
        Field("observed_comprehension_level", String(enum=LEVELS)),
    ),
    doc="The observed outcome of a learner, weeks after the diagnostic. Topic diagnostic.outcomes.",
    version=1,
)

SCORE_ISSUED = Record(
    "ScoreIssued",
    _envelope(1) + (
        Field("submission_event_id", Uuid()),
        Field("learner_id", _ID),
        Field("progress_score", Number(minimum=0, maximum=100)),
        Field("comprehension_level", String(enum=LEVELS)),
        Field("probabilities", NumberMap(max_entries=len(LEVELS)), doc="level → probability"),
        Field("model_name", _ID),
        Field("model_version", _ID),
        Field("model_alias", String(max_length=64), required=False),
        Field("scored_at", Timestamp()),
    ),
    doc="Predictions for one submission. Topic diagnostic.scores, key = learner_id; "
        "event_id is derived from (submission_event_id, model_version) so redeliveries dedupe.",
    version=1,
)

RETRAIN_REQUESTED = Record(
    "RetrainRequested",
    _envelope(1) + (
        Field("trigger", String(enum=("drift", "schedule", "manual"))),
        Field("detector", String(max_length=128), required=False),
        Field("segment", String(max_length=128), required=False),
        Field("statistic", String(max_length=128), required=False),
        Field("evidence", NumberMap(max_entries=50), required=False,
              doc="window means before/after, counts, detector statistic"),
        Field("evidence_window_start", Timestamp(), required=False),
        Field("evidence_window_end", Timestamp(), required=False),
        Field("detected_at", Timestamp()),
    ),
    doc="Ask the retrain worker for a new model. Topic model.retrain-requests; event_id is the request id.",
    version=1,
)

_LIFECYCLE_FIELDS = _envelope(1) + (
    Field("model_name", _ID),
    Field("version", _ID, doc="the version this event is about"),
    Field("alias", String(max_length=64), required=False),
    Field("previous_version", String(max_length=128), required=False,
          doc="the version the alias pointed to before"),
    Field("actor", String(max_length=128), doc="who or what acted (user, retrain-worker, ...)"),
    Field("reason", String(max_length=2000)),
    Field("metrics", NumberMap(), required=False),
)

MODEL_REGISTERED = Record("ModelRegistered", _LIFECYCLE_FIELDS,
                          doc="A new model version was registered. Topic model.lifecycle.", version=1)
MODEL_PROMOTED = Record("ModelPromoted", _LIFECYCLE_FIELDS,
                        doc="An alias moved forward to a version. Topic model.lifecycle.", version=1)
MODEL_ROLLED_BACK = Record("ModelRolledBack", _LIFECYCLE_FIELDS,
                           doc="`production` moved back to its previous version. Topic model.lifecycle.",
                           version=1)

EVENTS: dict[str, Record] = {
    record.name: record
    for record in (DIAGNOSTIC_SUBMITTED, OUTCOME_OBSERVED, SCORE_ISSUED, RETRAIN_REQUESTED,
                   MODEL_REGISTERED, MODEL_PROMOTED, MODEL_ROLLED_BACK)
}


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


_ACCEPTORS = {name: compile_acceptor(record) for name, record in EVENTS.items()}


def validate_event(record: Record, event: Any, now: datetime | None = None) -> Verdict:
    now = now or datetime.now(timezone.utc)
    if _ACCEPTORS[record.name](event, now):
        return Verdict(event, ())
    problems = find_problems(record, event, now)
    if not problems:  # the two derivations disagree: refuse (never a silent accept) and say so
        log.error("contract acceptor and validator disagree on a %s", record.name)
        problems = [Problem("contract_mismatch", "", "the fast and the explaining validator "
                            "disagree on this event; report it with the raw event")]
    return Verdict(None, tuple(problems))


def validate_bytes(record: Record, raw: bytes | None, now: datetime | None = None) -> Verdict:
    """Decode and validate one raw Kafka value (or HTTP body item).

    >>> validate_bytes(DIAGNOSTIC_SUBMITTED, b"not json").reason_code
    'not_json'
    """
    if raw is None:
        return Verdict(None, (Problem("empty", "", "the message has no value"),))
    if len(raw) > MAX_EVENT_BYTES:
        return Verdict(None, (Problem("too_large", "", f"{len(raw)} bytes; the limit is {MAX_EVENT_BYTES}"),))
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Verdict(None, (Problem("not_utf8", "", f"not valid UTF-8 at byte {exc.start}"),))
    try:
        # orjson refuses NaN/Infinity literals, as RFC 8259 JSON does.
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Verdict(None, (Problem("not_json", "", f"not a JSON document: {str(exc)[:120]}"),))
    if not isinstance(event, dict):
        return Verdict(None, (Problem("not_an_object", "", "the event must be a JSON object"),))
    return validate_event(record, event, now)
