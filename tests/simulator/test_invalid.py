"""Every kind of broken event is refused with the reason it promises; duplicates stay valid."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, OUTCOME_OBSERVED, validate_bytes
from learnscore.schemas.topics import OUTCOMES, SUBMISSIONS
from learnscore.simulator.generator import Simulator
from learnscore.simulator.invalid import DUPLICATE_REASON, INVALID_KINDS, InvalidMixer, break_event
from learnscore.simulator.scenarios import parse_scenario

START = datetime(2026, 5, 4, 12, 0, tzinfo=timezone.utc)
NOW = START + timedelta(minutes=1)
RECORDS = {SUBMISSIONS: DIAGNOSTIC_SUBMITTED, OUTCOMES: OUTCOME_OBSERVED}
# templates from every scenario, so broken events are made from every shape of valid event
TEMPLATES = Simulator(seed=2, start=START, interval_s=0.01, scenarios=tuple(
    parse_scenario(f"{name}@{at}") for name, at in (("weaker-cohort", 50), ("item-bank-change", 100),
                                                    ("concept-shift", 150), ("response-time-unit-change", 200))
)).take(250)
BROKEN_KINDS = [kind for kind in INVALID_KINDS.values() if not kind.is_duplicate]


def test_kinds_cover_everything_the_validator_refuses():
    codes = {kind.reason_code for kind in INVALID_KINDS.values() if kind.topic == SUBMISSIONS}
    assert codes == {"not_json", "not_utf8", "not_an_object", "empty", "too_large", "wrong_type",
                     "missing_field", "out_of_range", "unknown_value", "invalid_uuid", "invalid_timestamp",
                     "future_timestamp", "too_many_items", "too_few_items", "unsupported_schema_version",
                     "too_long", "too_short", DUPLICATE_REASON}
    outcome_codes = {kind.reason_code for kind in INVALID_KINDS.values() if kind.topic == OUTCOMES}
    assert {"unknown_value", "out_of_range", "wrong_type", "missing_field", "invalid_uuid"} <= outcome_codes


@settings(max_examples=600, deadline=None)
@given(kind=st.sampled_from(BROKEN_KINDS), index=st.integers(0, len(TEMPLATES) - 1), seed=st.integers(0, 2**32))
def test_every_broken_kind_is_refused_with_its_reason(kind, index, seed):
    template = (TEMPLATES.submissions if kind.topic == SUBMISSIONS else TEMPLATES.outcomes)[index]
    before = orjson.dumps(template)
    raw = break_event(kind, random.Random(seed), template)
    verdict = validate_bytes(RECORDS[kind.topic], raw, NOW)
    assert verdict.reason_code == kind.reason_code, verdict.reason
    assert orjson.dumps(template) == before  # the valid template is left alone
    if verdict.event is None and raw and kind.reason_code not in ("not_json", "not_utf8", "too_large"):
        decoded = orjson.loads(raw)
        if isinstance(decoded, dict) and isinstance(decoded.get("event_id"), str):
            assert decoded["event_id"] != template["event_id"]  # never a valid event's id


def test_duplicate_kinds_are_valid_events_with_an_earlier_id():
    mixer = InvalidMixer(seed=4, ratio=0.5)
    for event in TEMPLATES.submissions[:50]:
        mixer.remember(event, orjson.dumps(event))
    by_id = {e["event_id"]: e for e in TEMPLATES.submissions[:50]}
    seen = Counter()
    for event in TEMPLATES.submissions[50:]:
        broken = mixer.before(SUBMISSIONS, event)
        if broken is None or not INVALID_KINDS[broken.kind].is_duplicate:
            continue
        seen[broken.kind] += 1
        original = by_id[broken.event_id]
        assert broken.key == original["learner_id"].encode()  # same partition, after the original
        verdict = validate_bytes(DIAGNOSTIC_SUBMITTED, broken.value, NOW)
        assert verdict.ok and verdict.event["event_id"] == original["event_id"]
        if broken.kind == "duplicate_resend":
            assert broken.value == orjson.dumps(original)
        else:
            assert verdict.event != original
    assert seen["duplicate_resend"] > 0 and seen["duplicate_changed"] > 0


def test_mixer_ratio_and_determinism():
    def run(seed):
        mixer = InvalidMixer(seed=seed, ratio=0.2)
        out = []
        for event in TEMPLATES.submissions * 8:
            broken = mixer.before(SUBMISSIONS, event)
            out.append(None if broken is None else (broken.kind, broken.value))
            mixer.remember(event, orjson.dumps(event))
        return out

    first = run(9)
    assert first == run(9) and first != run(10)
    broken = sum(item is not None for item in first)
    share = broken / (broken + len(first))
    assert share == pytest.approx(0.2, abs=0.03)
    assert {kind for kind, _ in filter(None, first)} == {k.name for k in INVALID_KINDS.values()
                                                          if k.topic == SUBMISSIONS}


def test_no_duplicates_before_any_valid_event():
    mixer = InvalidMixer(seed=1, ratio=0.5)
    kinds = {mixer.before(SUBMISSIONS, TEMPLATES.submissions[0]) for _ in range(300)} - {None}
    assert not any(INVALID_KINDS[b.kind].is_duplicate for b in kinds)


def test_ratio_out_of_range_is_refused():
    with pytest.raises(ValueError, match="between 0 and 0.5"):
        InvalidMixer(seed=1, ratio=0.7)
