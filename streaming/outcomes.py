"""Observed outcomes: which may land in ``silver.outcomes``, and predictions joined with them.

An outcome lands once per submission. It is refused (quarantined) when its event id was
already delivered elsewhere, when its submission is unknown, or when its submission already
has an outcome. ``gold.prediction_outcomes`` gets a row from whichever of the two — the
prediction or the outcome — arrives second.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from learnscore.streaming.ingest import COORDINATES, DUPLICATE, delivery_column, delivery_rank, landed_coordinates
from learnscore.streaming.quarantine import DUPLICATE_EVENT_ID, DUPLICATE_OUTCOME, UNKNOWN_SUBMISSION

PREDICTION_COLUMNS = ("event_id", "learner_key", "subject", "grade_level", "event_time",
                      "model_version", "progress_score", "comprehension_level")


def outcome_verdicts(outcomes: DataFrame, submissions: DataFrame, landed: DataFrame) -> DataFrame:
    """One row per delivered outcome: the Kafka coordinates, ``delivery`` and ``problem``
    (null when the outcome may land).

    ``outcomes``: flattened valid outcomes (``event_id``, ``submission_event_id``, coordinates);
    ``submissions``: ``silver.submissions`` (after this batch's submissions landed);
    ``landed``: ``silver.outcomes`` before this batch's outcomes land. Both tables are
    filtered by the batch's keys (broadcast); only the small matches meet the batch.
    """
    keys = outcomes.select("event_id", "submission_event_id", *COORDINATES)
    # One broadcast of the batch's ids probes both tables (Spark reuses the exchange); the
    # matches are few and meet the batch in shuffled hash joins inside the same job.
    probe = F.broadcast(keys.select(F.col("event_id").alias("_b_event"),
                                    F.col("submission_event_id").alias("_b_submission")))
    same_id = landed_coordinates(landed).join(probe, F.col("_landed_key") == F.col("_b_event"), "left_semi")
    known = (submissions.select(F.col("event_id").alias("_known_submission"))
             .join(probe, F.col("_known_submission") == F.col("_b_submission"), "left_semi"))
    earlier = (landed.select(F.col("submission_event_id").alias("_earlier_submission"),
                             F.col("event_id").alias("_earlier_event_id"))
               .join(probe, F.col("_earlier_submission") == F.col("_b_submission"), "left_semi"))
    joined = (keys.withColumn("_id_rank", delivery_rank())
              .join(same_id.hint("shuffle_hash"), F.col("event_id") == F.col("_landed_key"), "left")
              .join(known.hint("shuffle_hash"), F.col("submission_event_id") == F.col("_known_submission"),
                    "left")
              .join(earlier.hint("shuffle_hash"), F.col("submission_event_id") == F.col("_earlier_submission"),
                    "left")
              .withColumn("delivery", delivery_column("_id_rank")))
    eligible = (F.col("delivery") != DUPLICATE) & F.col("_known_submission").isNotNull()
    first = Window.partitionBy("submission_event_id", "_eligible").orderBy(*COORDINATES)
    ranked = joined.withColumn("_eligible", eligible).withColumn("_rank", F.row_number().over(first))
    has_earlier = (F.col("_earlier_event_id").isNotNull()
                   & (F.col("_earlier_event_id") != F.col("event_id")))
    problem = (F.when(F.col("delivery") == DUPLICATE, F.lit(DUPLICATE_EVENT_ID))
               .when(F.col("_known_submission").isNull(), F.lit(UNKNOWN_SUBMISSION))
               .when(has_earlier | (F.col("_rank") > 1), F.lit(DUPLICATE_OUTCOME)))
    return ranked.select(*COORDINATES, "delivery", problem.alias("problem"))


def prediction_outcome_rows(predictions: DataFrame, outcomes: DataFrame, *, batch_side: str) -> DataFrame:
    """``gold.prediction_outcomes`` rows: each prediction next to its observed outcome.

    ``predictions`` is ``gold.predictions``-shaped, ``outcomes`` ``silver.outcomes``-shaped;
    rows are produced only where both exist. ``batch_side`` (``"predictions"`` or
    ``"outcomes"``) names the small side, this batch's rows: it is broadcast, and the table on
    the other side is scanned once without a shuffle.
    """
    p = predictions.select(*PREDICTION_COLUMNS)
    o = outcomes.select(F.col("submission_event_id").alias("_submission"),
                        "observed_progress_score", "observed_comprehension_level",
                        F.col("event_time").alias("outcome_time"))
    if batch_side == "predictions":
        p = F.broadcast(p)
    elif batch_side == "outcomes":
        o = F.broadcast(o)
    else:
        raise ValueError(f"batch_side must be 'predictions' or 'outcomes', not {batch_side!r}")
    return (p.join(o, p["event_id"] == o["_submission"], "inner").drop("_submission")
            .withColumn("abs_error", F.abs(F.col("progress_score") - F.col("observed_progress_score")))
            .withColumn("level_correct", F.col("comprehension_level") == F.col("observed_comprehension_level"))
            .withColumn("joined_at", F.current_timestamp()))
