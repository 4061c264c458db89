"""The gold query: ``gold.predictions`` from the scores that were published, and the drift watch.

It also lands the challengers' scores (``streaming.shadow-scores``, :mod:`streaming.shadow`) in
``gold.shadow_predictions``, one row per submission and alias; the drift watch sees production only.

Reads ``diagnostic.scores``; keeps the first ``ScoreIssued`` of each submission within the
dedupe horizon (state store; later ones are the same score published again by a replay, or a
rescore after the alias moved: the first published counts), writes it to ``gold.predictions``
exactly once, and feeds the predicted score and the submission's signals to the drift
detectors. What gold says about a submission is therefore always what the application got.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from learnscore.core.config import Config
from learnscore.registry.access import PRODUCTION
from learnscore.schemas.domain import LEVELS
from learnscore.schemas.events import SCORE_ISSUED
from learnscore.schemas.tables import PREDICTIONS
from learnscore.streaming.ingest import coordinate_key, kafka_stream
from learnscore.streaming.quarantine import INVALID_SCORE, quarantine_rows, reason_for
from learnscore.streaming.runtime import QueryRuntime, ScorerTopics, run_hook, timed
from learnscore.streaming.score import JSON_TIMESTAMP_FORMAT, pseudonym_column

log = logging.getLogger(__name__)

QUERY = "gold"
TABLES = ("gold.predictions", "gold.shadow_predictions", "silver.quarantine")
REQUIRED = ("event_id", "submission_event_id", "learner_id", "progress_score", "comprehension_level",
            "model_name", "model_version", "scored_at")
# (batch_id, gold rows of the batch with their signals): the drift hook's signature
PredictionsHook = Callable[[int, DataFrame], None]


def parsed_scores(rows: DataFrame) -> DataFrame:
    """Kafka rows of the scores topic with the ``ScoreIssued`` read into ``s`` (null fields when it is not one)."""
    return rows.withColumn("s", F.from_json(F.col("raw_value").cast("string"), SCORE_ISSUED.spark_schema(),
                                            {"timestampFormat": JSON_TIMESTAMP_FORMAT}))


def readable() -> F.Column:
    """The score has every field gold needs."""
    ok = F.lit(True)
    for name in REQUIRED:
        ok = ok & F.col(f"s.{name}").isNotNull()
    return ok


def score_key() -> F.Column:
    """What makes a score the same score again: the submission, per alias (production's scores
    and each challenger's are deduplicated apart)."""
    alias = F.coalesce(F.col("s.model_alias"), F.lit(PRODUCTION))
    return F.concat_ws("/", alias, F.col("s.submission_event_id"))


def is_production() -> F.Column:
    """A score from the production scoring query (``ScoreIssued`` without an alias is one too)."""
    return F.coalesce(F.col("s.model_alias"), F.lit(PRODUCTION)) == PRODUCTION


def gold_stream(spark: SparkSession, config: Config, names: ScorerTopics) -> DataFrame:
    scores = parsed_scores(kafka_stream(spark, config, f"{names.scores},{names.shadow}"))
    key = F.when(readable(), score_key()).otherwise(coordinate_key())
    return (scores.withColumn("_key", key).withColumn("_seen_at", F.current_timestamp())
            .withWatermark("_seen_at", config.streaming.dedupe_horizon)
            .dropDuplicatesWithinWatermark(["_key"])
            .drop("_key", "_seen_at"))


def gold_rows(scores: DataFrame, batch_id: int, pseudonym_key: str, with_alias: bool = False) -> DataFrame:
    """``gold.predictions`` rows (plus the signals) from readable parsed scores; with the alias
    that scored them for ``gold.shadow_predictions``."""
    probability = {f"p_{level}": F.col("s.probabilities").getItem(level) for level in LEVELS}
    return scores.select(
        F.col("s.submission_event_id").alias("event_id"),
        pseudonym_column(F.col("s.learner_id"), pseudonym_key).alias("learner_key"),
        F.col("s.assessment_id").alias("assessment_id"), F.col("s.subject").alias("subject"),
        F.col("s.grade_level").alias("grade_level"), F.col("s.submission_time").alias("event_time"),
        F.col("s.progress_score").alias("progress_score"), F.col("s.comprehension_level").alias("comprehension_level"),
        *[value.alias(name) for name, value in probability.items()],
        F.col("s.model_name").alias("model_name"), F.col("s.model_version").alias("model_version"),
        F.col("s.scored_at").alias("scored_at"),
        ((F.unix_micros("s.scored_at") - F.unix_micros("s.submission_time")) / 1e6).alias("latency_s"),
        F.lit(batch_id).cast("bigint").alias("batch_id"), F.col("s.event_id").alias("score_event_id"),
        F.col("kafka_timestamp").alias("published_at"), F.current_timestamp().alias("landed_at"),
        F.col("s.signals").getItem("rapid_guess_share").alias("rapid_guess_share"),
        F.col("s.low_effort").alias("low_effort"), F.col("s.effort_moderated_score").alias("effort_moderated_score"),
        F.col("s.signals").getItem("accuracy").alias("accuracy"),
        F.col("s.signals").getItem("mean_log_time").alias("mean_log_time"),
        F.col("s.signals").getItem("ability").alias("ability"),
        *([F.col("s.model_alias").alias("model_alias")] if with_alias else []),
    )


def make_gold_handler(spark: SparkSession, config: Config, runtime: QueryRuntime, pseudonym_key: str,
                      hooks: Sequence[PredictionsHook] = ()) -> Callable[[DataFrame, int], None]:
    def handle(batch_df: DataFrame, batch_id: int) -> None:
        with runtime.batch(batch_id) as (writer, report, attempt):
            batch = batch_df.persist()
            try:
                readable_rows = batch.where(readable())
                shadow = readable_rows.where(~is_production())
                readable_rows = readable_rows.where(is_production())
                rows = gold_rows(readable_rows, writer.batch_id, pseudonym_key).localCheckpoint(eager=True)
                unreadable = batch.where(~readable())
                with timed(report, "count"):
                    # The counts and the production rows' latency in one job (each job costs ~0.2 s here).
                    kind = (F.when(~readable(), F.lit("unreadable")).when(is_production(), F.lit("production"))
                            .otherwise(F.lit("shadow")))
                    latency = F.unix_micros(F.current_timestamp()) - F.unix_micros("s.submission_time")
                    tally = {r.kind: r for r in batch.groupBy(kind.alias("kind")).agg(
                        F.count(F.lit(1)).alias("n"), F.percentile_approx(latency, [0.5, 0.95, 0.99], 10000)
                        .alias("latency"), F.last("s.model_version").alias("version")).collect()}
                    kinds = {name: r.n for name, r in tally.items()}
                counts = {True: kinds.get("production", 0), False: kinds.get("unreadable", 0)}
                report.rows_read = sum(kinds.values())
                report.scored = counts.get(True, 0)
                if counts.get(False) and attempt < config.streaming.max_batch_attempts:
                    writer.append(quarantine_rows(unreadable, writer.batch_id, F.lit(INVALID_SCORE),
                                                  reason_for(INVALID_SCORE, "kafka_topic")), "silver.quarantine")
                    report.quarantined = counts[False]
                if kinds.get("shadow"):
                    with timed(report, "gold.shadow_predictions"):
                        writer.append(gold_rows(shadow, writer.batch_id, pseudonym_key, with_alias=True),
                                      "gold.shadow_predictions")
                if report.scored:
                    with timed(report, "gold.predictions"):
                        writer.append(rows, "gold.predictions")
                    stats = tally["production"]
                    if stats.latency:
                        report.latency_p50_s, report.latency_p95_s, report.latency_p99_s = (
                            value / 1e6 for value in stats.latency)
                    report.model_version = stats.version
                    for hook in hooks:
                        run_hook(hook, writer.batch_id, rows, report, QUERY)
            finally:
                batch.unpersist()
            runtime.write_progress(spark, writer, report)

    return handle


__all__ = ["PREDICTIONS", "QUERY", "gold_stream", "make_gold_handler"]
