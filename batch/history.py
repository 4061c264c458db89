"""Load a simulated history (``learnscore simulate history``) into the silver tables.

The folder holds ``submissions.jsonl`` and ``outcomes.jsonl`` (one event per line, exactly as on
Kafka), ``truth.parquet`` (what the simulator knew) and ``manifest.json`` (written last: a
folder without it is incomplete). Every line is validated with the one validator
(:func:`learnscore.schemas.events.validate_bytes`) and parsed with the contract's Spark schema; valid
events are MERGEd into ``silver.submissions`` / ``silver.outcomes`` on ``event_id`` (loading the
same folder twice changes nothing), refused lines go to ``silver.quarantine`` with the reason.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from learnscore.core.config import Config
from learnscore.core.lake import ensure_spark_tables
from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, OUTCOME_OBSERVED
from learnscore.schemas.history import (
    DEFAULT_HISTORY_SUBDIR,
    MANIFEST_FILE,
    OUTCOMES_FILE,
    SUBMISSIONS_FILE,
    TRUTH_FILE,
)
from learnscore.schemas.tables import OUTCOMES, QUARANTINE, SUBMISSIONS, Table

log = logging.getLogger(__name__)

_DEFAULT_FILES = {"submissions": SUBMISSIONS_FILE, "outcomes": OUTCOMES_FILE, "truth": TRUTH_FILE}


class HistoryNotFound(FileNotFoundError):
    """No complete simulated history where one was expected."""


def default_history_dir(config: Config) -> Path:
    """Where ``learnscore simulate history`` writes: ``<state_dir>/simulator/history``."""
    return Path(config.state_dir) / DEFAULT_HISTORY_SUBDIR


def read_history_manifest(history_dir: str | Path) -> dict[str, Any]:
    """The manifest of a complete history folder, or :class:`HistoryNotFound` saying what to do."""
    path = Path(history_dir) / MANIFEST_FILE
    if not path.exists():
        raise HistoryNotFound(
            f"no complete simulated history in {history_dir} ({MANIFEST_FILE} missing); create one "
            f'with "learnscore simulate history --learners 20000" or run "learnscore train --initial"')
    return json.loads(path.read_text())


def history_files(history_dir: str | Path) -> dict[str, Path]:
    """Paths of the history's files (submissions, outcomes, truth) from its manifest."""
    manifest = read_history_manifest(history_dir)
    names = {**_DEFAULT_FILES, **manifest.get("files", {})}
    return {kind: Path(history_dir) / name for kind, name in names.items()}


def load_history(spark, config: Config, history_dir: str | Path) -> dict[str, Any]:
    """Validate and MERGE a history folder into the silver tables; return what happened.

    The result has, per kind (``submissions``, ``outcomes``): lines read, valid, inserted,
    quarantined; and ``versions``: the Delta version of each silver table afterwards.
    """
    files = history_files(history_dir)
    ensure_spark_tables(spark, config, [SUBMISSIONS.name, OUTCOMES.name, QUARANTINE.name])
    report: dict[str, Any] = {"history_dir": str(history_dir)}
    for kind, record, table in (("submissions", DIAGNOSTIC_SUBMITTED, SUBMISSIONS),
                                ("outcomes", OUTCOME_OBSERVED, OUTCOMES)):
        path = files[kind]
        if not path.exists():
            raise HistoryNotFound(f"{path} is listed in the manifest but missing; simulate the history again")
        log.info("loading %s from %s", kind, path)
        report[kind] = _load_events(spark, config, path, record, table)
        log.info("%s: %s", kind, report[kind])
    report["versions"] = {name: delta_version(spark, config, name)
                          for name in (SUBMISSIONS.name, OUTCOMES.name)}
    return report


def delta_version(spark, config: Config, name: str) -> int:
    """The latest version of a Spark-written Delta table."""
    from delta.tables import DeltaTable

    return _version(DeltaTable.forPath(spark, config.table_path(name)))


def _load_events(spark, config: Config, path: Path, record, table: Table) -> dict[str, int]:
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from learnscore.schemas.contract import spark_schema

    checked = (spark.read.text(str(path)).where(F.length("value") > 0)
               .withColumn("verdict", _validation_udf(record)(F.col("value"))).cache())
    try:
        counts = {row["ok"]: row["count"] for row in
                  checked.groupBy(F.col("verdict.reason_code").isNull().alias("ok")).count().collect()}
        valid_count, quarantined = counts.get(True, 0), counts.get(False, 0)
        events = (checked.where(F.col("verdict.reason_code").isNull())
                  .select(F.from_json("value", spark_schema(record)).alias("event"))
                  .select("event.*").dropDuplicates(["event_id"]))
        rows = events.select(*[
            (F.col(name) if name in events.columns else F.lit(None)).cast(kind).alias(name)
            for name, kind in table.columns if name != "ingested_at"
        ], F.current_timestamp().alias("ingested_at"))
        target = DeltaTable.forPath(spark, config.table_path(table.name))
        before = _version(target)
        (target.alias("t").merge(rows.alias("s"), "t.event_id = s.event_id")
         .whenNotMatchedInsertAll().execute())
        inserted = _rows_inserted(target) if _version(target) != before else 0
        if quarantined:
            refused = checked.where(F.col("verdict.reason_code").isNotNull())
            _quarantine(spark, config, refused, source=f"history:{path.name}")
            log.warning("%d line(s) of %s refused and quarantined; the first: %s", quarantined, path,
                        refused.select("verdict.reason").first()["reason"])
        return {"read": valid_count + quarantined, "valid": valid_count, "inserted": inserted,
                "quarantined": quarantined}
    finally:
        checked.unpersist()


def _validation_udf(record):
    """A pandas UDF: the contract's verdict (reason code and message, null when valid) per line."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("reason_code string, reason string")
    def verdicts(lines: pd.Series) -> pd.DataFrame:
        from learnscore.schemas.events import validate_bytes

        results = [validate_bytes(record, line.encode("utf-8")) for line in lines]
        return pd.DataFrame({"reason_code": [r.reason_code for r in results],
                             "reason": [r.reason for r in results]})

    return verdicts


def _quarantine(spark, config: Config, refused, source: str) -> None:
    """MERGE refused lines into silver.quarantine on (source, raw bytes): a reload adds nothing."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    rows = refused.select(
        F.lit(source).alias("source_topic"), F.lit(None).cast("int").alias("kafka_partition"),
        F.lit(None).cast("bigint").alias("kafka_offset"),
        F.lit(None).cast("timestamp").alias("kafka_timestamp"),
        F.lit(None).cast("binary").alias("raw_key"), F.col("value").cast("binary").alias("raw_value"),
        F.get_json_object("value", "$.event_id").alias("event_id"),
        F.col("verdict.reason_code").alias("reason_code"), F.col("verdict.reason").alias("reason"),
        F.current_timestamp().alias("quarantined_at"), F.lit(None).cast("bigint").alias("batch_id"),
    ).dropDuplicates(["raw_value"])
    target = DeltaTable.forPath(spark, config.table_path(QUARANTINE.name))
    (target.alias("t").merge(rows.alias("s"),
                             "t.source_topic = s.source_topic AND t.raw_value = s.raw_value")
     .whenNotMatchedInsertAll().execute())


def _version(target) -> int:
    return int(target.history(1).first()["version"])


def _rows_inserted(target) -> int:
    metrics = target.history(1).first()["operationMetrics"] or {}
    return int(metrics.get("numTargetRowsInserted", 0))


def read_truth(history_dir: str | Path):
    """The simulator's truth per submission (pandas), or None when the folder has none."""
    try:
        path = history_files(history_dir)["truth"]
    except HistoryNotFound:
        return None
    if not path.exists():
        return None
    return pd.read_parquet(path, columns=["event_id", "true_ability", "oracle_score", "oracle_level"])
