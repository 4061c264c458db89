"""``learnscore bi``: the Spark Thrift (JDBC/ODBC) server over the catalog of Delta tables.

The metastore (Derby) and warehouse live under ``<state_dir>/bi``; the tables stay where the
stream writes them (``lake.root``), the catalog only names them.
"""

from __future__ import annotations

import logging
import signal
import threading

from learnscore.core.config import Config

log = logging.getLogger(__name__)


def thrift_config(config: Config, port: int | None = None) -> Config:
    """``config`` with the Spark settings of a Hive-catalog session that serves Thrift on ``port``."""
    from learnscore.core.jars import jar_files

    home = config.state_dir / "bi"
    extra = {
        **config.spark.extra_conf,
        # JDBC sessions build their catalog on the server's own threads, which see only the
        # JVM class path: the Delta jars must be there, not only in spark.jars.
        "spark.driver.extraClassPath": ":".join(str(path) for path in jar_files(config.spark.jars_dir, "spark")),
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true",
        "spark.hadoop.hive.metastore.schema.verification": "false",
        "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
        "spark.hive.server2.thrift.port": str(port or config.bi.thrift_port),
        "spark.hive.server2.thrift.bind.host": config.bi.thrift_host,
        "spark.hadoop.hive.server2.thrift.port": str(port or config.bi.thrift_port),
        "spark.hadoop.hive.server2.thrift.bind.host": config.bi.thrift_host,
    }
    return config.model_copy(update={"spark": config.spark.model_copy(update={
        "extra_conf": extra, "driver_memory": config.bi.driver_memory})})


def start_thrift_server(spark) -> None:
    """Start HiveThriftServer2 inside ``spark``'s JVM (the pyspark wheel ships it)."""
    jvm = spark.sparkContext._jvm
    jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithContext(
        spark._jsparkSession.sqlContext())


def run_thrift_server(config: Config, port: int | None = None) -> None:
    """Register the tables, start the server, serve until SIGINT/SIGTERM."""
    from learnscore.bi.catalog import register_tables
    from learnscore.core.spark import create_spark_session

    served = thrift_config(config, port)
    (config.state_dir / "bi").mkdir(parents=True, exist_ok=True)
    spark = create_spark_session(served, app_name="learnscore-bi")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        register_tables(spark, served)
        start_thrift_server(spark)
        port = port or config.bi.thrift_port
        log.info("Thrift (JDBC) server on jdbc:hive2://%s:%d/ — e.g. beeline -u jdbc:hive2://%s:%d/ "
                 "-e 'SELECT * FROM gold.daily_summary'", config.bi.thrift_host, port,
                 config.bi.thrift_host, port)
        stop.wait()
    finally:
        log.info("stopping the Thrift server")
        spark.stop()
