"""Naming the Delta tables in a Spark catalog, so SQL can say ``gold.predictions``."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from learnscore.core.config import Config
from learnscore.core.lake import ensure_deltalake_table, ensure_spark_tables
from learnscore.schemas.tables import TABLES

log = logging.getLogger(__name__)


def register_sql(name: str, location: str) -> list[str]:
    """The statements that name one Delta table in the catalog (idempotent).

    >>> register_sql("gold.predictions", "/lake/gold/predictions")[1]
    "CREATE TABLE IF NOT EXISTS gold.predictions USING DELTA LOCATION '/lake/gold/predictions'"
    """
    layer, _, table = name.partition(".")
    if not (layer.isidentifier() and table.isidentifier()):
        raise ValueError(f"table name {name!r} must be layer.table with plain identifiers")
    quoted = location.replace("\\", "\\\\").replace("'", "\\'")
    return [f"CREATE DATABASE IF NOT EXISTS {layer}",
            f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{quoted}'"]


def register_tables(spark, config: Config, names: Iterable[str] | None = None) -> list[str]:
    """Create missing tables (each by its own writer, with its declared schema) and name them all."""
    names = list(names or TABLES)
    spark_written = [name for name in names if TABLES[name].writer == "spark"]
    ensure_spark_tables(spark, config, spark_written)
    for name in names:
        if TABLES[name].writer == "deltalake":
            ensure_deltalake_table(config, name)
    for name in names:
        for statement in register_sql(name, config.table_path(name)):
            spark.sql(statement)
    log.info("catalog names %d tables: %s", len(names), ", ".join(names))
    return names
