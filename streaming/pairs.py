"""The pairs query: each published score next to its observed outcome, whichever came first.

A stream-stream join in Spark's state store: the first ``ScoreIssued`` of each submission and
the first valid ``OutcomeObserved`` of it wait for each other up to ``streaming.outcome_horizon``;
when both are there the pair is written to ``gold.prediction_outcomes`` (exactly once, with the
version that scored the published score — the same as gold's) and fed to the concept drift
detectors. No table is read, so a batch costs the same however many predictions wait.

Challengers' scores (``streaming.shadow-scores``) pair with the same outcomes into
``gold.shadow_prediction_outcomes`` (with their alias): production and challenger measured on
the same learners. The concept drift detectors see production's pairs only.

An outcome whose submission was never scored within the horizon (an unknown submission, or one
still waiting for a model) never pairs; it stays in ``silver.outcomes``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from learnscore.core.config import Config
from learnscore.schemas.events import OUTCOME_OBSERVED
from learnscore.streaming.decode import event_key_column
from learnscore.streaming.gold import is_production, parsed_scores, readable
from learnscore.streaming.ingest import kafka_stream
from learnscore.streaming.runtime import QueryRuntime, ScorerTopics, run_hook, timed
from learnscore.streaming.score import JSON_TIMESTAMP_FORMAT, pseudonym_column

log = logging.getLogger(__name__)

QUERY = "pairs"
PairsHook = Callable[[int, DataFrame], None]


def pairs_stream(spark: SparkSession, config: Config, names: ScorerTopics) -> DataFrame:
    def source(topics: str) -> DataFrame:
        return kafka_stream(spark, config, topics)

    horizon = config.streaming.outcome_horizon
    scores = (parsed_scores(source(f"{names.scores},{names.shadow}")).where(readable())
              .select(F.col("s.submission_event_id").alias("sid"),
                      F.when(is_production(), F.lit(None)).otherwise(F.col("s.model_alias")).alias("model_alias"),
                      F.col("s.learner_id").alias("learner_id"),
                      F.col("s.subject").alias("subject"), F.col("s.grade_level").alias("grade_level"),
                      F.col("s.submission_time").alias("event_time"), F.col("s.model_version").alias("model_version"),
                      F.col("s.progress_score").alias("progress_score"),
                      F.col("s.comprehension_level").alias("comprehension_level"),
                      F.current_timestamp().alias("s_seen_at"))
              .withWatermark("s_seen_at", horizon)
              .dropDuplicatesWithinWatermark(["sid", "model_alias"]))
    key = event_key_column(config.domain.contract(), {names.outcomes: ("OutcomeObserved", "submission_event_id")})
    outcomes = (source(names.outcomes).withColumn("o_key", key).where(F.col("o_key").isNotNull())
                .select(F.from_json(F.col("raw_value").cast("string"), OUTCOME_OBSERVED.spark_schema(),
                                    {"timestampFormat": JSON_TIMESTAMP_FORMAT}).alias("o"),
                        F.current_timestamp().alias("o_seen_at"))
                .select(F.col("o.submission_event_id").alias("oid"),
                        F.col("o.observed_progress_score").alias("observed_progress_score"),
                        F.col("o.observed_comprehension_level").alias("observed_comprehension_level"),
                        F.col("o.event_time").alias("outcome_time"), "o_seen_at")
                .withWatermark("o_seen_at", horizon)
                .dropDuplicatesWithinWatermark(["oid"]))
    return scores.join(outcomes, F.expr(
        f"sid = oid AND o_seen_at >= s_seen_at - interval {horizon} AND o_seen_at <= s_seen_at + interval {horizon}"))


def pair_rows(joined: DataFrame, pseudonym_key: str) -> DataFrame:
    """``gold.prediction_outcomes`` rows from joined scores and outcomes (``model_alias``: null
    for production's, the challenger's alias for ``gold.shadow_prediction_outcomes``)."""
    return joined.select(
        F.col("sid").alias("event_id"), pseudonym_column(F.col("learner_id"), pseudonym_key).alias("learner_key"),
        "subject", "grade_level", "event_time", "model_version", "progress_score", "comprehension_level",
        "observed_progress_score", "observed_comprehension_level",
        F.abs(F.col("progress_score") - F.col("observed_progress_score")).alias("abs_error"),
        (F.col("comprehension_level") == F.col("observed_comprehension_level")).alias("level_correct"),
        "outcome_time", F.current_timestamp().alias("joined_at"), "model_alias")


def make_pairs_handler(spark: SparkSession, config: Config, runtime: QueryRuntime, pseudonym_key: str,
                       hooks: Sequence[PairsHook] = ()) -> Callable[[DataFrame, int], None]:

    def handle(batch_df: DataFrame, batch_id: int) -> None:
        with runtime.batch(batch_id) as (writer, report, _attempt):
            joined = pair_rows(batch_df, pseudonym_key).localCheckpoint(eager=True)
            rows, shadow = joined.where(F.col("model_alias").isNull()), joined.where(F.col("model_alias").isNotNull())
            with timed(report, "count"):
                counts = {r.production: r["count"] for r in
                          joined.groupBy(F.col("model_alias").isNull().alias("production")).count().collect()}
                report.outcomes = counts.get(True, 0)
                report.rows_read = sum(counts.values())
            if counts.get(False):
                with timed(report, "gold.shadow_prediction_outcomes"):
                    writer.append(shadow, "gold.shadow_prediction_outcomes")
            if report.outcomes:
                with timed(report, "gold.prediction_outcomes"):
                    writer.append(rows, "gold.prediction_outcomes")
                for hook in hooks:
                    run_hook(hook, writer.batch_id, rows, report, QUERY)
            runtime.write_progress(spark, writer, report)

    return handle


__all__ = ["QUERY", "make_pairs_handler", "pairs_stream"]
