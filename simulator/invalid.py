"""Broken events of every kind the pipeline must refuse, each with the reason it expects.

Each kind turns a valid event (the template) into raw Kafka bytes that the contract refuses with
one known ``reason_code`` (the first problem :func:`learnscore.schemas.events.validate_bytes` reports).
Duplicates are different: an exact re-send, or the same ``event_id`` with other content, is a
*valid* event that only the stream can see is a repeat; it quarantines it as
``duplicate_event_id``.

Broken events get a fresh ``event_id`` (where they have one), so they never collide with the ids
of valid events.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from learnscore.schemas.events import MAX_EVENT_BYTES, ONE_HOUR_MS
from learnscore.schemas.topics import OUTCOMES, SUBMISSIONS

DUPLICATE_REASON = "duplicate_event_id"  # set by the stream's deduplication, not by the validator

Mutator = Callable[[random.Random, dict[str, Any]], "bytes | None"]


def _dumps(event: Any) -> bytes:
    return orjson.dumps(event)


def _copy(event: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(event))


def _fresh_id(rng: random.Random) -> str:
    value = rng.getrandbits(128)
    value = (value & ~(0xF << 76) | (0x4 << 76)) & ~(0x3 << 62) | (0x2 << 62)  # version 4, RFC variant
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _set_response(rng: random.Random, event: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    response = rng.choice(event["responses"])
    response[name] = value
    return event


# -- submissions ---------------------------------------------------------------------------------


def _truncated(rng, event):
    raw = _dumps(event)
    return raw[: rng.randint(1, len(raw) - 2)]  # a cut-off message: never a whole JSON document


def _not_utf8(rng, event):
    return _dumps(event)[:-1] + b',"comment":"caf\xe9 au lait"}'  # Latin-1 é


def _not_an_object(rng, event):
    return _dumps([event])


def _empty(rng, event):
    return None  # a Kafka message with a key and no value


def _too_large(rng, event):
    return _dumps({**event, "padding": "x" * MAX_EVENT_BYTES})


def _wrong_type(rng, event):
    choice = rng.randrange(5)
    if choice == 0:
        event["grade_level"] = str(event["grade_level"])
    elif choice == 1:
        _set_response(rng, event, "correct", rng.choice(["yes", 1, "true"]))
    elif choice == 2:
        _set_response(rng, event, "response_time_ms", rng.choice([1234.5, "1234"]))
    elif choice == 3:
        event["responses"] = {"first": event["responses"][0]}
    else:
        event["learner_id"] = rng.randint(1, 10**6)
    return _dumps(event)


def _missing_field(rng, event):
    if rng.random() < 0.6:
        del event[rng.choice(["learner_id", "assessment_id", "subject", "grade_level", "responses",
                              "event_time", "schema_version", "event_id"])]
    else:
        del rng.choice(event["responses"])[rng.choice(["item_id", "correct", "response_time_ms", "attempts"])]
    return _dumps(event)


def _out_of_range(rng, event):
    choice = rng.randrange(4)
    if choice == 0:
        event["grade_level"] = rng.choice([0, 13, -3, 99])
    elif choice == 1:
        _set_response(rng, event, "response_time_ms", rng.choice([-1, ONE_HOUR_MS + 1, 10**9]))
    elif choice == 2:
        _set_response(rng, event, "attempts", rng.choice([0, -2, 101]))
    else:
        _set_response(rng, event, "response_time_ms", -rng.randint(1, 5000))
    return _dumps(event)


def _unknown_subject(rng, event):
    event["subject"] = rng.choice(["history", "Math", "maths", "art", ""])
    return _dumps(event)


def _bad_uuid(rng, event):
    good = event["event_id"]
    event["event_id"] = rng.choice([good.replace("-", ""), good[:-1] + "g", "evt-" + good[:8], good + "\n"])
    return _dumps(event)


def _bad_timestamp(rng, event):
    moment = event["event_time"]  # 2026-01-31T09:30:00.250Z
    event["event_time"] = rng.choice([
        f"{moment[8:10]}/{moment[5:7]}/{moment[:4]} {moment[11:19]}",  # 31/01/2026 09:30:00
        moment[:-1],  # no time zone
        moment.replace("T", "t"),  # Spark cannot read lower-case t
        moment[:5] + "02-30" + moment[10:],  # no such day
        "yesterday",
    ])
    return _dumps(event)


def _future_timestamp(rng, event):
    year = int(event["event_time"][:4]) + rng.randint(5, 50)
    event["event_time"] = f"{year}" + event["event_time"][4:]
    return _dumps(event)


def _too_many_responses(rng, event):
    responses = event["responses"]
    event["responses"] = (responses * (201 // len(responses) + 1))[: rng.randint(201, 260)]
    return _dumps(event)


def _no_responses(rng, event):
    event["responses"] = []
    return _dumps(event)


def _unsupported_version(rng, event):
    event["schema_version"] = rng.choice([0, 2, 3, 99])
    return _dumps(event)


def _too_long_id(rng, event):
    event["assessment_id"] = "diag-" + "x" * rng.randint(124, 400)
    return _dumps(event)


def _empty_id(rng, event):
    event["assessment_id"] = ""
    return _dumps(event)


# -- outcomes ------------------------------------------------------------------------------------


def _outcome_wrong_type(rng, event):
    event["observed_progress_score"] = str(event["observed_progress_score"])
    return _dumps(event)


def _outcome_missing_field(rng, event):
    del event[rng.choice(["submission_event_id", "observed_progress_score", "observed_comprehension_level",
                          "learner_id"])]
    return _dumps(event)


def _outcome_out_of_range(rng, event):
    event["observed_progress_score"] = rng.choice([-0.5, 100.1, 140.0, -20])
    return _dumps(event)


def _outcome_unknown_level(rng, event):
    event["observed_comprehension_level"] = rng.choice(["expert", "Advanced", "novice", "level-3"])
    return _dumps(event)


def _outcome_bad_uuid(rng, event):
    event["submission_event_id"] = "sub-" + event["submission_event_id"][:8]
    return _dumps(event)


@dataclass(frozen=True)
class InvalidKind:
    """One way to break an event: which topic it goes to, the reason expected, how often."""

    name: str
    topic: str
    reason_code: str
    weight: float
    mutate: Mutator | None  # None: a duplicate, built from an earlier valid event

    @property
    def is_duplicate(self) -> bool:
        return self.mutate is None


INVALID_KINDS: dict[str, InvalidKind] = {kind.name: kind for kind in (
    InvalidKind("not_json", SUBMISSIONS, "not_json", 1.0, _truncated),
    InvalidKind("not_utf8", SUBMISSIONS, "not_utf8", 1.0, _not_utf8),
    InvalidKind("not_an_object", SUBMISSIONS, "not_an_object", 0.5, _not_an_object),
    InvalidKind("empty_value", SUBMISSIONS, "empty", 0.5, _empty),
    InvalidKind("too_large", SUBMISSIONS, "too_large", 0.1, _too_large),
    InvalidKind("wrong_type", SUBMISSIONS, "wrong_type", 1.0, _wrong_type),
    InvalidKind("missing_field", SUBMISSIONS, "missing_field", 1.0, _missing_field),
    InvalidKind("out_of_range", SUBMISSIONS, "out_of_range", 1.0, _out_of_range),
    InvalidKind("unknown_subject", SUBMISSIONS, "unknown_value", 1.0, _unknown_subject),
    InvalidKind("bad_uuid", SUBMISSIONS, "invalid_uuid", 1.0, _bad_uuid),
    InvalidKind("bad_timestamp", SUBMISSIONS, "invalid_timestamp", 1.0, _bad_timestamp),
    InvalidKind("future_timestamp", SUBMISSIONS, "future_timestamp", 1.0, _future_timestamp),
    InvalidKind("too_many_responses", SUBMISSIONS, "too_many_items", 0.5, _too_many_responses),
    InvalidKind("no_responses", SUBMISSIONS, "too_few_items", 0.5, _no_responses),
    InvalidKind("unsupported_version", SUBMISSIONS, "unsupported_schema_version", 0.5, _unsupported_version),
    InvalidKind("too_long_id", SUBMISSIONS, "too_long", 0.5, _too_long_id),
    InvalidKind("empty_id", SUBMISSIONS, "too_short", 0.5, _empty_id),
    InvalidKind("duplicate_resend", SUBMISSIONS, DUPLICATE_REASON, 1.5, None),
    InvalidKind("duplicate_changed", SUBMISSIONS, DUPLICATE_REASON, 1.5, None),
    InvalidKind("outcome_not_json", OUTCOMES, "not_json", 1.0, _truncated),
    InvalidKind("outcome_wrong_type", OUTCOMES, "wrong_type", 1.0, _outcome_wrong_type),
    InvalidKind("outcome_missing_field", OUTCOMES, "missing_field", 1.0, _outcome_missing_field),
    InvalidKind("outcome_out_of_range", OUTCOMES, "out_of_range", 1.0, _outcome_out_of_range),
    InvalidKind("outcome_unknown_level", OUTCOMES, "unknown_value", 1.0, _outcome_unknown_level),
    InvalidKind("outcome_bad_uuid", OUTCOMES, "invalid_uuid", 1.0, _outcome_bad_uuid),
    InvalidKind("outcome_bad_timestamp", OUTCOMES, "invalid_timestamp", 1.0, _bad_timestamp),
)}


def break_event(kind: InvalidKind, rng: random.Random, template: dict[str, Any]) -> bytes | None:
    """The raw bytes of ``template`` broken the way ``kind`` says (``template`` is not changed).

    >>> from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, validate_bytes
    >>> from learnscore.simulator.generator import Simulator
    >>> from datetime import datetime, timezone
    >>> event = Simulator(seed=1, start=datetime.now(timezone.utc)).take(1).submissions[0]
    >>> raw = break_event(INVALID_KINDS["out_of_range"], random.Random(3), event)
    >>> validate_bytes(DIAGNOSTIC_SUBMITTED, raw).reason_code
    'out_of_range'
    """
    if kind.mutate is None:
        raise ValueError(f"{kind.name} is a duplicate: use DuplicateSource, not break_event")
    event = _copy(template)
    if "event_id" in event:
        event["event_id"] = _fresh_id(rng)
    return kind.mutate(rng, event)


@dataclass(frozen=True)
class Broken:
    """One broken (or duplicate) message ready to send."""

    kind: str
    topic: str
    key: bytes
    value: bytes | None
    event_id: str | None  # the duplicated id, for duplicates


class InvalidMixer:
    """Decides, seeded, which broken messages go out before each valid one.

    Before each valid message, with probability ``ratio / (1 - ratio)``, one broken message of a
    kind drawn by weight: then about ``ratio`` of all messages on a topic are broken.
    Duplicates copy one of the last ``memory`` valid submissions the mixer was shown.
    """

    def __init__(self, seed: int, ratio: float, memory: int = 2000):
        if not 0.0 <= ratio <= 0.5:
            raise ValueError(f"invalid ratio {ratio} must lie between 0 and 0.5")
        self.ratio = ratio
        self._chance = ratio / (1.0 - ratio) if ratio else 0.0
        self._rng = random.Random(f"invalid-mixer:{seed}")
        self._recent: deque[tuple[dict[str, Any], bytes]] = deque(maxlen=memory)
        self._kinds = {topic: [k for k in INVALID_KINDS.values() if k.topic == topic]
                       for topic in (SUBMISSIONS, OUTCOMES)}

    def remember(self, event: dict[str, Any], raw: bytes) -> None:
        """Note a valid submission that went out (a candidate for duplicates)."""
        self._recent.append((event, raw))

    def before(self, topic: str, template: dict[str, Any]) -> Broken | None:
        """The broken message to send before the valid ``template`` on ``topic``, if any."""
        if not self._chance or self._rng.random() >= self._chance:
            return None
        kinds = [k for k in self._kinds[topic] if self._recent or not k.is_duplicate]
        kind = self._rng.choices(kinds, weights=[k.weight for k in kinds])[0]
        if kind.is_duplicate:
            original, raw = self._rng.choice(self._recent)
            key = original["learner_id"].encode()  # same key: same partition, after the original
            if kind.name == "duplicate_changed":
                changed = _copy(original)
                changed["responses"] = changed["responses"][:-1]
                changed["grade_level"] = changed["grade_level"] % 12 + 1
                raw = _dumps(changed)
            return Broken(kind.name, topic, key, raw, original["event_id"])
        return Broken(kind.name, topic, str(template.get("learner_id", "")).encode(),
                      break_event(kind, self._rng, template), None)
