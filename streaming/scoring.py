"""The scoring query: submissions in, ``ScoreIssued`` out, and no Delta commit in between.

Plan: Kafka → decode and validate once (``streaming.decode``, one Arrow pass) → keep valid
events → first delivery of each ``event_id`` within ``streaming.dedupe_horizon`` (state store)
→ ``foreachBatch``: the production model's Spark UDF (rebuilt when the alias moves,
``streaming.model_cache``) → one Kafka write. That write holds the ``ScoreIssued`` of every
row the model scored usably, and the raw submission of every row it could not (no production
model, the model raised, NaN or out-of-range output) on ``streaming.score-retries`` with the
version that failed it. Nothing valid is dropped: the retries wait in Kafka and are scored by
the next version (:class:`RetryCatchUp`) — the catch-up of unscored rows. The batch's progress
goes to ``streaming.scorer-progress``; the landing query lands it in ``ops.stream_progress``.

Replays: Kafka writes are at-least-once. A replayed batch scores again and publishes under the
same ``ScoreIssued`` ids (they depend on the submission only); gold keeps the first published.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from learnscore.core.config import Config
from learnscore.registry.access import PRODUCTION
from learnscore.streaming.decode import SUBMISSION, decode_events
from learnscore.streaming.drift.items import ExcludedItems
from learnscore.streaming.effort import low_effort_count, with_effort, with_effort_moderated_score
from learnscore.streaming.ingest import kafka_rows, kafka_stream
from learnscore.streaming.model_cache import NO_MODEL, OK, SCORE_FAILED, ModelCache, ScoringUdf
from learnscore.streaming.progress import BatchReport, ProgressPublisher
from learnscore.streaming.runtime import QueryRuntime, ScorerTopics, timed
from learnscore.streaming.score import score_issued_value, score_submissions, without_items

log = logging.getLogger(__name__)

QUERY = "score"
FAILED_VERSION_HEADER = "learnscore.failed-version"
NO_VERSION = "none"


def scoring_stream(spark: SparkSession, config: Config, names: ScorerTopics, dedupe: bool = True) -> DataFrame:
    """The streaming plan: valid first deliveries of submissions, decoded (every valid delivery
    without ``dedupe``)."""
    source = kafka_stream(spark, config, names.submissions, config.streaming.score_max_offsets_per_trigger)
    decoded = decode_events(source, SUBMISSION, config.domain.contract())
    if not dedupe:
        return decoded.where(F.col("reason_code").isNull())
    return (decoded.where(F.col("reason_code").isNull())
            .withColumn("_seen_at", F.current_timestamp())
            .withWatermark("_seen_at", config.streaming.dedupe_horizon)
            .dropDuplicatesWithinWatermark(["event_id"])
            .drop("_seen_at"))


def publish(rows: DataFrame, config: Config) -> None:
    """One Kafka write: ``topic``, ``key``, ``value`` and ``headers`` columns per row."""
    from learnscore.core.kafka_io import spark_kafka_options

    rows.write.format("kafka").options(**spark_kafka_options(config)).save()


def _failed_header(failed_version: Column) -> Column:
    return F.array(F.struct(F.lit(FAILED_VERSION_HEADER).alias("key"), failed_version.cast("binary").alias("value")))


def outgoing(scored: DataFrame, names: ScorerTopics, failed_version: Column) -> DataFrame:
    """Usable rows → their ``ScoreIssued`` on the scores topic; the others → their raw bytes on the
    retries topic, with the version that failed them in a header."""
    ok = F.col("output_ok")
    return scored.select(
        F.when(ok, F.lit(names.scores)).otherwise(F.lit(names.retries)).alias("topic"),
        F.col("learner_id").cast("binary").alias("key"),
        F.when(ok, score_issued_value(PRODUCTION).cast("binary")).otherwise(F.col("raw_value")).alias("value"),
        F.when(ok, F.array().cast("array<struct<key:string,value:binary>>"))
        .otherwise(_failed_header(failed_version)).alias("headers"))


def waiting(rows: DataFrame, names: ScorerTopics, failed_version: str) -> DataFrame:
    """Rows nobody could score now, bound for the retries topic (raw, as they came)."""
    return rows.select(F.lit(names.retries).alias("topic"), F.col("learner_id").cast("binary").alias("key"),
                       F.col("raw_value").alias("value"), _failed_header(F.lit(failed_version)).alias("headers"))


class KafkaWriteFailed(RuntimeError):
    """Spark's Kafka sink gave up on a batch's scores (after its own retries and the task's)."""


@dataclass
class ScoreOutcome:
    scored: int = 0
    failed: int = 0
    latency: tuple[float, float, float] | None = None
    rows: int = 0  # read: scored + failed


def score_and_publish(rows: DataFrame, model: ScoringUdf, config: Config, names: ScorerTopics,
                      report: BatchReport, excluded: Sequence[str] = ()) -> ScoreOutcome:
    """Score ``rows`` (decoded submissions) with ``model`` and publish scores and retries in one
    write; answers to the ``excluded`` items are not scored (the retries keep the raw submission)."""
    if excluded:
        report.note(f"answers to {len(excluded)} compromised items left out")
    scored = with_effort(score_submissions(without_items(rows, excluded), model.udf, model.name, model.version),
                         model.item_bank,
                         config.psychometrics).persist()
    try:
        with timed(report, "score"):
            stats = scored.agg(
                F.count(F.lit(1)).alias("rows"),
                F.sum(F.col("output_ok").cast("long")).alias("ok"),
                F.sum((~F.col("output_ok")).cast("long")).alias("bad"),
                low_effort_count().alias("low_effort"),
                F.percentile_approx(
                    F.when(F.col("output_ok"), F.unix_micros("scored_at") - F.unix_micros("event_time")),
                    [0.5, 0.95, 0.99], 10000).alias("latency")).collect()[0]
        if stats.low_effort:
            report.note(f"{stats.low_effort} low-effort submissions")
        with timed(report, "kafka"):
            if not stats.rows:
                return ScoreOutcome()
            published = with_effort_moderated_score(scored, model.udf, stats.low_effort)
            try:
                publish(outgoing(published, names, F.lit(model.version)), config)
            except Exception as exc:
                if "PythonException" in f"{type(exc).__name__} {exc}":
                    raise  # the model raised again (low-effort moderation calls it): the model's failure
                raise KafkaWriteFailed(f"publishing batch {report.batch_id}'s scores failed: "
                                       f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc!r}"
                                       ) from exc
    finally:
        scored.unpersist()
    latency = tuple(value / 1e6 for value in stats.latency) if stats.latency else None
    return ScoreOutcome(stats.ok or 0, stats.bad or 0, latency, stats.rows)


class RetryCatchUp:
    """Scores what waits on the retries topic once a version other than the one that failed it
    is in production; remembers how far it got in a cursor file beside the checkpoint.

    Runs at the start of a batch, and from the runner when the stream is idle; a lock keeps the
    two apart. A crash after publishing and before the cursor moved publishes those scores again
    under the same ids (gold keeps the first).
    """

    def __init__(self, spark: SparkSession, config: Config, names: ScorerTopics, checkpoint: str,
                 exclusion: ExcludedItems | None = None):
        self.spark, self.config, self.names = spark, config, names
        self.exclusion = exclusion or ExcludedItems(config)
        self.path = Path(checkpoint.removeprefix("file://")) / "retries-cursor.json"
        self.lock = threading.Lock()
        # One consumer for the end offsets, asked twice per micro-batch: a new one each time cost
        # a connection and a metadata round trip (~0.2 s a batch). kafka-python's is not thread-safe.
        self._consumer = None
        self._consumer_lock = threading.Lock()

    def cursor(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {"offsets": {}, "version": None}

    def pending(self) -> int:
        """Retries not caught up yet (Kafka end offsets minus the cursor)."""
        end = self._end_offsets()
        done = self.cursor()["offsets"]
        return sum(max(0, offset - done.get(str(partition), 0)) for partition, offset in end.items())

    def due(self, model: ScoringUdf | None) -> bool:
        return model is not None and self.cursor()["version"] != model.version and self.pending() > 0

    def run_reported(self, model: ScoringUdf, query_id: str | None, progress: ProgressPublisher) -> int:
        """:meth:`run` from the runner (no micro-batch): its own progress record, ``query`` ``catch_up``."""
        report = BatchReport("catch_up", self.cursor().get("runs", 0) + 1, datetime.now(timezone.utc),
                             query_id=f"{query_id}.catch_up", model_version=model.version, model_status=OK)
        caught_up = self.run(model, report)
        report.scored = report.rows_read = caught_up
        report.note(f"caught up {caught_up} waiting submissions")
        report.pending_unscored = _safe_pending(self)
        progress.send(report)
        return caught_up

    def run(self, model: ScoringUdf, report: BatchReport | None = None) -> int:
        """Score every waiting row with ``model``; return how many got a usable score."""
        with self.lock:
            if not self.due(model):
                return 0
            end = self._end_offsets()
            start = {str(p): self.cursor()["offsets"].get(str(p), 0) for p in end}
            topic = self.names.retries
            from learnscore.core.kafka_io import spark_kafka_options

            raw = (self.spark.read.format("kafka").options(**spark_kafka_options(self.config))
                   .option("subscribe", topic)
                   .option("startingOffsets", json.dumps({topic: {p: o for p, o in start.items()}}))
                   .option("endingOffsets", json.dumps({topic: {str(p): o for p, o in end.items()}}))
                   .load())
            rows = (decode_events(kafka_rows(raw), SUBMISSION, self.config.domain.contract())
                    .where(F.col("reason_code").isNull()))
            local = report or BatchReport(QUERY, -1, datetime.now(timezone.utc))
            outcome = score_and_publish(rows, model, self.config, self.names, local, self.exclusion.current())
            self._save({str(p): o for p, o in end.items()}, model.version, self.cursor().get("runs", 0) + 1)
            log.info("caught up %d waiting submissions with version %s (%d still unusable)", outcome.scored,
                     model.version, outcome.failed)
            return outcome.scored

    def _end_offsets(self) -> dict[int, int]:
        from learnscore.core.kafka_io import consumer, end_offsets

        with self._consumer_lock:
            if self._consumer is None:
                self._consumer = consumer(self.config)
            try:
                return end_offsets(self._consumer, self.names.retries)
            except Exception:
                self._close_consumer()  # the next call connects afresh (the broker may have moved or restarted)
                raise

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            finally:
                self._consumer = None

    def close(self) -> None:
        with self._consumer_lock:
            self._close_consumer()

    def _save(self, offsets: dict, version: str, runs: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"offsets": offsets, "version": version, "runs": runs}))
        os.replace(tmp, self.path)


def make_scoring_handler(spark: SparkSession, config: Config, runtime: QueryRuntime, models: ModelCache,
                         catch_up: RetryCatchUp) -> Callable[[DataFrame, int], None]:
    """The query's ``foreachBatch`` handler."""
    names = ScorerTopics.of(config)
    progress = runtime.publisher or ProgressPublisher(config, names)

    def handle(batch_df: DataFrame, batch_id: int) -> None:
        with runtime.batch(batch_id) as (_writer, report, attempt):
            rows = batch_df.persist()
            try:
                with timed(report, "model.refresh"):
                    state = models.refresh()
                model = state.model
                report.model_status, report.model_version = state.status, model.version if model else None
                if state.message:
                    report.note(state.message)
                if model is not None and _safe_due(catch_up, model):
                    with timed(report, "catch_up"):
                        caught_up = catch_up.run(model, report)
                    report.note(f"caught up {caught_up} waiting submissions")
                if model is None or attempt >= config.streaming.max_batch_attempts:
                    with timed(report, "decode"):
                        report.rows_read = report.submissions_valid = rows.count()
                    if report.rows_read and model is not None:
                        report.model_status = SCORE_FAILED
                        report.note(f"batch failed {attempt - 1} times: its rows wait for the next version")
                    if report.rows_read:
                        with timed(report, "kafka"):
                            publish(waiting(rows, names, model.version if model else NO_VERSION), config)
                    report.failed = report.rows_read
                    if model is None:
                        report.model_status = report.model_status or NO_MODEL
                else:
                    # The batch is decoded, deduplicated, scored and counted by one Spark job: each
                    # job more waits for a free core behind the other queries' tasks.
                    outcome = _score_or_park(rows, model, config, names, report, catch_up.exclusion.current())
                    report.rows_read = report.submissions_valid = outcome.rows
                    report.scored, report.failed = outcome.scored, outcome.failed
                    if outcome.latency:
                        report.latency_p50_s, report.latency_p95_s, report.latency_p99_s = outcome.latency
                    if outcome.failed:
                        report.note(f"{outcome.failed} rows with unusable model output wait for the next version")
            finally:
                rows.unpersist()
            report.pending_unscored = _safe_pending(catch_up)
            with timed(report, "progress"):
                progress.send(report)

    return handle


def _score_or_park(rows: DataFrame, model: ScoringUdf, config: Config, names: ScorerTopics,
                   report: BatchReport, excluded: Sequence[str] = ()) -> ScoreOutcome:
    try:
        return score_and_publish(rows, model, config, names, report, excluded)
    except KafkaWriteFailed:
        # Not the model's fault: parking the rows for "another version" would strand them until
        # a new one came. The batch fails and is replayed (same score ids; gold keeps the first).
        raise
    except Exception as exc:  # noqa: BLE001 - a model that raises must not stop the stream
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        log.error("%s batch %s: version %s raised while scoring; the rows wait for another version: %s",
                  QUERY, report.batch_id, model.version, first)
        report.model_status = SCORE_FAILED
        report.note(f"scoring raised: {first}")
        publish(waiting(rows, names, model.version), config)
        count = rows.count()
        return ScoreOutcome(0, count, None, count)


def _safe_due(catch_up: RetryCatchUp, model: ScoringUdf) -> bool:
    """Whether waiting rows need catching up; unknown (broker away) counts as not yet. The batch's
    own rows must not fail on it: the idle tick and the next batch ask again."""
    try:
        return catch_up.due(model)
    except Exception as exc:  # noqa: BLE001 - the retry topic's end offsets need the broker
        log.warning("%s: could not read the retry topic's end offsets (%s); catch-up is checked again "
                    "with the next batch", QUERY, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        return False


def _safe_pending(catch_up: RetryCatchUp) -> int | None:
    """Submissions waiting for a version that scores them; None when the broker cannot say
    (unknown, not zero: the lag watch keeps counting the wait)."""
    try:
        return catch_up.pending()
    except Exception as exc:  # noqa: BLE001 - a count for the report; the broker may be away
        log.debug("could not count waiting submissions: %s", exc)
        return None


__all__ = ["OK", "QUERY", "RetryCatchUp", "make_scoring_handler", "scoring_stream"]
