"""The writes of the scorer, each idempotent on the micro-batch (the I/O edge of the stream).

``foreachBatch`` alone is at-least-once: after a crash Spark runs the last uncommitted batch
again. Every write here therefore either records which logical write and batch it is, so a
replay can see it was committed (:func:`append_once`), or is a MERGE that only inserts keys
the table does not hold yet (:func:`merge_new`). Kafka has no such switch: publishing is
at-least-once and consumers dedupe on the event id.

Why not Delta's ``txnAppId``/``txnVersion`` options: they give exactly this guarantee, but in
Delta 4.4 every such write looks the app id up by reconstructing the table state — three
extra Spark jobs per append, measured at 1–1.5 s each on the 2-core machine, several seconds
per micro-batch. :func:`append_once` keeps the same contract (one app id per logical write,
version = batch id, recorded atomically in the commit itself as its ``userMetadata``) and
looks at the commit history only when a replay is possible: the first batch a (re)started
query runs. It reads back until it finds a commit of the same logical write, so commits by
other writers in between (BI, compactions, vacuum) cannot hide the crashed attempt's commit.
"""

from __future__ import annotations

import logging

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from learnscore.core.config import Config
from learnscore.core.kafka_io import spark_kafka_options
from learnscore.schemas.tables import TABLES, Table

log = logging.getLogger(__name__)


def conform(rows: DataFrame, table: Table | str) -> DataFrame:
    """``rows`` with exactly the columns of ``table``, in its order and with its types, and those
    of its optional columns ``rows`` has (Delta fills the others with null).

    A missing column is a programming error and fails loudly rather than writing nulls.
    """
    table = TABLES[table] if isinstance(table, str) else table
    missing = [name for name in table.column_names if name not in rows.columns]
    if missing:
        raise ValueError(f"rows for {table.name} lack the columns {', '.join(missing)} "
                         f"(they have {', '.join(rows.columns)})")
    optional = [(name, kind) for name, kind in table.optional_columns if name in rows.columns]
    return rows.select(*[F.col(name).cast(kind).alias(name) for name, kind in (*table.columns, *optional)])


MARKER_PREFIX = "learnscore-write:"
# How far back a replay looks for the commit of its crashed attempt, growing until found: other
# writers (BI, ``train --initial``, OPTIMIZE, VACUUM) may have committed many times since.
HISTORY_WINDOWS = (25, 250, 2500, None)


def write_marker(app_id: str, batch_id: int) -> str:
    """The commit marker of one logical write of one micro-batch.

    >>> write_marker("learnscore.scorer.4f1c.silver.submissions", 12)
    'learnscore-write:learnscore.scorer.4f1c.silver.submissions@12'
    """
    return f"{MARKER_PREFIX}{app_id}@{batch_id}"


def last_committed_batch(spark: SparkSession, config: Config, table: str, app_id: str) -> int | None:
    """The highest batch id ``app_id`` committed to ``table``, or None if it never wrote.

    Looks at the latest commits first and further back only while none of them is ours, so
    a flood of foreign commits cannot hide our last write (and make a replay land twice).
    """
    from delta.tables import DeltaTable

    prefix = f"{MARKER_PREFIX}{app_id}@"
    target = DeltaTable.forPath(spark, config.table_path(table))
    for window in HISTORY_WINDOWS:
        history = target.history(window) if window is not None else target.history()
        rows = history.select("version", "userMetadata").collect()
        ours = [int(row.userMetadata[len(prefix):]) for row in rows
                if row.userMetadata and row.userMetadata.startswith(prefix)]
        if ours:
            return max(ours)
        if window is None or len(rows) < window or (rows and min(r.version for r in rows) == 0):
            return None  # the whole history was read
    return None


def append_once(rows: DataFrame, config: Config, table: str, app_id: str, batch_id: int, *,
                may_be_replay: bool) -> bool:
    """Append ``rows`` to ``table`` unless this ``(app_id, batch_id)`` was committed before.

    ``app_id`` names one logical write of one query: two different writes to the same table
    need two app ids, or the second would be skipped as a replay. Batches of one app id are
    committed in order, so a batch id at or below the last committed one is a replay.
    Returns False when the write was skipped as already committed.
    """
    spark = rows.sparkSession
    if may_be_replay:
        last = last_committed_batch(spark, config, table, app_id)
        if last is not None and batch_id <= last:
            log.info("%s: batch %s was committed before the restart; not written again", table, batch_id)
            return False
    (conform(rows, table).write.format("delta").mode("append")
     .option("userMetadata", write_marker(app_id, batch_id))
     .save(config.table_path(table)))
    return True


def merge_new(spark: SparkSession, rows: DataFrame, config: Config, table: str, key: str) -> None:
    """Insert the rows whose ``key`` is not in ``table`` yet; rows already there stay as they are.

    Idempotent by nature: running it twice with the same rows changes nothing the second
    time. ``rows`` must hold each key at most once (callers dedupe within the batch).
    """
    from delta.tables import DeltaTable

    target = DeltaTable.forPath(spark, config.table_path(table))
    (target.alias("t").merge(conform(rows, table).alias("s"), f"t.`{key}` = s.`{key}`")
     .whenNotMatchedInsertAll().execute())


def compact(spark: SparkSession, config: Config, table: str) -> tuple[int, int]:
    """Bin-pack the table's small files (Delta OPTIMIZE); returns (files removed, files added).

    Rewrites no data (the commit says ``dataChange=false``) and changes no row; readers keep
    their snapshot. Files of ``spark.databricks.delta.optimize.minFileSize`` and more stay as
    they are, so a compaction rewrites the recent small files, not the whole table.
    """
    from delta.tables import DeltaTable

    metrics = DeltaTable.forPath(spark, config.table_path(table)).optimize().executeCompaction()
    row = metrics.select("metrics.numFilesRemoved", "metrics.numFilesAdded").first()
    return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)


def read_table(spark: SparkSession, config: Config, table: str) -> DataFrame:
    return spark.read.format("delta").load(config.table_path(table))


def publish(rows: DataFrame, config: Config, topic: str, key: Column, value: Column) -> None:
    """Write ``rows`` to the Kafka ``topic`` (deployed name) as one batch.

    At-least-once: a replayed micro-batch publishes again. Each message carries a
    deterministic event id, so a consumer recognises a redelivery.
    """
    (rows.select(key.cast("string").alias("key"), value.cast("string").alias("value"))
     .write.format("kafka").options(**spark_kafka_options(config)).option("topic", topic).save())


class BatchWriter:
    """The Delta writes of one micro-batch of one query, each exactly once.

    One app id per logical write: ``learnscore.<query>.<query id>.<table>[.<part>]``; the query
    id lives in the checkpoint, so a new checkpoint gets new app ids (its batch ids restart).
    ``first_of_run``: Spark re-runs at most one batch, the first a (re)started query executes,
    so only that one looks for the commit of a crashed attempt.
    """

    def __init__(self, config: Config, query: str, query_id: str, batch_id: int, *, first_of_run: bool,
                 on_write=None):
        self.config, self.query, self.query_id = config, query, query_id
        self.batch_id, self.first_of_run = int(batch_id), first_of_run
        self._on_write = on_write

    def app_id(self, table: str, part: str | None = None) -> str:
        return ".".join(["learnscore", self.query, self.query_id, table, *([part] if part else [])])

    def append(self, rows: DataFrame, table: str, part: str | None = None) -> bool:
        """Append ``rows`` once per (write, batch); False when a replay skipped it."""
        written = append_once(rows, self.config, table, self.app_id(table, part), self.batch_id,
                              may_be_replay=self.first_of_run)
        if self._on_write is not None:
            self._on_write(table)
        return written
