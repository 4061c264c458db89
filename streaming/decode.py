"""Kafka rows → validated, decoded events, in one Arrow pass per partition.

Each raw value is decoded and validated exactly once, by the one validator
(:meth:`learnscore.schemas.contract.Contract.validate_bytes`); the accepted events' fields
become typed Arrow columns in the same pass (no second parse by ``from_json``), and a refused
event keeps its bytes, coordinates and reason. For submissions, the responses become a
``list<struct>`` built from flat arrays (one Python list per field, then numpy / Arrow), and the
model-free per-submission signals the monitors watch are computed vectorised from those arrays.

The pass is a function of a ``pyarrow.RecordBatch`` (:func:`decode_batch`), so it is tested
without Spark; :func:`decode_events` applies it to a Spark DataFrame with ``mapInArrow``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa

from learnscore.schemas.contract import Contract, parse_timestamp
from learnscore.schemas.domain import Domain
from learnscore.schemas.events import MAX_EVENT_BYTES, contracts_for

KAFKA_FIELDS = (
    pa.field("raw_key", pa.binary()), pa.field("raw_value", pa.binary()), pa.field("kafka_topic", pa.string()),
    pa.field("kafka_partition", pa.int32()), pa.field("kafka_offset", pa.int64()),
    pa.field("kafka_timestamp", pa.timestamp("us", tz="UTC")),
)
VERDICT_FIELDS = (pa.field("reason_code", pa.string()), pa.field("reason", pa.string()))
RESPONSE_TYPE = pa.struct([
    pa.field("item_id", pa.string()), pa.field("skill", pa.string()), pa.field("correct", pa.bool_()),
    pa.field("response_time_ms", pa.int64()), pa.field("attempts", pa.int64()), pa.field("hint_used", pa.bool_()),
])
#: Per-submission signals computed in the decoding pass (model-free: no item bank needed).
SIGNAL_FIELDS = (pa.field("n_responses", pa.int64()), pa.field("accuracy", pa.float64()),
                 pa.field("mean_log_time", pa.float64()))
_ARROW_TYPES = {"string": pa.string(), "bigint": pa.int64(), "double": pa.float64(), "boolean": pa.bool_(),
                "timestamp": pa.timestamp("us", tz="UTC")}


@dataclass(frozen=True)
class EventKind:
    """What to decode: the contract (by name, looked up per domain in the worker) and its fields."""

    contract_name: str
    fields: tuple[tuple[str, str], ...]  # (name, Spark DDL type) of the decoded top-level fields
    responses: bool = False  # a submission: responses list + signals

    def arrow_schema(self) -> pa.Schema:
        decoded = [pa.field(name, pa.list_(RESPONSE_TYPE) if kind == "responses" else _ARROW_TYPES[kind])
                   for name, kind in self.fields]
        signals = list(SIGNAL_FIELDS) if self.responses else []
        return pa.schema([*KAFKA_FIELDS, *VERDICT_FIELDS, *decoded, *signals])

    def spark_ddl(self) -> str:
        from pyspark.sql.pandas.types import from_arrow_schema

        return from_arrow_schema(self.arrow_schema()).simpleString()[len("struct<"):-1]


SUBMISSION = EventKind("DiagnosticSubmitted", (
    ("event_id", "string"), ("schema_version", "bigint"), ("event_time", "timestamp"), ("learner_id", "string"),
    ("assessment_id", "string"), ("subject", "string"), ("grade_level", "bigint"), ("responses", "responses"),
), responses=True)
OUTCOME = EventKind("OutcomeObserved", (
    ("event_id", "string"), ("schema_version", "bigint"), ("event_time", "timestamp"),
    ("submission_event_id", "string"), ("learner_id", "string"), ("observed_progress_score", "double"),
    ("observed_comprehension_level", "string"),
))


@functools.cache
def _contract(domain: Domain, name: str) -> Contract:
    return contracts_for(domain).events[name]


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def judged_at(sent: datetime | None, now: datetime) -> datetime:
    """The clock an event's time is judged against (``future_timestamp``): the Kafka timestamp it
    arrived with, so that a replay gets the same verdict — unless that is no clock reading (none,
    or 0 / negative: producers that set no time) or lies ahead of ``now``; then ``now``.

    >>> now = datetime(2026, 2, 1, tzinfo=timezone.utc)
    >>> [judged_at(t, now).year for t in (None, _EPOCH, datetime(2025, 5, 1, tzinfo=timezone.utc),
    ...                                   datetime(2027, 1, 1, tzinfo=timezone.utc))]
    [2026, 2026, 2025, 2026]
    """
    if sent is None or sent <= _EPOCH or sent > now:
        return now
    return sent


def decode_batch(batch: pa.RecordBatch, kind: EventKind, domain: Domain, now: datetime | None = None) -> pa.RecordBatch:
    """Validate and decode every row of a Kafka-shaped batch (see :data:`KAFKA_FIELDS`).

    Each event is validated against the Kafka timestamp it arrived with (:func:`judged_at`), so a
    replayed micro-batch gets the very same verdicts.

    >>> import orjson
    >>> from learnscore.schemas.examples import example_events
    >>> good = orjson.dumps(example_events()["DiagnosticSubmitted"])
    >>> sent = datetime(2026, 2, 1, tzinfo=timezone.utc)
    >>> batch = pa.RecordBatch.from_arrays(
    ...     [pa.array([b"k", b"k"]), pa.array([good, b"{oops"]), pa.array(["t", "t"]), pa.array([0, 0], pa.int32()),
    ...      pa.array([5, 6]), pa.array([sent, sent], pa.timestamp("us", tz="UTC"))], schema=pa.schema(KAFKA_FIELDS))
    >>> out = decode_batch(batch, SUBMISSION, Domain())
    >>> out.column("reason_code").to_pylist(), out.column("grade_level").to_pylist()
    ([None, 'not_json'], [5, None])
    >>> out.column("accuracy").to_pylist()[0], out.column("n_responses").to_pylist()
    (0.5, [2, None])
    """
    contract = _contract(domain, kind.contract_name)
    now = now or datetime.now(timezone.utc)
    raw = batch.column("raw_value").to_pylist()
    sent = batch.column("kafka_timestamp").to_pylist()
    codes: list[str | None] = []
    reasons: list[str | None] = []
    events: list[dict | None] = []
    for value, moment in zip(raw, sent):
        when = judged_at(moment, now)
        verdict = contract.validate_bytes(value, when, max_bytes=MAX_EVENT_BYTES)
        codes.append(verdict.reason_code)
        reasons.append(verdict.reason)
        events.append(verdict.event)
    columns = [batch.column(field.name) for field in KAFKA_FIELDS]
    columns += [pa.array(codes, pa.string()), pa.array(reasons, pa.string())]
    for name, kind_name in kind.fields:
        if kind_name == "responses":
            continue
        values = [None if event is None else event.get(name) for event in events]
        if kind_name == "timestamp":
            values = [None if value is None else parse_timestamp(value) for value in values]
        columns.append(pa.array(values, _ARROW_TYPES[kind_name]))
    if kind.responses:
        responses, signals = _responses(events)
        position = [name for name, _ in kind.fields].index("responses")
        columns.insert(len(KAFKA_FIELDS) + len(VERDICT_FIELDS) + position, responses)
        columns += signals
    return pa.RecordBatch.from_arrays(columns, schema=kind.arrow_schema())


def _responses(events: list[dict | None]) -> tuple[pa.Array, list[pa.Array]]:
    """The ``responses`` list column and the signals, from flat per-field arrays."""
    lengths = np.fromiter((0 if event is None else len(event["responses"]) for event in events),
                          dtype=np.int64, count=len(events))
    offsets = np.zeros(len(events) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = [response for event in events if event is not None for response in event["responses"]]
    children = [pa.array([response[field.name] for response in flat], field.type) for field in RESPONSE_TYPE]
    valid = np.array([event is not None for event in events])
    structs = pa.StructArray.from_arrays(children, fields=list(RESPONSE_TYPE))
    responses = pa.ListArray.from_arrays(pa.array(offsets), structs, mask=pa.array(~valid))
    row = np.repeat(np.arange(len(events)), lengths)
    count = np.where(lengths > 0, lengths, 1).astype(np.float64)
    correct = np.bincount(row, weights=children[2].to_numpy(zero_copy_only=False).astype(np.float64),
                          minlength=len(events)) / count
    log_time = np.bincount(row, weights=np.log1p(children[3].to_numpy().astype(np.float64)),
                           minlength=len(events)) / count
    return responses, [pa.array(lengths, pa.int64(), mask=~valid), pa.array(correct, pa.float64(), mask=~valid),
                       pa.array(log_time, pa.float64(), mask=~valid)]


def decode_events(rows, kind: EventKind, domain: Domain):
    """``rows`` (a Spark DataFrame with :data:`KAFKA_FIELDS`) validated and decoded by
    :func:`decode_batch` on the executors: one Python pass per event."""
    ordered = rows.select(*[field.name for field in KAFKA_FIELDS])

    def decode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield decode_batch(batch.cast(pa.schema(KAFKA_FIELDS)) if batch.schema != pa.schema(KAFKA_FIELDS)
                               else batch, kind, domain)

    return ordered.mapInArrow(decode, kind.spark_ddl())


def event_key_column(domain: Domain, by_topic: dict[str, tuple[str, str]]):
    """A Spark column: for a row of a topic in ``by_topic`` (topic → (contract name, key field)),
    the key field of the event when the contract accepts it, else null — the key the stream
    deduplicates on, so that a refused event never hides a later valid one with the same id."""
    from pyspark.sql import functions as F

    contract_name, key_field = F.lit(None).cast("string"), F.lit(None).cast("string")
    for topic, (name, field) in by_topic.items():
        contract_name = F.when(F.col("kafka_topic") == topic, F.lit(name)).otherwise(contract_name)
        key_field = F.when(F.col("kafka_topic") == topic, F.lit(field)).otherwise(key_field)

    @F.pandas_udf("string")
    def keys(raw: pd.Series, sent: pd.Series, names: pd.Series, fields: pd.Series) -> pd.Series:
        now = datetime.now(timezone.utc)
        out = []
        for value, moment, name, field in zip(raw, pd.to_datetime(sent, utc=True), names, fields):
            if name is None:
                out.append(None)
                continue
            when = judged_at(None if moment is pd.NaT else moment.to_pydatetime(), now)
            verdict = _contract(domain, name).validate_bytes(value, when, max_bytes=MAX_EVENT_BYTES)
            out.append(None if verdict.event is None else verdict.event.get(field))
        return pd.Series(out, dtype=object)

    return keys(F.col("raw_value"), F.col("kafka_timestamp"), contract_name, key_field)
