"""The writes of the scorer, each idempotent on the micro-batch (the I/O edge of the stream).

``foreachBatch`` alone is at-least-once: after a crash Spark runs the last uncommitted batch
again. Every write here therefore either carries Delta's ``txnAppId``/``txnVersion`` (Delta
skips a write whose version it has already committed for that app id) or is a MERGE that
only inserts keys the table does not hold yet. Kafka has no such switch: publishing is
at-least-once and consumers dedupe on the event id.
"""

from __future__ import annotations

import logging

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from learnscore.config import Config
from learnscore.kafka_io import spark_kafka_options
from schemas.tables import TABLES, Table

log = logging.getLogger(__name__)


def conform(rows: DataFrame, table: Table | str) -> DataFrame:
    """``rows`` with exactly the columns of ``table``, in its order and with its types.

    A missing column is a programming error and fails loudly rather than writing nulls.
    """
    table = TABLES[table] if isinstance(table, str) else table
    missing = [name for name in table.column_names if name not in rows.columns]
    if missing:
        raise ValueError(f"rows for {table.name} lack the columns {', '.join(missing)} "
                         f"(they have {', '.join(rows.columns)})")
    return rows.select(*[F.col(name).cast(kind).alias(name) for name, kind in table.columns])


def append_once(rows: DataFrame, config: Config, table: str, app_id: str, batch_id: int) -> None:
    """Append ``rows`` to ``table`` unless this ``(app_id, batch_id)`` was committed before.

    ``app_id`` names one logical write of one query (see ``streaming.job``): two different
    writes to the same table need two app ids, or the second would be skipped as a replay.
    """
    (conform(rows, table).write.format("delta").mode("append")
     .option("txnAppId", app_id).option("txnVersion", batch_id)
     .save(config.table_path(table)))


def merge_new(spark: SparkSession, rows: DataFrame, config: Config, table: str, key: str) -> None:
    """Insert the rows whose ``key`` is not in ``table`` yet; rows already there stay as they are.

    Idempotent by nature: running it twice with the same rows changes nothing the second
    time. ``rows`` must hold each key at most once (callers dedupe within the batch).
    """
    from delta.tables import DeltaTable

    target = DeltaTable.forPath(spark, config.table_path(table))
    (target.alias("t").merge(conform(rows, table).alias("s"), f"t.`{key}` = s.`{key}`")
     .whenNotMatchedInsertAll().execute())


def read_table(spark: SparkSession, config: Config, table: str) -> DataFrame:
    return spark.read.format("delta").load(config.table_path(table))


def publish(rows: DataFrame, config: Config, topic: str, key: Column, value: Column) -> None:
    """Write ``rows`` to the Kafka ``topic`` (deployed name) as one batch.

    At-least-once: a replayed micro-batch publishes again. Each message carries a
    deterministic event id, so a consumer recognises a redelivery.
    """
    (rows.select(key.cast("string").alias("key"), value.cast("string").alias("value"))
     .write.format("kafka").options(**spark_kafka_options(config)).option("topic", topic).save())
