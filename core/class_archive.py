"""A class-data-sharing archive for the Spark driver JVM (JDK CDS), built by ``learnscore jars``.

Every learnscore process that touches Delta starts its own driver, and a cold driver spends most
of its start loading and verifying ~20,000 classes. A dynamic CDS archive made once from a
warmed-up driver maps them instead: on this project's two-core machine a fresh driver's session,
first job and a Delta write and read take 7.7 s instead of 11.4 s (``learnscore bench
driver-start``). The archive is an optimisation only:
a missing file is simply not used, and a JVM that cannot use it (other JDK, other classpath) prints
one warning and starts as before. Its file name carries a key of the JDK, PySpark and Spark jars,
so an upgrade builds a new archive rather than meeting a stale one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from learnscore.core.config import Config

log = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 600


def archive_path(config: Config) -> Path | None:
    """Where the driver archive for this JDK, PySpark and jar set lives (None: no ``java`` found)."""
    java = _java_binary()
    if java is None:
        return None
    jars = sorted(path.name for path in Path(config.spark.jars_dir).glob("*.jar"))
    key = "\n".join([str(java), str(java.stat().st_mtime_ns), version("pyspark"), *jars])
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(config.spark.jars_dir).resolve().parent / "cds" / f"spark-driver-{digest}.jsa"


def java_options(config: Config) -> str:
    """The driver's JVM option that maps the archive, or "" when none has been built."""
    path = archive_path(config) if config.spark.class_archive else None
    return f"-XX:SharedArchiveFile={path}" if path is not None and path.is_file() else ""


def build_archive(config: Config, force: bool = False) -> Path | None:
    """Build the archive in a separate driver (skipped when present); a failure only costs speed."""
    path = archive_path(config)
    if path is None:
        log.warning("no java on PATH or JAVA_HOME: the Spark driver class archive is not built")
        return None
    if path.is_file() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob("spark-driver-*.jsa"):
        stale.unlink()
    partial = path.with_suffix(".partial")
    log.info("building the Spark driver class archive %s (once, about a minute)", path)
    env = {**os.environ, "LEARNSCORE_CDS_OUTPUT": str(partial)}
    env.pop("JAVA_TOOL_OPTIONS", None)  # the archive records the flags it was dumped with
    try:
        result = subprocess.run([sys.executable, "-m", "learnscore.core.class_archive"], env=env,
                                capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        result = None
    if result is None or result.returncode != 0 or not partial.is_file():
        detail = "timed out" if result is None else (result.stdout + result.stderr)[-1500:]
        log.warning("the Spark driver class archive was not built (drivers start without it): %s",
                    detail)
        partial.unlink(missing_ok=True)
        return None
    partial.replace(path)
    return path


def _java_binary() -> Path | None:
    """The ``java`` Spark's launcher runs: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else shutil.which("java")
    return Path(candidate).resolve() if candidate and Path(candidate).exists() else None


def _warm_up(output: Path) -> None:
    """Run what learnscore's drivers run (Delta, Arrow UDFs, a stateful stream), then exit the JVM."""
    from pyspark.sql import functions as F

    from learnscore.core.config import load_config
    from learnscore.core.spark import create_spark_session, spark_conf

    with tempfile.TemporaryDirectory(prefix="learnscore-cds-") as scratch:
        config = load_config(environ={**os.environ, "LEARNSCORE__STATE_DIR": scratch})
        options = spark_conf(config)["spark.driver.extraJavaOptions"]
        # -Xlog:cds off: the dump lists every class it skips (lambda forms, unlinked classes).
        config.spark.extra_conf["spark.driver.extraJavaOptions"] = (
            f"{options} -XX:ArchiveClassesAtExit={output} -Xlog:cds*=off")
        spark = create_spark_session(config, app_name="learnscore-class-archive")
        gateway = spark.sparkContext._gateway.proc  # the driver JVM (spark-class execs java)
        table, target = f"{scratch}/source", f"{scratch}/target"

        def score(batches):
            for batch in batches:
                yield batch.assign(score=batch["id"] * 2.0)

        frame = spark.range(200).withColumn("key", F.col("id") % 7)
        (frame.mapInPandas(score, "id long, key long, score double")  # Arrow, as the UDF
         .write.format("delta").save(table))
        spark.read.format("delta").load(table).groupBy("key").count().collect()
        spark.sql(f"DESCRIBE HISTORY delta.`{table}`").collect()
        (spark.readStream.format("kafka").option("kafka.bootstrap.servers", "localhost:9")
         .option("subscribe", "warm-up").load().selectExpr("CAST(value AS STRING) AS json"))

        def land(batch, batch_id):
            batch.write.format("delta").mode("append").save(target)

        query = (spark.readStream.format("delta").load(table).dropDuplicates(["key"])
                 .writeStream.foreachBatch(land).trigger(availableNow=True)
                 .option("checkpointLocation", f"{scratch}/checkpoint").start())
        query.awaitTermination()
        spark.stop()
        # Closing the gateway's stdin makes the JVM exit normally, which is when it dumps.
        gateway.stdin.close()
        gateway.wait(timeout=BUILD_TIMEOUT_S)


if __name__ == "__main__":
    _warm_up(Path(os.environ["LEARNSCORE_CDS_OUTPUT"]))
