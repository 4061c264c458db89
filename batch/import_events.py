"""From an export's rows to contract events: convert, key, group, validate (Arrow in, Arrow out).

Two steps, both free of I/O:

:func:`prepare_submission_rows` / :func:`prepare_outcome_rows`
    one chunk of a file as read → the same rows in the contract's types, with each row's
    event id (given, or a UUID 5 of the submission's key) and the text of any cell that could
    not be read (``_unreadable``). Run on every chunk as it streams in.
:func:`build_submissions` / :func:`build_outcomes`
    all the prepared rows of some submissions (a partition of the file by event id) → one
    event per submission, validated with the stream's own contract: the valid ones shaped as
    ``silver.submissions`` / ``silver.outcomes`` rows, the refused ones as ``silver.quarantine``
    rows with the reason and the file's row numbers.

An unreadable cell does not vanish: the event is validated with the text that was in the file
at that place, so the contract's own reason says what is wrong ("expected true/false, got
string") and the quarantined event shows the value.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from learnscore.batch.import_mapping import OutcomesMapping, SubmissionsMapping
from learnscore.batch.import_values import (
    UNREADABLE,
    Converted,
    convert_column,
    event_ids_for,
    levels_of,
    milliseconds,
    outcome_event_id,
    row_ranges,
    submission_keys,
)
from learnscore.schemas.contract import Contract
from learnscore.schemas.domain import LEVELS, Domain
from learnscore.schemas.tables import OUTCOMES, QUARANTINE, SUBMISSIONS, arrow_schema

#: The response fields, in the order of ``silver.submissions.responses``.
RESPONSE_FIELDS = ("item_id", "skill", "correct", "response_time_ms", "attempts", "hint_used")
SUBMISSION_ROWS = pa.schema([
    ("_row", pa.int64()), ("_pos", pa.int64()), ("event_id", pa.string()), ("schema_version", pa.int64()),
    ("learner_id", pa.string()), ("assessment_id", pa.string()), ("submitted_at", pa.timestamp("us", tz="UTC")),
    ("subject", pa.string()), ("grade_level", pa.int64()), ("item_id", pa.string()), ("skill", pa.string()),
    ("correct", pa.bool_()), ("response_time_ms", pa.int64()), ("attempts", pa.int64()), ("hint_used", pa.bool_()),
    ("_unreadable", pa.string()),
])
OUTCOME_ROWS = pa.schema([
    ("_row", pa.int64()), ("event_id", pa.string()), ("submission_event_id", pa.string()),
    ("learner_id", pa.string()), ("observed_progress_score", pa.float64()),
    ("observed_comprehension_level", pa.string()), ("observed_at", pa.timestamp("us", tz="UTC")),
    ("_reference", pa.string()), ("_unreadable", pa.string()),
])
SILVER_SUBMISSIONS = arrow_schema(SUBMISSIONS, stored=True)
#: Staged outcomes carry their event's JSON and what they refer to, for the landing's check that
#: the submission exists (an outcome for an unknown submission is quarantined then).
SILVER_OUTCOMES = arrow_schema(OUTCOMES, stored=True).append(pa.field("_raw_value", pa.binary())) \
    .append(pa.field("_reference", pa.string()))
QUARANTINE_ROWS = arrow_schema(QUARANTINE, stored=True)

#: Where a submission field goes in the event (the rest keep their names).
_EVENT_NAME = {"submitted_at": "event_time", "response_time": "response_time_ms", "observed_at": "event_time",
               "observed_score": "observed_progress_score", "observed_level": "observed_comprehension_level"}
_TOP_FIELDS = ("event_id", "schema_version", "learner_id", "assessment_id", "event_time", "subject", "grade_level")
_EVENT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # Arrow prints the microseconds with %S
_VALIDATION_SLICE = 4096  # events turned into dicts at a time: bounds the Python objects alive

INCONSISTENT_ROWS = "inconsistent_rows"
DUPLICATE_EVENT_ID = "duplicate_event_id"
DUPLICATE_OUTCOME = "duplicate_outcome"


@dataclass(frozen=True)
class Lineage:
    """Where the rows of one file of one import came from."""

    import_id: str
    file: str    # the path as given
    source: str  # silver.quarantine.source_topic: "import:<file name>"

    def json(self, rows: str) -> str:
        """The ``import_lineage`` value of an event made of these rows.

        >>> Lineage("i-1", "/data/a.csv", "import:a.csv").json("2-4")
        '{"import_id":"i-1","file":"/data/a.csv","rows":"2-4"}'
        """
        return orjson.dumps({"import_id": self.import_id, "file": self.file, "rows": rows}).decode()


@dataclass
class Refusals:
    """Refused events by reason code: how many, and the rows of the first few."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    keep: int = 3

    def add(self, code: str, rows: str) -> None:
        self.counts[code] += 1
        shown = self.examples.setdefault(code, [])
        if len(shown) < self.keep:
            shown.append(rows)

    def merge(self, other: Refusals) -> None:
        for code, count in other.counts.items():
            self.counts[code] += count
            shown = self.examples.setdefault(code, [])
            shown.extend(other.examples.get(code, [])[: self.keep - len(shown)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Built:
    """One partition's events: ``valid`` in the silver table's shape, ``refused`` in quarantine's."""

    valid: pa.Table
    refused: pa.Table
    events: int
    refusals: Refusals


# -- step 1: rows in the contract's types --------------------------------------------------------


def prepare_submission_rows(chunk: pa.Table, mapping: SubmissionsMapping, zone) -> pa.Table:
    """A chunk of a submissions file (columns named by field) in :data:`SUBMISSION_ROWS`.

    >>> from learnscore.batch.import_mapping import kafka_contract_mapping
    >>> chunk = pa.table({"learner_id": ["L1", "L1"], "assessment_id": ["A", "A"],
    ...     "submitted_at": ["2026-01-31T09:30:00Z"] * 2, "subject": ["math"] * 2, "grade_level": ["5", "5"],
    ...     "item_id": ["i1", "i2"], "skill": ["s", "s"], "correct": ["1", "maybe"],
    ...     "response_time": [1.5, 2.0], "_row": [1, 2], "_pos": [0, 0]})
    >>> from learnscore.batch.import_mapping import parse_mapping
    >>> mapping = parse_mapping({"submissions": {"columns": {f: f for f in ("learner_id", "assessment_id",
    ...     "submitted_at", "subject", "grade_level", "item_id", "skill", "correct", "response_time")},
    ...     "units": {"response_time": "s"}, "defaults": {"attempts": 1, "hint_used": False}}})
    >>> rows = prepare_submission_rows(chunk, mapping.submissions, mapping.zone)
    >>> rows.column("response_time_ms").to_pylist(), rows.column("attempts").to_pylist()
    ([1500, 2000], [1, 1])
    >>> rows.column("_unreadable").to_pylist()
    [None, '{"correct":"maybe"}']
    >>> len(set(rows.column("event_id").to_pylist()))  # one submission: one id
    1
    """
    n = chunk.num_rows
    values = mapping.values
    converted: dict[str, Converted] = {}

    def read(name: str, kind: str, renames: dict[str, str] | None = None) -> pa.Array:
        result = convert_column(chunk.column(name), kind, zone=zone, renames=renames)
        converted[_EVENT_NAME.get(name, name)] = result
        return result.values

    columns: dict[str, pa.Array] = {"_row": chunk.column("_row").combine_chunks(),
                                    "_pos": chunk.column("_pos").combine_chunks()}
    learner, assessment = read("learner_id", "text"), read("assessment_id", "text")
    submitted = read("submitted_at", "instant")
    if "event_id" in mapping.columns.submission_fields:
        columns["event_id"] = read("event_id", "text")
    else:
        unreadable_times = converted["event_time"]
        texts = _texts_where(chunk.column("submitted_at"), unreadable_times.unreadable)
        columns["event_id"] = event_ids_for(submission_keys(learner, assessment, submitted, texts))
    columns["schema_version"] = (read("schema_version", "integer") if mapping.columns.schema_version
                                 else pa.array(np.ones(n, dtype=np.int64)))
    columns.update(learner_id=learner, assessment_id=assessment, submitted_at=submitted,
                   subject=read("subject", "text", values.subject), grade_level=read("grade_level", "integer"),
                   item_id=read("item_id", "text"), skill=read("skill", "text", values.skill),
                   correct=read("correct", "boolean"))
    seconds_or_ms = read("response_time", "number")
    columns["response_time_ms"], too_large = milliseconds(seconds_or_ms, mapping.units.response_time)
    converted["response_time_ms"] = Converted(columns["response_time_ms"],
                                              converted["response_time_ms"].unreadable | too_large)
    for name, kind in (("attempts", "integer"), ("hint_used", "boolean")):
        default = getattr(mapping.defaults, name)
        present = name in chunk.column_names
        array = read(name, kind) if present else pa.nulls(n, pa.int64() if kind == "integer" else pa.bool_())
        columns[name] = pc.fill_null(array, default) if default is not None else array
    raw = {name: chunk.column(source) for name, source in
           (("event_time", "submitted_at"), ("response_time_ms", "response_time"))}
    columns["_unreadable"] = _unreadable_texts(chunk, converted, raw)
    return pa.table(columns, schema=SUBMISSION_ROWS)


def prepare_outcome_rows(chunk: pa.Table, mapping: OutcomesMapping, domain: Domain, zone) -> pa.Table:
    """A chunk of an outcomes file in :data:`OUTCOME_ROWS`; the level comes from the score
    (``domain``'s cut scores) where the file has none."""
    converted: dict[str, Converted] = {}

    def read(name: str, kind: str, renames: dict[str, str] | None = None) -> pa.Array:
        result = convert_column(chunk.column(name), kind, zone=zone, renames=renames)
        converted[_EVENT_NAME.get(name, name)] = result
        return result.values

    learner = read("learner_id", "text")
    if mapping.columns.submission_event_id is not None:
        submission_ids = read("submission_event_id", "text")
        reference = pc.binary_join_element_wise("submission_event_id ", pc.fill_null(submission_ids, "(empty)"), "")
    else:
        assessment = convert_column(chunk.column("assessment_id"), "text").values
        submitted = convert_column(chunk.column("submitted_at"), "instant", zone=zone)
        texts = _texts_where(chunk.column("submitted_at"), submitted.unreadable)
        submission_ids = event_ids_for(submission_keys(learner, assessment, submitted.values, texts))
        when = pc.coalesce(pc.strftime(submitted.values, format=_EVENT_TIME_FORMAT),
                           pa.array(texts, pa.string()) if texts is not None else pa.nulls(chunk.num_rows, pa.string()),
                           pa.scalar("(no time)"))
        reference = pc.binary_join_element_wise(
            "learner ", pc.fill_null(learner, "(empty)"), ", assessment ", pc.fill_null(assessment, "(empty)"),
            ", submitted at ", when, "")
    event_ids = (read("event_id", "text") if mapping.columns.event_id is not None
                 else event_ids_for(submission_ids, outcome_event_id))
    score = read("observed_score", "number")
    derived = levels_of(score, domain.level_cut_scores, LEVELS)
    if mapping.columns.observed_level is not None:
        level = pc.coalesce(read("observed_level", "text", mapping.values.observed_level), derived)
    else:
        level = derived
    observed_at = read("observed_at", "instant")
    raw = {"event_time": chunk.column("observed_at"), "observed_progress_score": chunk.column("observed_score")}
    if "observed_level" in chunk.column_names:
        raw["observed_comprehension_level"] = chunk.column("observed_level")
    return pa.table({
        "_row": chunk.column("_row").combine_chunks(), "event_id": event_ids, "submission_event_id": submission_ids,
        "learner_id": learner, "observed_progress_score": score, "observed_comprehension_level": level,
        "observed_at": observed_at, "_reference": reference,
        "_unreadable": _unreadable_texts(chunk, converted, raw),
    }, schema=OUTCOME_ROWS)


def _texts_where(column: pa.ChunkedArray | pa.Array, unreadable: np.ndarray) -> list[str | None] | None:
    """The file's text of the cells flagged unreadable (None elsewhere); None when there are none."""
    if not unreadable.any():
        return None
    texts: list[str | None] = [None] * len(unreadable)
    for index in np.flatnonzero(unreadable):
        texts[index] = _as_text(column[int(index)].as_py())
    return texts


def _unreadable_texts(chunk: pa.Table, converted: dict[str, Converted], raw: dict[str, Any]) -> pa.Array:
    """Per row: a JSON object of event field → the value the file held where it could not be read."""
    out: list[str | None] = [None] * chunk.num_rows
    for name, result in converted.items():
        if not result.any_unreadable:
            continue
        source = raw.get(name, chunk.column(name) if name in chunk.column_names else None)
        for index in np.flatnonzero(result.unreadable):
            index = int(index)
            found = orjson.loads(out[index]) if out[index] else {}
            found[name] = _jsonable(source[index].as_py()) if source is not None else None
            out[index] = orjson.dumps(found).decode()
    return pa.array(out, pa.string())


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# -- step 2: events, validated ------------------------------------------------------------------


def build_submissions(rows: pa.Table, *, nested: bool, contract: Contract, now: datetime,
                      lineage: Lineage) -> Built:
    """Group prepared rows into submissions, validate each, shape the valid and the refused.

    A long file's submission is every row with its event id (its key), responses in file
    order; a nested file's is one record. Two records with the same event id: the first valid
    one is kept, the others refused as ``duplicate_event_id``.
    """
    if rows.num_rows == 0:
        return Built(SILVER_SUBMISSIONS.empty_table(), QUARANTINE_ROWS.empty_table(), 0, Refusals())
    rows = rows.sort_by([("_row", "ascending"), ("_pos", "ascending")] if nested
                        else [("event_id", "ascending"), ("_row", "ascending")])
    groups = _Groups(rows.column("_row" if nested else "event_id").combine_chunks())
    is_item = rows.column("_pos").to_numpy() >= 0
    item_offsets = np.concatenate(([0], np.cumsum(np.add.reduceat(is_item.astype(np.int64), groups.starts))))
    items = rows.filter(pa.array(is_item))
    responses = pa.ListArray.from_arrays(
        pa.array(item_offsets, pa.int32()),
        pa.StructArray.from_arrays([items.column(name).combine_chunks() for name in RESPONSE_FIELDS],
                                   fields=list(SILVER_SUBMISSIONS.field("responses").type.value_type)))
    first = rows.take(pa.array(groups.starts))
    submitted_at = first.column("submitted_at").combine_chunks()
    events = pa.table({
        "event_id": first.column("event_id"), "schema_version": first.column("schema_version"),
        "event_time": pc.strftime(submitted_at, format=_EVENT_TIME_FORMAT), "learner_id": first.column("learner_id"),
        "assessment_id": first.column("assessment_id"), "subject": first.column("subject"),
        "grade_level": first.column("grade_level"), "responses": responses,
    })
    inconsistent = {} if nested else _inconsistent_groups(rows, groups)
    patches = _patches(rows, groups, is_item, item_offsets)
    row_numbers = rows.column("_row").to_numpy()
    checked = _validate_in_slices(events, patches, contract, now, forced=inconsistent)
    valid, refused_rows, refusals = [], [], Refusals()
    seen_ids: set[str] = set()
    for group, (event, code, reason) in enumerate(checked):
        where = row_ranges(row_numbers[groups.starts[group]:groups.ends[group]])
        if code is None and event["event_id"] in seen_ids:
            code, reason = DUPLICATE_EVENT_ID, (f"event_id {event['event_id']} appears earlier in the file; "
                                                f"only the first valid one is imported")
        if code is None:
            seen_ids.add(event["event_id"])
            valid.append((group, where))
            continue
        refusals.add(code, where)
        refused_rows.append(_quarantine_row(event, code, reason, where, lineage, key=event.get("learner_id")))
    valid_groups = pa.array([group for group, _ in valid], pa.int64())
    silver = pa.table({
        "event_id": events.column("event_id").take(valid_groups),
        "schema_version": events.column("schema_version").take(valid_groups),
        "event_time": submitted_at.take(valid_groups),
        **{name: events.column(name).take(valid_groups)
           for name in ("learner_id", "assessment_id", "subject", "grade_level", "responses")},
        **_nulls(SILVER_SUBMISSIONS, ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
                                      "ingested_at", "rapid_guess_share", "low_effort", "effort_model_version"),
                 len(valid)),
        "import_lineage": pa.array([lineage.json(where) for _, where in valid], pa.string()),
    }, schema=SILVER_SUBMISSIONS)
    return Built(silver, pa.Table.from_pylist(refused_rows, schema=QUARANTINE_ROWS), groups.count, refusals)


def build_outcomes(rows: pa.Table, *, contract: Contract, now: datetime, lineage: Lineage) -> Built:
    """Validate prepared outcome rows; one outcome per submission: the first valid one in the
    file, later ones refused as ``duplicate_outcome``."""
    if rows.num_rows == 0:
        return Built(SILVER_OUTCOMES.empty_table(), QUARANTINE_ROWS.empty_table(), 0, Refusals())
    rows = rows.sort_by([("_row", "ascending")])
    events = pa.table({
        "event_id": rows.column("event_id"), "schema_version": pa.array(np.ones(rows.num_rows, np.int64)),
        "event_time": pc.strftime(rows.column("observed_at"), format=_EVENT_TIME_FORMAT),
        **{name: rows.column(name) for name in ("submission_event_id", "learner_id", "observed_progress_score",
                                                "observed_comprehension_level")},
    })
    patches = {}
    for index, text in enumerate(rows.column("_unreadable").to_pylist()):
        if text:
            patches[index] = [(None, orjson.loads(text))]
    row_numbers = rows.column("_row").to_numpy()
    checked = _validate_in_slices(events, patches, contract, now)
    valid, raw_values, refused_rows, refusals = [], [], [], Refusals()
    seen: set[str] = set()
    for index, (event, code, reason) in enumerate(checked):
        where = str(row_numbers[index])
        if code is None and event["submission_event_id"] in seen:
            code, reason = DUPLICATE_OUTCOME, (f"an outcome for submission {event['submission_event_id']} comes "
                                               f"earlier in the file; only the first valid one is imported")
        if code is None:
            seen.add(event["submission_event_id"])
            valid.append(index)
            raw_values.append(orjson.dumps(event))
            continue
        refusals.add(code, where)
        refused_rows.append(_quarantine_row(event, code, reason, where, lineage, key=event.get("learner_id")))
    take = pa.array(valid, pa.int64())
    silver = pa.table({
        "event_id": rows.column("event_id").take(take), "schema_version": events.column("schema_version").take(take),
        "event_time": rows.column("observed_at").take(take),
        **{name: rows.column(name).take(take) for name in ("submission_event_id", "learner_id",
                                                           "observed_progress_score", "observed_comprehension_level")},
        **_nulls(SILVER_OUTCOMES, ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
                                   "ingested_at"), len(valid)),
        "import_lineage": pa.array([lineage.json(str(row_numbers[i])) for i in valid], pa.string()),
        "_raw_value": pa.array(raw_values, pa.binary()),
        "_reference": rows.column("_reference").take(take),
    }, schema=SILVER_OUTCOMES)
    return Built(silver, pa.Table.from_pylist(refused_rows, schema=QUARANTINE_ROWS), rows.num_rows, refusals)


def quarantine_malformed(row: int, text: str, code: str, reason: str, lineage: Lineage) -> dict[str, Any]:
    """A quarantine row for a record that could not be read at all (no event to show)."""
    return {**{name: None for name in QUARANTINE_ROWS.names}, "source_topic": lineage.source,
            "raw_value": text.encode("utf-8"), "reason_code": code,
            "reason": f"row {row} of {lineage.source.removeprefix('import:')}: {reason}",
            "import_lineage": lineage.json(str(row))}


class _Groups:
    """Runs of equal values in a sorted column: where each group starts and ends."""

    def __init__(self, keys: pa.Array):
        n = len(keys)
        change = np.ones(n, dtype=bool)
        if n > 1:
            change[1:] = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).fill_null(True).to_numpy(
                zero_copy_only=False)
        self.starts = np.flatnonzero(change)
        self.ends = np.append(self.starts[1:], n)
        self.of_row = np.cumsum(change) - 1
        self.count = len(self.starts)


def _inconsistent_groups(rows: pa.Table, groups: _Groups) -> dict[int, tuple[str, str]]:
    """Long files: submissions whose rows disagree on a submission field → (code, reason)."""
    found: dict[int, tuple[str, str]] = {}
    row_numbers = rows.column("_row").to_numpy()
    for name in ("subject", "grade_level", "schema_version"):
        column = rows.column(name).combine_chunks()
        firsts = column.take(pa.array(groups.starts[groups.of_row]))
        same = pc.or_kleene(pc.equal(column, firsts), pc.and_(pc.is_null(column), pc.is_null(firsts)))
        differs = ~same.fill_null(False).to_numpy(zero_copy_only=False)
        for index in np.flatnonzero(differs):
            group = int(groups.of_row[index])
            if group in found:
                continue
            start = groups.starts[group]
            found[group] = (INCONSISTENT_ROWS, (
                f"the rows of one submission disagree on {name}: {column[int(start)].as_py()!r} in row "
                f"{row_numbers[start]}, {column[int(index)].as_py()!r} in row {row_numbers[index]}"))
    return found


def _patches(rows: pa.Table, groups: _Groups, is_item: np.ndarray, item_offsets: np.ndarray
             ) -> dict[int, list[tuple[int | None, dict]]]:
    """Per submission: the file's text of its unreadable cells, with the response they sit in."""
    texts = rows.column("_unreadable")
    if texts.null_count == len(texts):
        return {}
    item_index = np.cumsum(is_item) - 1
    patches: dict[int, list[tuple[int | None, dict]]] = {}
    for index in np.flatnonzero(pc.is_valid(texts).to_numpy(zero_copy_only=False)):
        group = int(groups.of_row[index])
        found = orjson.loads(texts[int(index)].as_py())
        top = {name: value for name, value in found.items() if name in _TOP_FIELDS}
        inner = {name: value for name, value in found.items() if name not in _TOP_FIELDS}
        if top:
            patches.setdefault(group, []).append((None, top))
        if inner and is_item[index]:
            patches.setdefault(group, []).append((int(item_index[index] - item_offsets[group]), inner))
    return patches


def _validate_in_slices(events: pa.Table, patches: dict, contract: Contract, now: datetime,
                        forced: dict[int, tuple[str, str]] | None = None):
    """Yield (event dict, reason code or None, reason) per event, a slice of dicts at a time."""
    forced = forced or {}
    for start in range(0, events.num_rows, _VALIDATION_SLICE):
        for offset, event in enumerate(events.slice(start, _VALIDATION_SLICE).to_pylist()):
            index = start + offset
            for position, values in patches.get(index, ()):
                if position is None:
                    event.update(values)
                else:
                    event["responses"][position].update(values)
            if index in forced:
                yield event, *forced[index]
                continue
            verdict = contract.validate(event, now)
            yield event, verdict.reason_code, verdict.reason


def _quarantine_row(event: dict, code: str, reason: str, where: str, lineage: Lineage, key: Any) -> dict:
    label = "row" if "," not in where and "-" not in where else "rows"
    return {
        "source_topic": lineage.source, "kafka_partition": None, "kafka_offset": None, "kafka_timestamp": None,
        "raw_key": key.encode("utf-8") if isinstance(key, str) else None,
        "raw_value": orjson.dumps(event, default=str),
        "event_id": event.get("event_id") if isinstance(event.get("event_id"), str) else None,
        "reason_code": code, "reason": f"{label} {where} of {lineage.source.removeprefix('import:')}: {reason}",
        "quarantined_at": None, "batch_id": None, "import_lineage": lineage.json(where),
    }


def _nulls(schema: pa.Schema, names: tuple[str, ...], count: int) -> dict[str, pa.Array]:
    return {name: pa.nulls(count, schema.field(name).type) for name in names}


__all__ = ["DUPLICATE_EVENT_ID", "DUPLICATE_OUTCOME", "INCONSISTENT_ROWS", "OUTCOME_ROWS", "QUARANTINE_ROWS",
           "RESPONSE_FIELDS", "SILVER_OUTCOMES", "SILVER_SUBMISSIONS", "SUBMISSION_ROWS", "UNREADABLE", "Built",
           "Lineage", "Refusals", "build_outcomes", "build_submissions", "prepare_outcome_rows",
           "prepare_submission_rows", "quarantine_malformed"]
