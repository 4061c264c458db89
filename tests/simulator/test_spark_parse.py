"""Every simulated valid event parses in Spark with the contract's schema, with no nulls."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest

from learnscore.schemas.contract import parse_timestamp, spark_schema
from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, OUTCOME_OBSERVED
from learnscore.simulator.generator import Simulator
from learnscore.simulator.history import HistoryOptions, write_history
from learnscore.simulator.scenarios import SCENARIOS, parse_scenario

pytestmark = pytest.mark.integration
START = datetime(2026, 2, 2, tzinfo=timezone.utc)


def _leaf_nulls(spark_frame, record):
    """SQL that counts, per leaf field (responses exploded), the rows where it is null."""
    from pyspark.sql import functions as F

    top = [f.name for f in record.fields if f.required]
    counts = [F.sum(F.col(f"e.{name}").isNull().cast("int")).alias(name) for name in top]
    return spark_frame.select(*counts).first().asDict()


@pytest.fixture(scope="module")
def events():
    scenarios = tuple(parse_scenario(f"{name}@{100 * (i + 1)}") for i, name in enumerate(SCENARIOS))
    return Simulator(seed=8, start=START, interval_s=0.5, scenarios=scenarios).take(600)


def test_simulated_submissions_parse_without_nulls(spark, events):
    from pyspark.sql import functions as F

    raw = [(orjson.dumps(e).decode(),) for e in events.submissions]
    parsed = spark.createDataFrame(raw, "raw string").select(
        F.from_json("raw", spark_schema(DIAGNOSTIC_SUBMITTED)).alias("e")).cache()
    assert set(_leaf_nulls(parsed, DIAGNOSTIC_SUBMITTED).values()) == {0}
    responses = parsed.select(F.explode("e.responses").alias("r")).select("r.*")
    nulls = responses.select([F.sum(F.col(c).isNull().cast("int")).alias(c) for c in responses.columns]).first()
    assert set(nulls.asDict().values()) == {0}
    totals = responses.agg(F.count("*").alias("n"), F.sum("response_time_ms").alias("time"),
                           F.sum(F.col("correct").cast("int")).alias("correct")).first()
    flat = [r for e in events.submissions for r in e["responses"]]
    assert totals["n"] == len(flat)
    assert totals["time"] == sum(r["response_time_ms"] for r in flat)
    assert totals["correct"] == sum(r["correct"] for r in flat)
    micros = parsed.select(F.unix_micros("e.event_time").alias("t")).collect()
    assert [row["t"] for row in micros] == [int(parse_timestamp(e["event_time"]).timestamp() * 1_000_000)
                                            for e in events.submissions]
    parsed.unpersist()


def test_simulated_outcomes_parse_without_nulls(spark, events):
    from pyspark.sql import functions as F

    raw = [(orjson.dumps(e).decode(),) for e in events.outcomes]
    parsed = spark.createDataFrame(raw, "raw string").select(
        F.from_json("raw", spark_schema(OUTCOME_OBSERVED)).alias("e"))
    assert set(_leaf_nulls(parsed, OUTCOME_OBSERVED).values()) == {0}
    scores = [row["s"] for row in parsed.select(F.col("e.observed_progress_score").alias("s")).collect()]
    assert scores == [e["observed_progress_score"] for e in events.outcomes]


def test_history_files_read_with_the_contract_schema(spark, tmp_path):
    from pyspark.sql import functions as F

    write_history(tmp_path, HistoryOptions(learners=400, days=5, outcome_delay_s=86400, seed=2,
                                           end=datetime(2026, 6, 1, tzinfo=timezone.utc)))
    submissions = spark.read.schema(spark_schema(DIAGNOSTIC_SUBMITTED)).json(str(tmp_path / "submissions.jsonl"))
    outcomes = spark.read.schema(spark_schema(OUTCOME_OBSERVED)).json(str(tmp_path / "outcomes.jsonl"))
    assert submissions.count() == outcomes.count() == 400
    joined = submissions.join(outcomes.select(F.col("submission_event_id").alias("event_id"),
                                              "observed_progress_score"), "event_id")
    assert joined.count() == 400
    assert submissions.where(F.col("event_time").isNull() | F.col("responses").isNull()).count() == 0
