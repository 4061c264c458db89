"""Rapid guessing on the scoring path: each score's effort flags and its effort-moderated score.

Every scored submission gets ``rapid_guess_share`` — the share of its responses faster than
their item's NT10 threshold (:mod:`learnscore.model.effort`), with the item bank of the version
that scores it — and ``low_effort``, that share above ``psychometrics.low_effort_share``. A
low-effort submission is scored a second time by the same model on its effortful responses alone:
``effort_moderated_score`` (effort-moderated scoring: Wise & DeMars, 2006, *An application of
item response time: the effort-moderated IRT model*, Journal of Educational Measurement 43(1)).
The normal score stays the one the application gets; the second sits beside it.

A version without response times in its item bank (a model brought without ``item_bank.json``)
calls nothing a rapid guess: the columns are null, not false. Only the low-effort rows go through
the model twice, and after the batch's first pass is cached, so the usual batch pays one more
small Spark job. The same pass gives each submission's ``ability`` under the version's bank (a
signal the drift detectors watch, carried by the score).
"""

from __future__ import annotations

import logging

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from learnscore.core.config import PsychometricsConfig
from learnscore.model.effort import effort_per_submission, judges_effort
from learnscore.model.features import flatten_model_input
from learnscore.model.item_bank import ItemBank, estimate_ability
from learnscore.schemas.scoring import MODEL_INPUT_COLUMNS, RESPONSE_COLUMNS, SCORE_RANGE
from learnscore.streaming.score import model_input_columns

log = logging.getLogger(__name__)

EFFORT_COLUMNS = ("rapid_guess_share", "low_effort")
RAPID = "_rapid"  # per response: was it a rapid guess (dropped before anything is published)


def with_effort(rows: DataFrame, bank: ItemBank | None, settings: PsychometricsConfig) -> DataFrame:
    """``rows`` (decoded submissions) with :data:`EFFORT_COLUMNS`, the per-response mask and
    ``ability``: the learner's ability under the version's bank, the drift detectors' covariate —
    computed in the same pass because it needs the same bank (a neutral bank still gives one)."""
    if bank is None:
        return rows.select("*", F.lit(None).cast("double").alias("rapid_guess_share"),
                           F.lit(None).cast("boolean").alias("low_effort"),
                           F.lit(None).cast("array<boolean>").alias(RAPID), F.lit(None).cast("double").alias("ability"))
    judged = settings.enabled and judges_effort(bank)
    share, cap_ms = settings.normative_share, settings.threshold_cap_ms

    @F.pandas_udf("rapid_guess_share double, rapid array<boolean>, ability double")
    def measure(model_input: pd.DataFrame) -> pd.DataFrame:
        flat = flatten_model_input(model_input)
        a, b, _, _ = bank.lookup(flat.item_id, flat.skill, flat.subject, flat.row)
        ability, _ = estimate_ability(flat.correct, a, b, flat.row, flat.n_rows)
        if not judged:
            return pd.DataFrame({"rapid_guess_share": None, "rapid": None, "ability": ability},
                                index=model_input.index)
        shares, masks = effort_per_submission(flat, bank, share=share, cap_ms=cap_ms)
        return pd.DataFrame({"rapid_guess_share": shares, "rapid": masks, "ability": ability},
                            index=model_input.index)

    measured = measure(F.struct(*model_input_columns()))
    return rows.select("*", measured.rapid_guess_share.alias("rapid_guess_share"),
                       (measured.rapid_guess_share > F.lit(settings.low_effort_share)).alias("low_effort"),
                       measured.rapid.alias(RAPID), measured.ability.alias("ability"))


def low_effort_count() -> F.Column:
    """An aggregate: the usable scores flagged ``low_effort`` (0 without a flag)."""
    return F.sum((F.col("output_ok") & F.coalesce(F.col("low_effort"), F.lit(False))).cast("long"))


def with_effort_moderated_score(scored: DataFrame, model_udf, low_effort_rows: int) -> DataFrame:
    """``scored`` (cached: it is read twice) with ``effort_moderated_score``: for each usable
    low-effort row that kept an effortful response, the model's score of those responses alone;
    null for every other row. ``low_effort_rows`` (:func:`low_effort_count`) = 0 skips the job."""
    if not low_effort_rows:
        return scored.withColumn("effort_moderated_score", F.lit(None).cast("double"))
    rapid = F.col(RAPID)

    def effortful(column: str) -> F.Column:
        return F.filter(F.col(f"responses.{column}"), lambda _, i: ~rapid[i]).alias(column)

    rushed = scored.where(F.col("output_ok") & F.col("low_effort") & F.exists(rapid, lambda r: ~r))
    inputs = [F.col(MODEL_INPUT_COLUMNS[0]), F.col("grade_level").cast("bigint").alias("grade_level"),
              *(effortful(column) for column in RESPONSE_COLUMNS)]
    score = model_udf(*inputs).progress_score
    usable = score.isNotNull() & ~F.isnan(score) & score.between(*SCORE_RANGE)
    # One row per event id, whatever the batch holds: a left join must never double a score.
    moderated = (rushed.select("event_id", F.when(usable, score).alias("effort_moderated_score"))
                 .dropDuplicates(["event_id"]))
    try:  # computed apart: a model that refuses the shorter input must not hold the scores back
        moderated = moderated.localCheckpoint(eager=True)
    except Exception as exc:  # noqa: BLE001 - the second score is an extra, the first is the product
        log.error("effort-moderated scores of %d low-effort submissions failed (published without): %s",
                  low_effort_rows, str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__)
        return scored.withColumn("effort_moderated_score", F.lit(None).cast("double"))
    return scored.join(F.broadcast(moderated), "event_id", "left")
