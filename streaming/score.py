"""Featurize + score silver submissions, check the model's output, shape gold rows and ScoreIssued.

The model is the MLflow pyfunc Spark UDF (``learnscore.streaming.model_cache``); the feature selection
is the shared one in ``learnscore.model.features`` so the stream, training and the REST endpoint
cannot disagree.
"""

from __future__ import annotations

import uuid

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from learnscore.core.privacy import pseudonymise
from learnscore.registry.access import PRODUCTION
from learnscore.schemas.events import LEVELS, SCORE_ISSUED
from learnscore.schemas.scoring import PROBABILITY_COLUMNS

PROBABILITY_TOLERANCE = 1e-3  # class probabilities must sum to 1 within this

# One namespace for the ids of ScoreIssued events (uuid5 of submission and model version).
SCORE_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://learnscore.dev/events/ScoreIssued")
# RFC 3339 with microseconds and "Z" for UTC (the session time zone is UTC).
JSON_TIMESTAMP_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"


def score_event_id(submission_event_id: str, model_version: str) -> str:
    """The event id of the ScoreIssued for a submission scored by a model version.

    Deterministic, so a republished score (a replayed micro-batch) carries the same id and a
    consumer can drop it; a rescore by another version is a different event.

    >>> score_event_id("6f1c1f7e-0000-4000-8000-000000000001", "3")
    '70b4fdb3-aa89-5f0e-9169-97af602efe6b'
    """
    return str(uuid.uuid5(SCORE_EVENT_NAMESPACE, f"{submission_event_id}/{model_version}"))


def pseudonym_column(learner_id: Column, key: str) -> Column:
    """``learnscore.core.privacy.pseudonymise`` applied in Spark (the same function, one implementation)."""

    @F.pandas_udf("string")
    def pseudonyms(ids: pd.Series) -> pd.Series:
        return pd.Series([None if value is None else pseudonymise(value, key) for value in ids],
                         dtype=object)

    return pseudonyms(learner_id)


def score_event_id_column(submission_event_id: Column, model_version: Column) -> Column:
    """:func:`score_event_id` computed in Spark (RFC 4122 uuid5: SHA-1 of namespace + name).

    The same function as the Python one, spelled in SQL so 100,000 scores do not make a trip
    through a Python worker; ``tests/streaming/test_units.py`` holds the two together.
    """
    digest = F.sha1(F.concat(F.unhex(F.lit(SCORE_EVENT_NAMESPACE.hex)),
                             F.encode(F.concat(submission_event_id, F.lit("/"), model_version), "UTF-8")))
    part = lambda start, length: F.substring(digest, start, length)
    variant = F.lower(F.hex(F.conv(part(17, 1), 16, 10).cast("int").bitwiseAND(3).bitwiseOR(8)))
    return F.concat(part(1, 8), F.lit("-"), part(9, 4), F.lit("-5"), part(14, 3), F.lit("-"),
                    variant, part(18, 3), F.lit("-"), part(21, 12))


def score_submissions(submissions: DataFrame, model_udf, model_name: str, model_version: str,
                      pseudonym_key: str) -> DataFrame:
    """Silver rows with the model's outputs, ``output_ok``, ``learner_key``, ``scored_at``, ``latency_s``.

    Nothing is filtered: rows whose output is not usable keep ``output_ok = false`` so the
    caller can count them and leave them pending.
    """
    from learnscore.model.features import spark_model_input_columns

    # Positional columns in the signature's order: that is how spark_udf names its arguments.
    prediction = model_udf(*spark_model_input_columns())
    scored = (submissions
              .withColumn("_prediction", prediction)
              .select("*", *[F.col(f"_prediction.{name}").alias(name)
                             for name in ("progress_score", "comprehension_level", *PROBABILITY_COLUMNS)])
              .drop("_prediction"))
    scored_at = F.current_timestamp()
    return (scored
            .withColumn("output_ok", usable_output())
            .withColumn("model_name", F.lit(model_name))
            .withColumn("model_version", F.lit(str(model_version)))
            .withColumn("learner_key", pseudonym_column(F.col("learner_id"), pseudonym_key))
            .withColumn("scored_at", scored_at)
            .withColumn("latency_s", (F.unix_micros(scored_at) - F.unix_micros(F.col("event_time"))) / 1e6))


def usable_output() -> Column:
    """True when the model's output may be written: a finite score in 0–100, a known level,
    finite probabilities in 0–1 that sum to 1. NaN, null or anything else is refused."""
    score = F.col("progress_score")
    ok = score.isNotNull() & ~F.isnan(score) & score.between(0.0, 100.0)
    ok = ok & F.col("comprehension_level").isin(*LEVELS)
    for name in PROBABILITY_COLUMNS:
        p = F.col(name)
        ok = ok & p.isNotNull() & ~F.isnan(p) & p.between(0.0, 1.0)
    total = sum((F.col(name) for name in PROBABILITY_COLUMNS), F.lit(0.0))
    ok = ok & (F.abs(total - F.lit(1.0)) <= PROBABILITY_TOLERANCE)
    return F.coalesce(ok, F.lit(False))


def prediction_rows(scored: DataFrame, batch_id: int, extra: tuple[str, ...] = ()) -> DataFrame:
    """``gold.predictions`` rows from usable scored rows (learner id replaced by its pseudonym),
    plus the ``extra`` columns of ``scored`` (e.g. ``responses`` for the after-scoring hooks)."""
    return scored.select(
        "event_id", "learner_key", "assessment_id", "subject", "grade_level", "event_time",
        "progress_score", "comprehension_level", *PROBABILITY_COLUMNS, "model_name",
        "model_version", "scored_at", "latency_s", F.lit(batch_id).cast("bigint").alias("batch_id"),
        *extra)


def score_issued_value() -> Column:
    """The ``ScoreIssued`` JSON of a scored row (contract ``learnscore.schemas.events.SCORE_ISSUED``)."""
    probabilities = F.create_map(*[item for level in LEVELS
                                   for item in (F.lit(level), F.col(f"p_{level}"))])
    event = F.struct(
        score_event_id_column(F.col("event_id"), F.col("model_version")).alias("event_id"),
        F.lit(SCORE_ISSUED.version).alias("schema_version"),
        F.col("scored_at").alias("event_time"),
        F.col("event_id").alias("submission_event_id"),
        "learner_id", "progress_score", "comprehension_level",
        probabilities.alias("probabilities"), "model_name", "model_version",
        F.lit(PRODUCTION).alias("model_alias"), "scored_at",
    )
    return F.to_json(event, {"timestampFormat": JSON_TIMESTAMP_FORMAT})
