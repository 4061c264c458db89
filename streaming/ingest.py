"""Kafka rows, raw bronze rows, and which delivery of an event is the first one.

Deduplication lives in Spark's state store, not in reads of the tables: the first delivery
of each key is remembered for ``streaming.dedupe_horizon`` and every later one within it is
a duplicate, whatever the size of silver. The classic ``dropDuplicatesWithinWatermark`` drops
duplicates silently, and a duplicate must land in quarantine with its reason — so
:func:`with_first_deliveries` unions the stream with its deduplicated self: a micro-batch holds
every row once as delivered (``_first`` false) and the first deliveries again (``_first``
true); :func:`first_delivery_flags` tells them apart inside ``foreachBatch``. The dedupe state
commits with the micro-batch, so a replayed batch is classified exactly as its first attempt.

The horizon runs on the micro-batch's processing time (``current_timestamp()``, fixed per batch
and recorded in the offset log, so a replay sees the same time): no delivery is ever "late".
A copy delivered more than the horizon after the first is not recognised as a duplicate; it
lands a second time in bronze and silver and is scored again under the same ``ScoreIssued``
id (gold keeps the first). Producers retry within minutes; the default horizon is 7 days.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

COORDINATES = ("kafka_topic", "kafka_partition", "kafka_offset")
FIRST = "_first"


def kafka_rows(batch: DataFrame) -> DataFrame:
    """A Kafka source frame with learnscore's column names (bytes untouched)."""
    return batch.select(F.col("key").alias("raw_key"), F.col("value").alias("raw_value"),
                        F.col("topic").alias("kafka_topic"), F.col("partition").alias("kafka_partition"),
                        F.col("offset").alias("kafka_offset"), F.col("timestamp").alias("kafka_timestamp"))


def kafka_stream(spark, config, topics: str, max_offsets: int | None = None) -> DataFrame:
    """A streaming read of ``topics`` (comma-separated deployed names) as :func:`kafka_rows`.

    ``maxRecordsPerPartition`` (``streaming.max_records_per_task``) splits a large micro-batch
    into tasks of at most that many messages: a landing query that fell behind otherwise runs
    one task per Kafka partition for minutes, and the other queries' tasks (FAIR pools choose
    only when a task slot frees up) wait for them. ``failOnDataLoss`` is off: see
    ``runtime.check_data_loss``.
    """
    from learnscore.core.kafka_io import spark_kafka_options

    settings = config.streaming
    return kafka_rows(spark.readStream.format("kafka").options(**spark_kafka_options(config))
                      .option("subscribe", topics)
                      .option("startingOffsets", settings.starting_offsets)
                      .option("maxOffsetsPerTrigger", str(max_offsets or settings.max_offsets_per_trigger))
                      .option("maxRecordsPerPartition", str(settings.max_records_per_task))
                      .option("failOnDataLoss", "false")
                      .load())


def bronze_rows(rows: DataFrame, batch_id: int) -> DataFrame:
    """Rows for a ``bronze.*_raw`` table: the bytes untouched, where and when they arrived."""
    return rows.select("raw_key", "raw_value", *COORDINATES, "kafka_timestamp",
                       F.current_timestamp().alias("ingested_at"),
                       F.lit(batch_id).cast("bigint").alias("batch_id"))


def coordinate_key() -> Column:
    """A key no other delivery has: for rows that must never count as duplicates."""
    return F.concat_ws("/", F.lit("@"), F.col("kafka_topic"), F.col("kafka_partition").cast("string"),
                       F.col("kafka_offset").cast("string"))


def with_first_deliveries(stream: DataFrame, key: Column, horizon: str) -> DataFrame:
    """``stream`` (a streaming frame) with every row once (``_first`` false) and, again, the
    coordinates of the first delivery of each ``key`` within ``horizon`` (``_first`` true), e.g.
    ``"7 days"``.

    ``key`` is evaluated on the deduplicating branch only. It must be unique per delivery for
    rows that are not events to deduplicate (use :func:`coordinate_key`): a null key would make
    every later null a duplicate.
    """
    # The deduplicating branch carries the coordinates only (its other columns are null): the
    # shuffle the state store needs then moves a few bytes per row, not each raw event again.
    first = (stream.select(*COORDINATES, key.alias("_dedupe_key"))
             .withColumn("_seen_at", F.current_timestamp())
             .withWatermark("_seen_at", horizon)
             .dropDuplicatesWithinWatermark(["_dedupe_key"])
             .drop("_seen_at", "_dedupe_key"))
    return stream.withColumn(FIRST, F.lit(False)).unionByName(first.withColumn(FIRST, F.lit(True)),
                                                             allowMissingColumns=True)


def first_delivery_flags(batch: DataFrame) -> DataFrame:
    """One row per delivery of a micro-batch of :func:`with_first_deliveries`, with ``is_first``.

    ``batch`` should be materialised (it is read twice).
    """
    firsts = batch.where(F.col(FIRST)).select(*COORDINATES).withColumn("is_first", F.lit(True))
    delivered = batch.where(~F.col(FIRST)).drop(FIRST)
    return (delivered.join(F.broadcast(firsts), list(COORDINATES), "left")
            .withColumn("is_first", F.coalesce(F.col("is_first"), F.lit(False))))
