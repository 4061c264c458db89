"""Creating the stream's tables after a crash: a create killed before its first commit must not
block every later start (the SIGKILL test found one that did)."""

from __future__ import annotations

from pathlib import Path

import pytest

from learnscore.core.lake import ensure_spark_tables

pytestmark = pytest.mark.integration


def test_a_create_killed_before_its_commit_does_not_block_the_next_start(spark, config):
    table = "gold.prediction_outcomes"
    # What a SIGKILL during CREATE TABLE left in CI: the log folder, its temp files, no commit.
    log = Path(config.table_path(table)) / "_delta_log"
    (log / "_staged_commits").mkdir(parents=True)
    (log / ".00000000000000000000.json.e737f9ea-0e30-4140-ab96-ed96e4b4e1d3.tmp").touch()
    (log / "..00000000000000000000.json.e737f9ea-0e30-4140-ab96-ed96e4b4e1d3.tmp.crc").touch()
    ensure_spark_tables(spark, config, [table], creator_wait_s=1.0)
    frame = spark.read.format("delta").load(config.table_path(table))
    assert frame.count() == 0 and "abs_error" in frame.columns
    assert (log / "00000000000000000000.json").exists()
