"""The event contracts of learnscore, each declared once (see :mod:`learnscore.schemas.contract`).

The values a submission may carry (subjects, grades, skills) come from the platform's
:class:`~learnscore.schemas.domain.Domain`; :func:`contracts_for` builds the contracts of a
domain, and the module-level names (``DIAGNOSTIC_SUBMITTED``, ``EVENTS``, …) are those of the
default domain. ``validate_bytes`` is the one validator: the stream, the REST endpoint, the
history import and the tests call it.
"""

# No "from __future__ import annotations": the contracts are built per domain inside a function,
# and pydantic must see their field types as objects, not as names it cannot resolve there.
import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NotRequired

# typing_extensions: pydantic needs its TypedDict on Python < 3.12.
from typing_extensions import TypedDict

from learnscore.schemas.contract import (
    MAX_FUTURE,
    STRICT,
    Contract,
    EventTime,
    Timestamp,
    Uuid,
    Verdict,
    described,
    integer,
    number,
    one_of,
    text,
)
from learnscore.schemas.domain import DEFAULT_DOMAIN, LEVELS, Domain

MAX_EVENT_BYTES = 256 * 1024
ONE_HOUR_MS = 3_600_000
__all__ = ["DIAGNOSTIC_SUBMITTED", "EVENTS", "LEVELS", "MAX_EVENT_BYTES", "MAX_FUTURE", "MODEL_PROMOTED",
           "MODEL_REGISTERED", "MODEL_ROLLED_BACK", "OUTCOME_OBSERVED", "RETRAIN_REQUESTED", "SCORE_ISSUED",
           "SUBJECTS", "EventContracts", "contracts_for", "validate_bytes", "validate_event"]

_Id = text(1, 128)
_EVENT_ID = described(Uuid, "UUID; the idempotency key of the event")
_VERSION = described(integer(1, 1), "contract version")
_LEARNER = described(_Id, "the platform's learner id (pseudonymised in BI tables)")


@dataclass(frozen=True)
class EventContracts:
    """Every event contract of one domain."""

    diagnostic_submitted: Contract
    outcome_observed: Contract
    score_issued: Contract
    retrain_requested: Contract
    model_registered: Contract
    model_promoted: Contract
    model_rolled_back: Contract

    @property
    def events(self) -> dict[str, Contract]:
        return {contract.name: contract for contract in (
            self.diagnostic_submitted, self.outcome_observed, self.score_issued, self.retrain_requested,
            self.model_registered, self.model_promoted, self.model_rolled_back)}


@functools.cache
def contracts_for(domain: Domain = DEFAULT_DOMAIN) -> EventContracts:
    """The contracts of ``domain`` (built once per domain)."""
    # Distinct names: a class body cannot see a function's local of the same name as a field.
    skill_type = one_of(domain.skills) if domain.skills else text(1, 64)
    subject_type = one_of(domain.subjects)
    level_type = one_of(LEVELS)

    class Response(TypedDict):
        """One answered item of a diagnostic test."""

        __pydantic_config__ = STRICT  # type: ignore[misc]
        item_id: text(1, 64)
        skill: skill_type
        correct: bool
        response_time_ms: integer(0, ONE_HOUR_MS)
        attempts: integer(1, 100)
        hint_used: bool

    class DiagnosticSubmitted(TypedDict):
        """A learner submitted a diagnostic test. Topic diagnostic.submissions, key = learner_id."""

        __pydantic_config__ = STRICT  # type: ignore[misc]
        event_id: _EVENT_ID
        schema_version: _VERSION
        event_time: EventTime
        learner_id: _LEARNER
        assessment_id: _Id
        subject: subject_type
        grade_level: integer(domain.grade_min, domain.grade_max)
        responses: _list_of(Response, 1, 200)

    class OutcomeObserved(TypedDict):
        """The observed outcome of a learner, weeks after the diagnostic. Topic diagnostic.outcomes."""

        __pydantic_config__ = STRICT  # type: ignore[misc]
        event_id: _EVENT_ID
        schema_version: _VERSION
        event_time: EventTime
        submission_event_id: described(Uuid, "event_id of the DiagnosticSubmitted it measures")
        learner_id: _Id
        observed_progress_score: number(0, 100)
        observed_comprehension_level: level_type

    class ScoreIssued(TypedDict):
        """Predictions for one submission. Topic diagnostic.scores, key = learner_id; event_id is
        derived from submission_event_id alone, so a re-published score (a replayed micro-batch, also
        after the production alias moved) has the same id: the first one published counts."""

        __pydantic_config__ = STRICT  # type: ignore[misc]
        event_id: _EVENT_ID
        schema_version: _VERSION
        event_time: EventTime
        submission_event_id: Uuid
        learner_id: _Id
        progress_score: number(0, 100)
        comprehension_level: level_type
        probabilities: described(_number_map(len(LEVELS)), "level → probability")
        model_name: _Id
        model_version: _Id
        model_alias: NotRequired[text(0, 64) | None]
        scored_at: Timestamp
        # Optional, added in place (readers ignore what they do not know): what the gold table and
        # the monitors need, so they are written from the published score alone.
        assessment_id: NotRequired[_Id | None]
        subject: NotRequired[text(1, 64) | None]
        grade_level: NotRequired[integer() | None]
        submission_time: NotRequired[described(Timestamp, "event_time of the submission") | None]
        signals: NotRequired[described(_number_map(32), "per-submission measures the monitors watch "
                                                        "(accuracy, mean log response time, ...)") | None]
        low_effort: NotRequired[described(bool, "more rapid guesses than psychometrics.low_effort_share "
                                                "(null: the version's item bank has no response times)") | None]
        effort_moderated_score: NotRequired[described(number(0, 100), "a low_effort submission scored on its "
                                                                     "effortful responses alone") | None]

    class RetrainRequested(TypedDict):
        """Ask the retrain worker for a new model. Topic model.retrain-requests; event_id is the request id."""

        __pydantic_config__ = STRICT  # type: ignore[misc]
        event_id: _EVENT_ID
        schema_version: _VERSION
        event_time: EventTime
        trigger: one_of(("drift", "schedule", "manual"))
        detector: NotRequired[text(0, 128) | None]
        segment: NotRequired[text(0, 128) | None]
        statistic: NotRequired[text(0, 128) | None]
        evidence: NotRequired[described(_number_map(50), "window means before/after, counts, detector "
                                                           "statistic") | None]
        evidence_window_start: NotRequired[Timestamp | None]
        evidence_window_end: NotRequired[Timestamp | None]
        detected_at: Timestamp

    class _Lifecycle(TypedDict):
        __pydantic_config__ = STRICT  # type: ignore[misc]
        event_id: _EVENT_ID
        schema_version: _VERSION
        event_time: EventTime
        model_name: _Id
        version: described(_Id, "the version this event is about")
        alias: NotRequired[text(0, 64) | None]
        previous_version: NotRequired[described(text(0, 128), "the version the alias pointed to before") | None]
        actor: described(text(0, 128), "who or what acted (user, retrain-worker, ...)")
        reason: text(0, 2000)
        metrics: NotRequired[_number_map(100) | None]

    class ModelRegistered(_Lifecycle):
        """A new model version was registered. Topic model.lifecycle."""

        __pydantic_config__ = STRICT  # type: ignore[misc]

    class ModelPromoted(_Lifecycle):
        """An alias moved forward to a version. Topic model.lifecycle."""

        __pydantic_config__ = STRICT  # type: ignore[misc]

    class ModelRolledBack(_Lifecycle):
        """`production` moved back to its previous version. Topic model.lifecycle."""

        __pydantic_config__ = STRICT  # type: ignore[misc]

    return EventContracts(*(Contract(declaration, version=1) for declaration in (
        DiagnosticSubmitted, OutcomeObserved, ScoreIssued, RetrainRequested, ModelRegistered, ModelPromoted,
        ModelRolledBack)))


def _list_of(item: Any, min_items: int, max_items: int) -> Any:
    from typing import Annotated

    from pydantic import Field

    return Annotated[list[item], Field(min_length=min_items, max_length=max_items)]


def _number_map(max_entries: int) -> Any:
    """A JSON object of string → finite number (metrics, probabilities)."""
    from typing import Annotated

    from pydantic import Field

    return Annotated[dict[str, number()], Field(max_length=max_entries)]


_DEFAULT = contracts_for(DEFAULT_DOMAIN)
SUBJECTS = DEFAULT_DOMAIN.subjects
DIAGNOSTIC_SUBMITTED = _DEFAULT.diagnostic_submitted
OUTCOME_OBSERVED = _DEFAULT.outcome_observed
SCORE_ISSUED = _DEFAULT.score_issued
RETRAIN_REQUESTED = _DEFAULT.retrain_requested
MODEL_REGISTERED = _DEFAULT.model_registered
MODEL_PROMOTED = _DEFAULT.model_promoted
MODEL_ROLLED_BACK = _DEFAULT.model_rolled_back
EVENTS: dict[str, Contract] = _DEFAULT.events


def validate_bytes(contract: Contract, raw: bytes | None, now: datetime | None = None) -> Verdict:
    """Decode and validate one raw Kafka value (or HTTP body item).

    >>> validate_bytes(DIAGNOSTIC_SUBMITTED, b"not json").reason_code
    'not_json'
    """
    return contract.validate_bytes(raw, now, max_bytes=MAX_EVENT_BYTES)


def validate_event(contract: Contract, event: Any, now: datetime | None = None) -> Verdict:
    """Validate a decoded event (a dict)."""
    return contract.validate(event, now)
