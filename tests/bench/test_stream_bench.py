"""The stream benchmark's own parts that can rot unseen: its filler rows must keep fitting the tables."""

from __future__ import annotations

import pytest

from learnscore.bench.stream import fill_tables

pytestmark = pytest.mark.integration


def test_the_cost_run_fills_silver_and_gold_with_rows_their_schemas_accept(spark, config):
    # Gold gained columns (the effort ones) once and the 10M-row run failed on them an hour in.
    fill_tables(spark, config, 50)
    for table in ("silver.submissions", "gold.predictions"):
        assert spark.read.format("delta").load(config.table_path(table)).count() == 50, table
