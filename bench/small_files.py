"""Benchmark: the stream's duplicate probe over a table made of more and more small files
(``learnscore bench files`` → ``bench/results/small_files.json``).

Every micro-batch adds 1–4 files to each table it writes, and each batch probes
``silver.submissions``, ``silver.outcomes`` and ``gold.predictions`` in full. This measures one
such probe (:func:`learnscore.streaming.ingest.delivery_verdicts`, the batch's keys against the table) on
the same rows held in 40 to 4,000 files, then after a compaction: why the stream compacts its
tables (``streaming.compact_after_writes``). Needs Spark only (no broker, no MLflow).
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from learnscore.bench.stream import machine, write_result
from learnscore.core.config import Config

log = logging.getLogger(__name__)

FILE_COUNTS = (40, 400, 2000, 4000)


def _table(spark, path: str, rows: int, files: int) -> None:
    from pyspark.sql import functions as F

    (spark.range(rows).select(F.expr("uuid()").alias("event_id"),
                              F.lit("diagnostic.submissions").alias("kafka_topic"),
                              (F.col("id") % 2).cast("int").alias("kafka_partition"),
                              F.col("id").alias("kafka_offset"),
                              F.repeat(F.lit("x"), 200).alias("payload"))
     .repartition(files).write.format("delta").mode("overwrite").save(path))


def _probe_seconds(spark, path: str, keys: int, repeats: int) -> float:
    """Median wall time of one delivery check of ``keys`` new events against the table."""
    from pyspark.sql import functions as F

    from learnscore.streaming.ingest import delivery_verdicts

    times = []
    for attempt in range(repeats + 1):  # the first one warms the JVM and caches: not counted
        events = (spark.createDataFrame([(str(uuid.uuid4()), i) for i in range(keys)],
                                        "event_id string, kafka_offset long")
                  .select("event_id", F.lit("diagnostic.submissions").alias("kafka_topic"),
                          F.lit(0).alias("kafka_partition"), "kafka_offset"))
        started = time.monotonic()
        delivery_verdicts(events, spark.read.format("delta").load(path)).count()
        if attempt:
            times.append(time.monotonic() - started)
    return round(statistics.median(times), 2)


def run_small_files_benchmark(config: Config, *, rows: int = 200_000, keys: int = 3000,
                              repeats: int = 3, output: str | Path = "bench/results/small_files.json",
                              ) -> dict[str, Any]:
    from delta.tables import DeltaTable

    from learnscore.core.spark import create_spark_session

    spark = create_spark_session(config, app_name="learnscore-bench-files")
    result: dict[str, Any] = {"benchmark": "small_files", "started_at": datetime.now(timezone.utc).isoformat(),
                              "machine": machine(), "rows": rows, "keys_probed": keys,
                              "probe": "learnscore.streaming.ingest.delivery_verdicts (the stream's duplicate check)",
                              "probe_seconds_by_files": {}}
    home = Path(tempfile.mkdtemp(prefix="learnscore-bench-files-"))
    try:
        path = str(home / "table")
        for files in FILE_COUNTS:
            _table(spark, path, rows, files)
            seconds = _probe_seconds(spark, path, keys, repeats)
            result["probe_seconds_by_files"][str(files)] = seconds
            log.info("bench files: %d rows in %d files: probe %.2f s", rows, files, seconds)
        started = time.monotonic()
        DeltaTable.forPath(spark, path).optimize().executeCompaction()
        result["compaction_seconds"] = round(time.monotonic() - started, 1)
        result["files_after_compaction"] = len(spark.read.format("delta").load(path).inputFiles())
        result["probe_seconds_after_compaction"] = _probe_seconds(spark, path, keys, repeats)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    result["finished_at"] = datetime.now(timezone.utc).isoformat()
    result["command"] = "learnscore bench files"
    write_result(result, output)
    return result
