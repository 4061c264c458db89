"""Turning a /v1/score body into validated DiagnosticSubmitted events, or the reasons it cannot be.

The per-event checks are the contract's own (``learnscore.schemas.events.validate_event``): the endpoint,
the stream and the tests refuse exactly the same events for exactly the same reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from learnscore.schemas.contract import MAX_NESTING, nesting_depth
from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, MAX_EVENT_BYTES, validate_event


@dataclass(frozen=True)
class ItemProblem:
    """Why one item of the body was refused (index in the list; 0 for a single object)."""

    index: int
    event_id: str | None
    reason_code: str
    reason: str
    problems: tuple[dict[str, str], ...]

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "reason_code": self.reason_code,
                "reason": self.reason, "problems": list(self.problems)}


@dataclass(frozen=True)
class ParsedBody:
    """Either every event is valid (``events``), or ``problems`` says what is wrong."""

    events: list[dict[str, Any]]
    problems: list[ItemProblem]
    error_code: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _body_problem(code: str, message: str) -> ParsedBody:
    return ParsedBody([], [ItemProblem(0, None, code, f"{code}: {message}",
                                       ({"code": code, "path": "", "message": message},))], code)


def parse_submissions(raw: bytes, max_batch: int, now: datetime | None = None) -> ParsedBody:
    """Decode a body holding one DiagnosticSubmitted object or a list of them, and validate each.

    The whole request is refused when any item is invalid; every invalid item is listed.

    >>> parse_submissions(b"[]", 10).error_code
    'empty_batch'
    >>> parse_submissions(b"{", 10).problems[0].reason_code
    'not_json'
    >>> [p.reason_code for p in parse_submissions(b'[{"subject": "art"}]', 10).problems]
    ['missing_field']
    >>> parse_submissions(b'{"learner_id": "caf\\xe9"}', 10).error_code
    'not_utf8'
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # said as the stream says it, not as "not JSON"
        return _body_problem("not_utf8", f"the body is not valid UTF-8 at byte {exc.start}")
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _body_problem("not_json", f"the body is not a JSON document: {str(exc)[:120]}")
    if isinstance(decoded, dict):
        items = [decoded]
    elif isinstance(decoded, list):
        items = decoded
        if not items:
            return _body_problem("empty_batch", "the list holds no submissions")
        if len(items) > max_batch:
            return _body_problem("too_many_items", f"{len(items)} submissions in one request; "
                                 f"at most {max_batch} are accepted (serving.max_batch)")
    else:
        return _body_problem("not_an_object", "send one DiagnosticSubmitted JSON object or a list of them")

    # The stream refuses an event over MAX_EVENT_BYTES (too_large); so does the endpoint. Only a
    # body that large can hold such an item, so normal requests pay nothing for the check.
    oversized = _oversized_items(raw, items, decoded is items)
    too_deep = _too_deep_items(raw, items)
    events: list[dict[str, Any]] = []
    problems: list[ItemProblem] = []
    for index, item in enumerate(items):
        if index in oversized:
            problems.append(_too_large(index, item, oversized[index]))
            continue
        if index in too_deep:
            problems.append(_nested_too_deep(index, item, too_deep[index]))
            continue
        verdict = validate_event(DIAGNOSTIC_SUBMITTED, item, now)
        if verdict.ok:
            events.append(item)
            continue
        event_id = item.get("event_id") if isinstance(item, dict) else None
        problems.append(ItemProblem(
            index=index,
            event_id=event_id if isinstance(event_id, str) else None,
            reason_code=verdict.reason_code or "invalid",
            reason=verdict.reason or "invalid",
            problems=tuple({"code": p.code, "path": p.path, "message": p.message}
                           for p in verdict.problems[:20]),
        ))
    if problems:
        return ParsedBody([], problems, "invalid_event")
    return ParsedBody(events, [])


def _oversized_items(raw: bytes, items: list[Any], is_list: bool) -> dict[int, int]:
    """Index → size in bytes of the items larger than ``MAX_EVENT_BYTES``."""
    if len(raw) <= MAX_EVENT_BYTES:
        return {}
    if not is_list:
        return {0: len(raw)}
    sizes = {index: len(orjson.dumps(item)) for index, item in enumerate(items)}
    return {index: size for index, size in sizes.items() if size > MAX_EVENT_BYTES}


def _too_deep_items(raw: bytes, items: list[Any]) -> dict[int, int]:
    """Index → nesting depth of the items nested deeper than the stream's parser reads."""
    # Depth needs an opening bracket per level: a body with fewer pays two byte counts only.
    if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING:
        return {}
    depths = {index: nesting_depth(item) for index, item in enumerate(items)}
    return {index: depth for index, depth in depths.items() if depth > MAX_NESTING}


def _nested_too_deep(index: int, item: Any, depth: int) -> ItemProblem:
    event_id = item.get("event_id") if isinstance(item, dict) else None
    message = (f"not a JSON document the stream reads: nested {depth} levels deep, the limit is "
               f"{MAX_NESTING}")
    return ItemProblem(index=index, event_id=event_id if isinstance(event_id, str) else None,
                       reason_code="not_json", reason=f"not_json at : {message}",
                       problems=({"code": "not_json", "path": "", "message": message},))


def _too_large(index: int, item: Any, size: int) -> ItemProblem:
    event_id = item.get("event_id") if isinstance(item, dict) else None
    message = f"{size} bytes; the limit is {MAX_EVENT_BYTES}"
    return ItemProblem(index=index, event_id=event_id if isinstance(event_id, str) else None,
                       reason_code="too_large", reason=f"too_large at : {message}",
                       problems=({"code": "too_large", "path": "", "message": message},))
