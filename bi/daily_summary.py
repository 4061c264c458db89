"""``gold.daily_summary``: the daily BI aggregate by subject and grade, small cells suppressed.

A batch job (``learnscore bi refresh``) rebuilds the whole table with one Delta overwrite,
so running it again gives the same rows: idempotent, and safe to schedule.
"""

from __future__ import annotations

import logging

from learnscore.core.config import Config
from learnscore.core.lake import ensure_spark_tables
from learnscore.schemas.events import LEVELS
from learnscore.schemas.tables import DAILY_SUMMARY, PREDICTION_OUTCOMES, PREDICTIONS

log = logging.getLogger(__name__)

KEYS = ["day", "subject", "grade_level"]


def summarise_daily(predictions, outcomes, min_cell_learners: int):
    """Aggregate predictions and outcomes per day, subject and grade; drop cells with too few
    learners, and leave the outcome figure (``mean_abs_error``) out of a cell whose outcomes come
    from too few learners: ten learners with one outcome would show that learner's error.

    ``predictions`` has gold.predictions' columns, ``outcomes`` gold.prediction_outcomes'; the day is
    the UTC day of the submission's ``event_time``. Returns gold.daily_summary's columns.
    """
    from pyspark.sql import functions as F

    submitted = (predictions
                 .withColumn("day", F.to_date("event_time"))
                 .groupBy(*KEYS)
                 .agg(F.count("*").alias("submissions"),
                      F.countDistinct("learner_key").alias("learners"),
                      F.avg("progress_score").alias("mean_predicted_score"),
                      *[F.avg((F.col("comprehension_level") == level).cast("double")).alias(f"share_{level}")
                        for level in LEVELS]))
    observed = (outcomes
                .withColumn("day", F.to_date("event_time"))
                .groupBy(*KEYS)
                .agg(F.count("*").alias("outcomes"), F.countDistinct("learner_key").alias("outcome_learners"),
                     F.avg("abs_error").alias("mean_abs_error")))
    return (submitted
            .where(F.col("learners") >= min_cell_learners)
            .join(observed, KEYS, "left")
            .withColumn("outcomes", F.coalesce(F.col("outcomes"), F.lit(0)).cast("bigint"))
            .withColumn("mean_abs_error", F.when(F.col("outcome_learners") >= min_cell_learners,
                                                 F.col("mean_abs_error")))
            .withColumn("updated_at", F.current_timestamp())
            .select(*DAILY_SUMMARY.column_names))


def refresh_daily_summary(spark, config: Config) -> int:
    """Rebuild gold.daily_summary from the gold tables; return the number of cells written."""
    ensure_spark_tables(spark, config, [PREDICTIONS.name, PREDICTION_OUTCOMES.name, DAILY_SUMMARY.name])
    predictions = spark.read.format("delta").load(config.table_path(PREDICTIONS.name))
    outcomes = spark.read.format("delta").load(config.table_path(PREDICTION_OUTCOMES.name))
    summary = summarise_daily(predictions, outcomes, config.privacy.min_cell_learners).cache()
    cells = summary.count()
    summary.write.format("delta").mode("overwrite").save(config.table_path(DAILY_SUMMARY.name))
    summary.unpersist()
    log.info("gold.daily_summary rebuilt: %d cells (cells of fewer than %d learners suppressed, and "
             "the mean error of cells with outcomes of fewer)", cells, config.privacy.min_cell_learners)
    return cells
