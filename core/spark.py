"""The one SparkSession factory. Entry points call it; library code receives the session."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from xml.sax.saxutils import escape

from learnscore.core.class_archive import java_options as driver_archive_option
from learnscore.core.config import Config
from learnscore.core.jars import jar_files
from learnscore.core.tracking import apply_pickle_setting, pickle_setting

log = logging.getLogger(__name__)


def spark_conf(config: Config) -> dict[str, str]:
    """Every Spark setting learnscore uses, from config (also used for spark-submit style launches)."""
    jars = ",".join(str(path) for path in jar_files(config.spark.jars_dir, "spark"))
    conf = {
        "spark.master": config.spark.master,
        "spark.app.name": config.spark.app_name,
        "spark.driver.memory": config.spark.driver_memory,
        # Jars resolved by Maven (jvm/spark-jars.xml); spark.jars ships them to executors too.
        "spark.jars": jars,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(config.spark.shuffle_partitions),
        "spark.default.parallelism": str(config.spark.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Rows per Arrow batch to a Python worker: at most 1,000 events of the 256 KiB the contract
        # allows (256 MiB), so one batch of oversized messages cannot exhaust a worker.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "1000",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.warehouse.dir": str(config.state_dir / "spark-warehouse"),
        # A long-lived driver compiles Spark's generated code for every query it plans; at the
        # JDK's default 240 MB the code cache filled in a 40-minute test run and the JVM then
        # failed to link method handles (InternalError in the planner).
        # The class archive (core/class_archive.py), when built, takes ~4 s off a fresh driver's start.
        "spark.driver.extraJavaOptions": " ".join(filter(None, [
            f"-Dderby.system.home={config.state_dir / 'derby'}", "-XX:ReservedCodeCacheSize=1g",
            "-XX:TieredStopAtLevel=1" if config.spark.driver_jit == "c1" else "",
            driver_archive_option(config)])),
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        "spark.sql.streaming.stopGracefullyOnShutdown": "true",
        # The stream's deduplication and pairing state: RocksDB keeps it on disk (millions of
        # keys over the dedupe horizon), changelogs make each commit small. The checkpoint pins
        # the provider: it is set for every session, before any query first runs.
        "spark.sql.streaming.stateStore.providerClass":
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # The scorer runs several queries in one driver: each gets its own pool (streaming/job.py),
        # weighted by spark.scheduler_pools through an allocation file.
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": str(fair_pools_file(config)),
        # Delta: small local tables, no need for the optimiser's background work.
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.databricks.delta.autoCompact.enabled": "false",
        # The stream compacts its tables itself (streaming.compact_after_writes); files of 32 MB
        # and more are left alone, so each compaction rewrites the recent small files only.
        "spark.databricks.delta.optimize.minFileSize": str(32 * 1024 * 1024),
        "spark.databricks.delta.retentionDurationCheck.enabled": "true",
        "spark.python.worker.reuse": "true",
        # Executors on other machines do not inherit the driver's environment: the pickle
        # refusal must travel with the application.
        "spark.executorEnv.MLFLOW_ALLOW_PICKLE_DESERIALIZATION": pickle_setting(config),
        # Source options whose values Spark blanks out in plans and errors: the Kafka source's
        # "kafka.sasl.jaas.config" holds the SASL password, and the default regex only covers "url".
        "spark.sql.redaction.options.regex": "(?i)url|jaas|password|secret|token",
    }
    conf.update(config.spark.extra_conf)
    return conf


def fair_pools_file(config: Config) -> Path:
    """Write the FAIR scheduler's allocation file (``spark.scheduler_pools``) under the state dir."""
    pools = "".join(f'  <pool name="{escape(name)}"><schedulingMode>FIFO</schedulingMode>'
                    f"<weight>{int(weight)}</weight><minShare>0</minShare></pool>\n"
                    for name, weight in sorted(config.spark.scheduler_pools.items()))
    path = Path(config.state_dir) / "spark" / "fairscheduler.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f'<?xml version="1.0"?>\n<allocations>\n{pools}</allocations>\n'
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path.resolve()


def create_spark_session(config: Config, app_name: str | None = None):
    """Build (or return the running) SparkSession for ``config``.

    Imported lazily so that modules which never touch Spark do not pay for the JVM.
    """
    from pyspark.sql import SparkSession

    # Every Python process we start refuses pickle-based model formats (skops only).
    apply_pickle_setting(config)
    # Python UDF workers must run this interpreter (the venv), not whatever python3 is on PATH;
    # PySpark reads it from the driver's environment when it ships a UDF.
    # On a cluster whose executors keep Python elsewhere, set spark.pyspark.python (extra_conf)
    # or PYSPARK_PYTHON to their interpreter.
    executor_python = config.spark.extra_conf.get("spark.pyspark.python")
    if executor_python:
        os.environ["PYSPARK_PYTHON"] = executor_python
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in spark_conf(config).items():
        builder = builder.config(key, value)
    if app_name:
        builder = builder.appName(app_name)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    log.info("spark session on %s (Spark %s)", config.spark.master, session.version)
    return session
