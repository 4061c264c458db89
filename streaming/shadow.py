"""The shadow query: challengers scored on the same live submissions as production, never served.

Every alias in ``streaming.shadow_aliases`` (default ``staging``) that points to a version other
than production's scores the valid first deliveries of each micro-batch; its usable outputs are
published as ``ScoreIssued`` with ``model_alias`` = the alias on ``streaming.shadow-scores``, a
topic no application reads. The gold and pairs queries land them in ``gold.shadow_predictions``
and, beside each outcome, in ``gold.shadow_prediction_outcomes``: production and challenger on
the same learners.

Its own query (own checkpoint, own FAIR pool of low weight) rather than a step of the scoring
query: a challenger's UDF then never lengthens the batch that publishes the learners' scores.
A shadow batch that fails is logged and skipped (a challenger's evidence is a sample; it must
never hold up or fail the stream).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from learnscore.core.config import Config
from learnscore.streaming.drift.items import ExcludedItems
from learnscore.streaming.effort import low_effort_count, with_effort, with_effort_moderated_score
from learnscore.streaming.model_cache import OK, ModelCache, ScoringUdf
from learnscore.streaming.runtime import QueryRuntime, ScorerTopics, timed
from learnscore.streaming.score import score_issued_value, score_submissions, without_items
from learnscore.streaming.scoring import publish

log = logging.getLogger(__name__)

QUERY = "shadow"


def challengers(caches: dict[str, ModelCache], production: ModelCache) -> dict[str, ScoringUdf]:
    """The shadow aliases to score now: loaded, and not the version production scores with."""
    live = production.model.version if production.model is not None else None
    found = {}
    for alias, cache in caches.items():
        state = cache.refresh()
        if state.status == OK and state.model is not None and state.model.version != live:
            found[alias] = state.model
    return found


def shadow_records(scored: DataFrame, names: ScorerTopics, alias: str) -> DataFrame:
    """Usable challenger outputs as ``ScoreIssued`` records for the shadow topic."""
    return scored.where(F.col("output_ok")).select(
        F.lit(names.shadow).alias("topic"), F.col("learner_id").cast("binary").alias("key"),
        score_issued_value(alias).cast("binary").alias("value"))


def make_shadow_handler(spark: SparkSession, config: Config, runtime: QueryRuntime, production: ModelCache,
                        caches: dict[str, ModelCache]) -> Callable[[DataFrame, int], None]:
    """The query's ``foreachBatch`` handler; ``caches``: one ``ModelCache`` per shadow alias."""
    names = ScorerTopics.of(config)
    exclusion = ExcludedItems(config)  # challengers see the same answers production does

    def handle(batch_df: DataFrame, batch_id: int) -> None:
        with runtime.batch(batch_id) as (_writer, report, _attempt):
            with timed(report, "model.refresh"):
                models = challengers(caches, production)
            if not models:
                report.note("no challenger to score")
                return
            rows = batch_df.persist()
            try:
                report.rows_read = rows.count()  # the runner's idle check waits for the shadow too
                for alias, model in models.items():
                    try:
                        with timed(report, f"shadow.{alias}"):
                            scored = with_effort(score_submissions(without_items(rows, exclusion.current()),
                                                                   model.udf, model.name, model.version),
                                                 model.item_bank, config.psychometrics).persist()
                            try:
                                rushed = scored.agg(low_effort_count()).first()[0]
                                published = with_effort_moderated_score(scored, model.udf, rushed)
                                publish(shadow_records(published, names, alias), config)
                            finally:
                                scored.unpersist()
                    except Exception as exc:  # noqa: BLE001 - a challenger never stops the stream
                        log.error("%s batch %s: %s version %s failed (skipped): %s", QUERY, batch_id, alias,
                                  model.version, str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc)
                        report.note(f"{alias} v{model.version} failed")
                report.model_version = ",".join(f"{alias}:{m.version}" for alias, m in models.items())
            finally:
                rows.unpersist()

    return handle


__all__ = ["QUERY", "challengers", "make_shadow_handler"]
