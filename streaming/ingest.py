"""Kafka rows → bronze rows, validated events, and the delivery class of each event.

Pure DataFrame → DataFrame functions; the job decides what is written where.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from learnscore.schemas.contract import Contract, spark_schema
from learnscore.schemas.events import EVENTS, validate_bytes

COORDINATES = ("kafka_topic", "kafka_partition", "kafka_offset")

# Delivery classes of a valid event (see delivery_verdicts).
NEW, REPLAY, DUPLICATE = "new", "replay", "duplicate"

# A valid event whose required values Spark's JSON reader could not read (the contract and
# Spark disagree on a corner of a format): refused loudly rather than landed with nulls.
SPARK_PARSE_MISMATCH = "spark_parse_mismatch"


def kafka_rows(batch: DataFrame) -> DataFrame:
    """A Kafka source batch with learnscore's column names (bytes untouched)."""
    return batch.select(F.col("key").alias("raw_key"), F.col("value").alias("raw_value"),
                        F.col("topic").alias("kafka_topic"), F.col("partition").alias("kafka_partition"),
                        F.col("offset").alias("kafka_offset"), F.col("timestamp").alias("kafka_timestamp"))


def bronze_rows(rows: DataFrame, batch_id: int) -> DataFrame:
    """Rows for a ``bronze.*_raw`` table: the bytes untouched, where and when they arrived."""
    return rows.select("raw_key", "raw_value", *COORDINATES, "kafka_timestamp",
                       F.current_timestamp().alias("ingested_at"),
                       F.lit(batch_id).cast("bigint").alias("batch_id"))


def validation_moment(sent_at: datetime | None, now: datetime) -> datetime:
    """The "now" an event is validated against: when Kafka got it, unless that lies ahead of us.

    Validating against the Kafka timestamp makes the verdict the same when a batch is
    replayed after a crash (an event cannot turn valid later because time passed), which
    keeps the quarantine and silver writes of a replay identical to the first attempt.

    >>> now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    >>> validation_moment(datetime(2026, 1, 1, 11, tzinfo=timezone.utc), now).hour
    11
    >>> validation_moment(None, now).hour
    12
    """
    if sent_at is None:
        return now
    return min(sent_at, now)


@dataclass(frozen=True)
class TopicContract:
    """The contract the events of one topic must meet, and where their decoded form goes."""

    topic: str  # deployed topic name
    record: Contract
    column: str  # the struct column that holds the decoded event
    required: tuple[str, ...] = ()  # fields that must not be null after Spark decodes them


def _verdict_udf():
    # The record travels by name, so workers look it (and its compiled acceptor) up in their
    # own import instead of unpickling a copy for every batch.
    @F.pandas_udf("reason_code string, reason string")
    def verdicts(raw: pd.Series, sent_at: pd.Series, record_names: pd.Series) -> pd.DataFrame:
        now = datetime.now(timezone.utc)
        moments = pd.to_datetime(sent_at, utc=True)
        codes, reasons = [], []
        for value, moment, name in zip(raw, moments, record_names):
            if name is None:  # a topic without a contract (read leniently elsewhere)
                codes.append(None)
                reasons.append(None)
                continue
            when = validation_moment(None if moment is pd.NaT else moment.to_pydatetime(), now)
            verdict = validate_bytes(EVENTS[name], value, when)
            codes.append(verdict.reason_code)
            reasons.append(verdict.reason)
        return pd.DataFrame({"reason_code": codes, "reason": reasons})

    return verdicts


def validate_events(rows: DataFrame, contracts: Sequence[TopicContract]) -> DataFrame:
    """Add ``reason_code``/``reason`` (null when valid) and one decoded struct column per contract.

    The one Python validator (``learnscore.schemas.events.validate_bytes``) decides, for the events of
    every contract topic in one pass over the batch; Spark's ``from_json`` with the schema
    derived from the same contract then decodes the valid ones into ``contract.column``
    (null for other topics and for refused events). A valid event with a required field that
    Spark reads as null is refused as ``spark_parse_mismatch`` rather than landed with nulls.
    Rows of topics without a contract keep null reasons.
    """
    record_name = F.lit(None).cast("string")
    for contract in contracts:
        record_name = F.when(F.col("kafka_topic") == contract.topic,
                             F.lit(contract.record.name)).otherwise(record_name)
    checked = rows.withColumn("_verdict", _verdict_udf()(F.col("raw_value"), F.col("kafka_timestamp"),
                                                         record_name))
    valid = F.col("_verdict.reason_code").isNull()
    text = F.col("raw_value").cast("string")
    mismatch_code, mismatch_reason = F.lit(None).cast("string"), F.lit(None).cast("string")
    for contract in contracts:
        mine = valid & (F.col("kafka_topic") == contract.topic)
        checked = checked.withColumn(contract.column, F.when(mine, F.from_json(
            text, spark_schema(contract.record))))
        unread = F.array_compact(F.array(*[F.when(F.col(f"{contract.column}.{name}").isNull(), F.lit(name))
                                           for name in contract.required] or [F.lit(None)]))
        mismatch = mine & (F.size(unread) > 0)
        mismatch_code = F.when(mismatch, F.lit(SPARK_PARSE_MISMATCH)).otherwise(mismatch_code)
        mismatch_reason = F.when(mismatch, F.concat(
            F.lit("the contract accepted the event but Spark read these fields as null: "),
            F.array_join(unread, ", "), F.lit("; report it with the raw event"))).otherwise(mismatch_reason)
    checked = (checked.withColumn("reason_code", F.coalesce(F.col("_verdict.reason_code"), mismatch_code))
               .withColumn("reason", F.coalesce(F.col("_verdict.reason"), mismatch_reason))
               .drop("_verdict"))
    for contract in contracts:  # a refused event keeps no decoded form
        checked = checked.withColumn(contract.column, F.when(F.col("reason_code").isNull(),
                                                             F.col(contract.column)))
    return checked


def _same_coordinates(prefix: str) -> Column:
    return ((F.col("kafka_topic") == F.col(f"{prefix}topic"))
            & (F.col("kafka_partition") == F.col(f"{prefix}partition"))
            & (F.col("kafka_offset") == F.col(f"{prefix}offset")))


def delivery_verdicts(events: DataFrame, landed: DataFrame, key: str = "event_id") -> DataFrame:
    """One row per delivery: the Kafka coordinates and ``delivery`` — ``new``, ``replay`` or
    ``duplicate``.

    ``events`` holds ``key`` and the Kafka coordinates; ``landed`` is the table the events
    land in (one row per key, with the coordinates it came from).

    - ``new``: the key is not landed and this is its first delivery in the batch
      (lowest topic, partition, offset);
    - ``replay``: the key is landed *from these very coordinates* — our own batch run again
      after a crash; it is not a duplicate and must not be quarantined;
    - ``duplicate``: the key is landed from other coordinates, or appears earlier in the batch.

    Only keys and coordinates move: the batch's keys are broadcast into one scan of the table
    (neither the events, kilobytes each, nor the table are shuffled), and the few matches meet
    the batch in a shuffled hash join inside the same Spark job — broadcasting them too would
    cost a job of its own.
    """
    batch_keys = F.broadcast(events.select(F.col(key).alias("_batch_key")))
    known = landed_coordinates(landed, key).join(batch_keys, F.col("_landed_key") == F.col("_batch_key"),
                                                 "left_semi")
    joined = (events.select(key, *COORDINATES).withColumn("_rank", delivery_rank(key))
              .join(known.hint("shuffle_hash"), F.col(key) == F.col("_landed_key"), "left"))
    return joined.select(*COORDINATES, delivery_column().alias("delivery"))


def landed_coordinates(landed: DataFrame, key: str = "event_id") -> DataFrame:
    """``_landed_key`` and the Kafka coordinates it landed from, for :func:`delivery_column`."""
    return landed.select(F.col(key).alias("_landed_key"), F.col("kafka_topic").alias("_landed_topic"),
                         F.col("kafka_partition").alias("_landed_partition"),
                         F.col("kafka_offset").alias("_landed_offset"))


def delivery_rank(key: str = "event_id") -> Column:
    """1 for the first delivery of a key in the batch (lowest topic, partition, offset)."""
    return F.row_number().over(Window.partitionBy(key).orderBy(*COORDINATES))


def delivery_column(rank: str = "_rank") -> Column:
    """``new``/``replay``/``duplicate`` of a batch row left-joined with :func:`landed_coordinates`
    and ranked by :func:`delivery_rank` (see :func:`delivery_verdicts`)."""
    return (F.when(F.col("_landed_key").isNull(),
                   F.when(F.col(rank) == 1, F.lit(NEW)).otherwise(F.lit(DUPLICATE)))
            .when(_same_coordinates("_landed_"), F.lit(REPLAY))
            .otherwise(F.lit(DUPLICATE)))


def with_verdicts(events: DataFrame, verdicts: DataFrame) -> DataFrame:
    """``events`` with the columns of their verdicts (matched on the Kafka coordinates)."""
    return events.join(F.broadcast(verdicts), list(COORDINATES), "inner")


def event_columns(rows: DataFrame, contract: TopicContract) -> DataFrame:
    """Flatten ``contract.column`` into top-level columns next to the raw bytes and coordinates."""
    return rows.select(*[F.col(f"{contract.column}.{field.name}").alias(field.name)
                         for field in contract.record.fields],
                       "raw_key", "raw_value", *COORDINATES, "kafka_timestamp")
