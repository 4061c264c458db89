"""Delta table I/O at the edges: create tables from their definitions, small Spark-free writes.

Spark jobs create and write their tables through :func:`ensure_spark_tables`; processes that
do not run Spark (registry CLI, retrain worker, dashboard) use ``deltalake`` here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from learnscore.core.config import Config
from learnscore.schemas.tables import TABLES, Table, arrow_schema

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = "delta.checkpointInterval"


def ensure_spark_tables(spark, config: Config, names: Iterable[str], creator_wait_s: float = 30.0) -> None:
    """Create the named Delta tables (empty, with their declared schema) when missing.

    ``creator_wait_s``: how long a failed create waits for another process's create to commit
    before it takes what is there for the leftover of a killed one."""
    from delta.tables import DeltaTable
    from pyspark.sql.types import StructType

    for name in names:
        table = TABLES[name]
        existed = DeltaTable.isDeltaTable(spark, config.table_path(name))
        builder = (DeltaTable.createIfNotExists(spark)
                   .location(config.table_path(name))
                   .addColumns(StructType.fromDDL(table.stored_ddl))
                   .comment(table.doc))
        if table.partition_by:
            builder = builder.partitionedBy(*table.partition_by)
        interval = str(config.lake.delta_checkpoint_interval)
        builder = builder.property(CHECKPOINT_INTERVAL, interval)
        try:
            delta = builder.execute()
        except Exception:
            # Another process (the other half of a split scorer) created it between the check and
            # ours: once its first commit is there, createIfNotExists finds the table. No commit
            # after the wait: what is there is the leftover of a create killed before its commit.
            path = config.table_path(name)
            if not _wait_for_table(spark, path, creator_wait_s) and not _clear_interrupted_create(path):
                raise
            spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
            delta, existed = builder.execute(), True
        # A table made before the setting existed (or with another value) is brought in line;
        # one made just now has it (the check is a Spark job: ~0.6 s a table on a fresh lake).
        if not existed:
            continue
        if delta.detail().first().properties.get(CHECKPOINT_INTERVAL) != interval:
            spark.sql(f"ALTER TABLE delta.`{config.table_path(name)}` "
                      f"SET TBLPROPERTIES ('{CHECKPOINT_INTERVAL}' = '{interval}')")
        # A table made by an earlier release lacks the columns added since (always nullable,
        # at the end): added in place, the rows it holds read them as null.
        present = set(delta.toDF().columns)
        missing = [(column, kind) for column, kind in table.stored_columns if column not in present]
        if missing:
            added = ", ".join(f"`{column}` {kind}" for column, kind in missing)
            spark.sql(f"ALTER TABLE delta.`{config.table_path(name)}` ADD COLUMNS ({added})")
            log.info("%s: added the columns %s of this release", name, ", ".join(c for c, _ in missing))


def _clear_interrupted_create(path: str) -> bool:
    """Remove what a create killed before its first commit left: a ``_delta_log`` folder with no
    commit or checkpoint in it (only temp files). Delta takes such a folder for a table and then
    finds no version, so every later create failed (DELTA_TABLE_NOT_FOUND; the SIGKILL test found
    it). Local paths only. Called once no other creator committed within the wait.

    >>> import tempfile, pathlib
    >>> log = pathlib.Path(tempfile.mkdtemp()) / "t" / "_delta_log"
    >>> (log / "_staged_commits").mkdir(parents=True); (log / ".00000000000000000000.json.x.tmp").touch()
    >>> _clear_interrupted_create(str(log.parent)), log.exists()
    (True, False)
    """
    import re
    import shutil
    from pathlib import Path

    if "://" in path and not path.startswith("file:"):
        return False
    folder = Path(path.removeprefix("file://").removeprefix("file:")) / "_delta_log"
    if not folder.is_dir():
        return False
    committed = re.compile(r"^(\d{20}\.(json|checkpoint.*\.parquet)|_last_checkpoint|\d{20}\.\w+\.json)$")
    if any(committed.match(entry.name) for entry in folder.rglob("*") if entry.is_file()):
        return False
    log.warning("%s: removing the remains of a table create that was interrupted before its first "
                "commit (%s)", path, ", ".join(sorted(entry.name for entry in folder.rglob("*"))) or "empty")
    shutil.rmtree(folder)
    return True


def _wait_for_table(spark, path: str, timeout_s: float = 30.0) -> bool:
    import time

    from delta.tables import DeltaTable

    # The failed create left this JVM's cached DeltaLog of the path without the other's commit.
    spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    deadline = time.monotonic() + timeout_s
    while not DeltaTable.isDeltaTable(spark, path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def vacuum_tables(spark, config: Config, names: Iterable[str] | None = None) -> dict[str, int]:
    """Delete the data files no recent table version reads, in every project table that exists
    (or the ``names`` given); return the files deleted per table.

    The stream's compactions and MERGEs leave the files they replaced behind for time travel
    (training reads pinned table versions); this reclaims them once they are older than the
    table's ``delta.deletedFileRetentionDuration`` (a week unless set). Delta 4 takes the
    retention from that property only (a RETAIN clause other than 0 hours is ignored), so it is
    not an argument here: set the property on a table to keep its history longer or shorter.
    """
    from delta.tables import DeltaTable

    # Vacuum lists a table's files in a Spark job of this many tasks, 10,000 by default: a
    # minute of empty tasks per table on two cores. The cluster's cores are enough.
    listing = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
    previous = spark.conf.get(listing, None)
    spark.conf.set(listing, str(max(2, spark.sparkContext.defaultParallelism)))
    deleted: dict[str, int] = {}
    try:
        for name in names if names is not None else sorted(TABLES):
            path = config.table_path(name)
            if not DeltaTable.isDeltaTable(spark, path):
                continue
            files = spark.sql(f"VACUUM delta.`{path}` DRY RUN").count()
            if files:
                DeltaTable.forPath(spark, path).vacuum()
            deleted[name] = files
            log.info("vacuum %s: %d replaced files past the retention deleted", name, files)
    finally:
        if previous is None:
            spark.conf.unset(listing)
        else:
            spark.conf.set(listing, previous)
    return deleted


def ensure_deltalake_table(config: Config, name: str) -> str:
    """Create a ``deltalake``-written table when missing; return its location."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import TableNotFoundError

    table = TABLES[name]
    path = config.table_path(name)
    try:
        DeltaTable(path)
    except TableNotFoundError:
        import pyarrow as pa

        write_deltalake(path, pa.Table.from_pylist([], schema=arrow_schema(table)), mode="append",
                        description=table.doc)
    return path


def append_rows(config: Config, name: str, rows: list[dict[str, Any]]) -> None:
    """Append rows to a ``deltalake``-written table (one Delta commit)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    table: Table = TABLES[name]
    if table.writer != "deltalake":
        raise ValueError(f"{name} is written by Spark jobs; appending from here would race them")
    path = ensure_deltalake_table(config, name)
    data = pa.Table.from_pylist([{c: row.get(c) for c in table.column_names} for row in rows],
                                schema=arrow_schema(table))
    write_deltalake(path, data, mode="append")


def upsert_rows(config: Config, name: str, rows: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    """MERGE rows into a ``deltalake``-written table on ``keys`` (one Delta commit): a row whose
    keys match an existing one replaces it, the others are added. Running a report again for
    the same windows therefore replaces its rows instead of adding duplicates."""
    import pyarrow as pa
    from deltalake import DeltaTable

    table: Table = TABLES[name]
    if table.writer != "deltalake":
        raise ValueError(f"{name} is written by Spark jobs; merging from here would race them")
    if not rows:
        return
    path = ensure_deltalake_table(config, name)
    data = pa.Table.from_pylist([{c: row.get(c) for c in table.column_names} for row in rows],
                                schema=arrow_schema(table))
    (DeltaTable(path).merge(data, " AND ".join(f"t.{key} = s.{key}" for key in keys),
                            source_alias="s", target_alias="t")
     .when_matched_update_all().when_not_matched_insert_all().execute())


def read_table(config: Config, name: str, columns: list[str] | None = None, version: int | None = None):
    """Read a Delta table into pandas without Spark; an empty frame when it does not exist yet."""
    import pandas as pd
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        delta = DeltaTable(config.table_path(name), version=version)
    except TableNotFoundError:
        return pd.DataFrame(columns=columns or TABLES[name].column_names)
    return delta.to_pandas(columns=columns)


def table_version(config: Config, name: str) -> int | None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(config.table_path(name)).version()
    except TableNotFoundError:
        return None


def delta_version(spark, config: Config, name: str) -> int:
    """The latest version of a Spark-written Delta table."""
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, config.table_path(name)).history(1).first()["version"])
