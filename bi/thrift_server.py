"""``learnscore bi``: the Spark Thrift (JDBC/ODBC) server for BI users.

What a BI user can do, and why (these are learners' records, often children's):

- **Sign in** as ``bi.user`` with ``LEARNSCORE_BI_PASSWORD`` (HiveServer2 ``CUSTOM``
  authentication, ``io.learnscore.bi.PasswordAuthenticator`` from ``jvm/bi-guard``). The server
  keeps a PBKDF2 hash of the password in ``<state_dir>/bi/credentials`` (mode 0600), never the
  password, on no command line and in no JVM property.
- **See the ``bi`` schema only**: views over the BI-facing tables (:func:`bi_tables`: gold with
  pseudonymised learner keys and the small-cell-suppressed daily summary, and the operational
  tables that hold no learner at all). Bronze, silver and quarantine (raw learner ids) are not
  in this server's catalog.
- **Read, never write**: ``io.learnscore.bi.BiGuard`` (a Spark SQL extension) checks every
  statement once the views exist; it refuses any read of a folder that is not a BI table's (a
  silver table, or a path such as ``delta.`/lake/silver/...``` or ``text.`/...```), every
  command but SHOW / DESCRIBE / USE / reading a SET, and ``reflect``.

The pipeline's own jobs never go through this server: they read and write the Delta tables
directly, with full access. The metastore (Derby) lives under ``<state_dir>/bi``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import signal
import threading
from pathlib import Path

from learnscore.core.config import Config, Secrets
from learnscore.schemas.tables import TABLES, Table

log = logging.getLogger(__name__)

SCHEMA = "bi"
AUTHENTICATOR = "io.learnscore.bi.PasswordAuthenticator"
GUARD = "io.learnscore.bi.BiGuard"
PBKDF2_ITERATIONS = 200_000
_LEARNER_COLUMNS = {"learner_id", "raw_key", "raw_value"}


def bi_tables() -> list[Table]:
    """The tables BI sees (as ``bi.<table>`` views): those declared BI-facing (pseudonymised), and
    the operational ones that hold nothing about a learner.

    >>> [t.name for t in bi_tables()][:3]
    ['gold.predictions', 'gold.prediction_outcomes', 'gold.shadow_predictions']
    >>> any(t.name.startswith(("bronze.", "silver.")) for t in bi_tables())
    False
    """
    return [table for table in TABLES.values()
            if table.bi_facing or (table.name.startswith("ops.")
                                   and not _LEARNER_COLUMNS & set(table.column_names))]


def view_sql(table: Table, location: str) -> str:
    """The statement that (re)defines ``bi.<table>`` over the Delta table at ``location``.

    >>> from learnscore.schemas.tables import TABLES
    >>> view_sql(TABLES["gold.daily_summary"], "/lake/gold/daily_summary")[:60]
    'CREATE OR REPLACE VIEW bi.daily_summary AS SELECT day, subje'
    """
    quoted = location.replace("\\", "\\\\").replace("`", "``")
    columns = ", ".join(table.column_names)
    return f"CREATE OR REPLACE VIEW {SCHEMA}.{table.name.partition('.')[2]} AS SELECT {columns} FROM delta.`{quoted}`"


def write_credentials(config: Config, path: Path) -> None:
    """``user:iterations:salt:pbkdf2-sha256`` of the BI user, mode 0600, replaced atomically."""
    password = Secrets(config).bi_password.get_secret_value()
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{config.bi.user}:{PBKDF2_ITERATIONS}:{salt.hex()}:{digest.hex()}\n")
    partial.replace(path)


def thrift_config(config: Config, port: int | None = None) -> Config:
    """``config`` with the Spark settings of a Hive-catalog session that serves Thrift on ``port``,
    authenticated and guarded."""
    from learnscore.core.jars import bi_guard_dir, jar_files
    from learnscore.core.spark import spark_conf

    home = config.state_dir / "bi"
    base = spark_conf(config)
    classpath = [*jar_files(config.spark.jars_dir, "spark"), *jar_files(bi_guard_dir(config), "BI guard")]
    hive = {
        "server2.thrift.port": str(port or config.bi.thrift_port),
        "server2.thrift.bind.host": config.bi.thrift_host,
        "server2.authentication": "CUSTOM",
        "server2.custom.authentication.class": AUTHENTICATOR,
        "server2.enable.doAs": "false",
    }
    extra = {
        **config.spark.extra_conf,
        # JDBC sessions build their catalog on the server's own threads, which see only the
        # JVM class path: the Delta jars and the guard must be there, not only in spark.jars.
        "spark.driver.extraClassPath": ":".join(str(path) for path in classpath),
        "spark.sql.extensions": f"{base['spark.sql.extensions']},{GUARD}",
        # The password provider is made by HiveServer2 from a fresh HiveConf, which reads JVM
        # system properties: its class name and the credentials file travel that way.
        "spark.driver.extraJavaOptions": (
            f"{base['spark.driver.extraJavaOptions']} -Dlearnscore.bi.credentials={home / 'credentials'}"
            f" -Dhive.server2.authentication=CUSTOM -Dhive.server2.custom.authentication.class={AUTHENTICATOR}"),
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true",
        "spark.hadoop.hive.metastore.schema.verification": "false",
        "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
        **{f"spark.hive.{key}": value for key, value in hive.items()},
        **{f"spark.hadoop.hive.{key}": value for key, value in hive.items()},
    }
    return config.model_copy(update={"spark": config.spark.model_copy(update={
        "extra_conf": extra, "driver_memory": config.bi.driver_memory})})


def define_views(spark, config: Config) -> list[str]:
    """Create missing BI-facing tables (each by its own writer) and (re)define the ``bi`` views.

    A metastore of an older release also names gold/silver tables: they are left alone (dropping
    could touch data), and the guard refuses reading them all the same."""
    from learnscore.core.lake import ensure_deltalake_table, ensure_spark_tables

    tables = bi_tables()
    ensure_spark_tables(spark, config, [t.name for t in tables if t.writer == "spark"])
    for table in tables:
        if table.writer == "deltalake":
            ensure_deltalake_table(config, table.name)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {SCHEMA}")
    for table in tables:
        spark.sql(view_sql(table, config.table_path(table.name)))
    names = [f"{SCHEMA}.{t.name.partition('.')[2]}" for t in tables]
    log.info("BI schema: %d views: %s", len(names), ", ".join(names))
    return names


def start_thrift_server(spark, config: Config) -> None:
    """Lock the guard to the BI tables' folders, then start HiveThriftServer2 inside ``spark``'s
    JVM (the pyspark wheel ships it)."""
    jvm = spark.sparkContext._jvm
    jvm.io.learnscore.bi.BiGuard.lock("\n".join(config.table_path(t.name) for t in bi_tables()))
    jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithContext(
        spark._jsparkSession.sqlContext())


def run_thrift_server(config: Config, port: int | None = None) -> None:
    """Define the views, start the server, serve until SIGINT/SIGTERM."""
    from learnscore.core.spark import create_spark_session

    served = thrift_config(config, port)
    write_credentials(config, config.state_dir / "bi" / "credentials")
    spark = create_spark_session(served, app_name="learnscore-bi")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        define_views(spark, served)
        start_thrift_server(spark, served)
        port = port or config.bi.thrift_port
        log.info("Thrift (JDBC) server on jdbc:hive2://%s:%d/%s as user %r (password: %s) — e.g. beeline "
                 "-u jdbc:hive2://%s:%d/%s -n %s -w <password file> -e 'SELECT * FROM daily_summary'",
                 config.bi.thrift_host, port, SCHEMA, config.bi.user, Secrets.BI_PASSWORD,
                 config.bi.thrift_host, port, SCHEMA, config.bi.user)
        stop.wait()
    finally:
        log.info("stopping the Thrift server")
        spark.stop()
