"""Score decoded submissions with the model's Spark UDF, check its output, shape ``ScoreIssued``.

The model is the MLflow pyfunc Spark UDF (``streaming.model_cache``); it gets the model input
of the scoring contract (``learnscore.schemas.scoring``) selected from the decoded responses, so
the stream, training and the REST endpoint hand every model the same input.

A ``ScoreIssued`` carries everything the Delta side needs (the submission's subject, grade,
assessment and time, the per-submission signals): ``gold.predictions`` and the prediction
pairs are written from the published scores alone, so Kafka, gold and the pairs always agree
on which version scored an event. Its ``event_id`` depends on the submission alone: a replayed
micro-batch that scores again (maybe with another version, if ``production`` moved meanwhile)
publishes the same id, and the first score published for a submission is the one that counts.
"""

from __future__ import annotations

import uuid

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from learnscore.core.privacy import pseudonymise
from learnscore.registry.access import PRODUCTION
from learnscore.schemas.domain import LEVELS
from learnscore.schemas.events import SCORE_ISSUED
from learnscore.schemas.scoring import PROBABILITY_COLUMNS, PROBABILITY_TOLERANCE, RESPONSE_COLUMNS, SCORE_RANGE

# One namespace for the ids of ScoreIssued events (uuid5 of the submission's event id).
SCORE_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://learnscore.dev/events/ScoreIssued/2")
# RFC 3339 with microseconds and "Z" for UTC (the session time zone is UTC).
JSON_TIMESTAMP_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
#: The per-submission signals a ScoreIssued carries: computed while decoding (model-free), the
#: share of rapid guesses (``streaming.effort``; absent when the version's bank has no times) and the
#: ability under the version's item bank.
SIGNAL_COLUMNS = ("accuracy", "mean_log_time", "n_responses", "rapid_guess_share", "ability")


def score_event_id(submission_event_id: str) -> str:
    """The event id of the ScoreIssued for a submission: the same for every score of it.

    >>> score_event_id("6f1c1f7e-0000-4000-8000-000000000001")
    '4ce2de64-b3f0-5148-b73e-e00f8dee1f52'
    """
    return str(uuid.uuid5(SCORE_EVENT_NAMESPACE, submission_event_id))


def score_event_id_column(submission_event_id: Column) -> Column:
    """:func:`score_event_id` computed in Spark (RFC 4122 uuid5: SHA-1 of namespace + name).

    The same function as the Python one, spelled in SQL so 100,000 scores do not make a trip
    through a Python worker; ``tests/streaming/test_units.py`` holds the two together.
    """
    digest = F.sha1(F.concat(F.unhex(F.lit(SCORE_EVENT_NAMESPACE.hex)), F.encode(submission_event_id, "UTF-8")))

    def part(start: int, length: int) -> Column:  # 1-based, as SQL substring
        return F.substring(digest, start, length)

    variant = F.lower(F.hex(F.conv(part(17, 1), 16, 10).cast("int").bitwiseAND(3).bitwiseOR(8)))
    return F.concat(part(1, 8), F.lit("-"), part(9, 4), F.lit("-5"), part(14, 3), F.lit("-"),
                    variant, part(18, 3), F.lit("-"), part(21, 12))


def pseudonym_column(learner_id: Column, key: str) -> Column:
    """``learnscore.core.privacy.pseudonymise`` applied in Spark (the same function, one implementation)."""

    @F.pandas_udf("string")
    def pseudonyms(ids: pd.Series) -> pd.Series:
        return pd.Series([None if value is None else pseudonymise(value, key) for value in ids], dtype=object)

    return pseudonyms(learner_id)


def model_input_columns() -> list[Column]:
    """The scoring contract's model input, selected from decoded ``responses`` (in the
    signature's order: that is how ``spark_udf`` names positional arguments)."""
    return [F.col("subject"), F.col("grade_level").cast("bigint").alias("grade_level"),
            *(F.col(f"responses.{column}").alias(column) for column in RESPONSE_COLUMNS)]


def without_items(submissions: DataFrame, items) -> DataFrame:
    """Submissions with the answers to ``items`` left out (items flagged compromised, while
    ``psychometrics.exclude_compromised_items`` is on). A submission with nothing else keeps its
    answers: a score from nothing would be no score at all."""
    if not items:
        return submissions
    kept = F.filter(F.col("responses"), lambda response: ~response.item_id.isin(*items))
    return submissions.withColumn("responses", F.when(F.size(kept) > 0, kept).otherwise(F.col("responses")))


def score_submissions(submissions: DataFrame, model_udf, model_name: str, model_version: str) -> DataFrame:
    """Decoded submissions with the model's outputs, ``output_ok``, the model and ``scored_at``.

    Nothing is filtered: rows whose output is not usable keep ``output_ok = false`` so the
    caller can count them and keep them for a later version.
    """
    prediction = model_udf(*model_input_columns())
    return (submissions
            .withColumn("_prediction", prediction)
            .select("*", *[F.col(f"_prediction.{name}").alias(name)
                           for name in ("progress_score", "comprehension_level", *PROBABILITY_COLUMNS)])
            .drop("_prediction")
            .withColumn("output_ok", usable_output())
            .withColumn("model_name", F.lit(model_name))
            .withColumn("model_version", F.lit(str(model_version)))
            .withColumn("scored_at", F.current_timestamp()))


def usable_output() -> Column:
    """True when the model's output may be published: a finite score in 0–100, a known level,
    finite probabilities in 0–1 that sum to 1. NaN, null or anything else is refused."""
    score = F.col("progress_score")
    ok = score.isNotNull() & ~F.isnan(score) & score.between(*SCORE_RANGE)
    ok = ok & F.col("comprehension_level").isin(*LEVELS)
    for name in PROBABILITY_COLUMNS:
        p = F.col(name)
        ok = ok & p.isNotNull() & ~F.isnan(p) & p.between(0.0, 1.0)
    total = sum((F.col(name) for name in PROBABILITY_COLUMNS), F.lit(0.0))
    ok = ok & (F.abs(total - F.lit(1.0)) <= PROBABILITY_TOLERANCE)
    return F.coalesce(ok, F.lit(False))


def score_issued_value(alias: str = PRODUCTION) -> Column:
    """The ``ScoreIssued`` JSON of a scored row (contract ``learnscore.schemas.events.SCORE_ISSUED``)."""
    probabilities = F.create_map(*[item for level in LEVELS for item in (F.lit(level), F.col(f"p_{level}"))])
    signals = F.map_filter(F.create_map(*[item for name in SIGNAL_COLUMNS
                                          for item in (F.lit(name), F.col(name).cast("double"))]),
                           lambda _, value: value.isNotNull())
    event = F.struct(
        score_event_id_column(F.col("event_id")).alias("event_id"),
        F.lit(SCORE_ISSUED.version).alias("schema_version"),
        F.col("scored_at").alias("event_time"),
        F.col("event_id").alias("submission_event_id"),
        "learner_id", "progress_score", "comprehension_level",
        probabilities.alias("probabilities"), "model_name", "model_version",
        F.lit(alias).alias("model_alias"), "scored_at",
        "assessment_id", "subject", "grade_level", F.col("event_time").alias("submission_time"),
        signals.alias("signals"), "low_effort", "effort_moderated_score",
    )
    return F.to_json(event, {"timestampFormat": JSON_TIMESTAMP_FORMAT})
