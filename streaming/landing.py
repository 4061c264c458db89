"""The landing query: every message to its Delta table, exactly once, off the scoring path.

Subscribes to the submissions, outcomes, endpoint request log and progress topics (the batch
reports of score, gold and pairs). Per micro-batch: raw copies to bronze, valid first deliveries
to silver (submissions, outcomes) and ``ops.endpoint_requests``, the reports and this batch's own
in one ``ops.stream_progress`` append, refused events and later
deliveries of an event to ``silver.quarantine`` with the reason. No table is read: which
delivery comes first is Spark's state store's answer (``streaming.ingest``), so a batch costs
the same with 0 or 10 million rows in silver. Each write is an idempotent append
(``sinks.BatchWriter``); a replayed batch is classified exactly as its first attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from learnscore.core.config import Config
from learnscore.model.item_bank import ItemBank
from learnscore.schemas.tables import OUTCOMES, STREAM_PROGRESS, SUBMISSIONS
from learnscore.streaming import sinks
from learnscore.streaming.decode import OUTCOME, SUBMISSION, decode_events, event_key_column
from learnscore.streaming.effort import RAPID, with_effort
from learnscore.streaming.ingest import (
    COORDINATES,
    bronze_rows,
    coordinate_key,
    first_delivery_flags,
    kafka_stream,
    with_first_deliveries,
)
from learnscore.streaming.progress import BatchReport
from learnscore.streaming.quarantine import (
    DUPLICATE_EVENT_ID,
    DUPLICATE_OUTCOME,
    POISON_BATCH,
    quarantine_rows,
    reason_for,
)
from learnscore.streaming.request_log import parse_request_log, request_rows
from learnscore.streaming.runtime import QueryRuntime, ScorerTopics, run_hook, timed

log = logging.getLogger(__name__)

QUERY = "land"
TABLES = ("bronze.submissions_raw", "bronze.outcomes_raw", "silver.submissions", "silver.quarantine",
          "silver.outcomes", "ops.stream_progress", "ops.endpoint_requests")
PROGRESS_DDL = ", ".join(f"{name} {kind}" for name, kind in STREAM_PROGRESS.columns)


def landing_stream(spark: SparkSession, config: Config, names: ScorerTopics) -> DataFrame:
    """The streaming plan: Kafka rows, each once, plus the first delivery of each key again."""
    rows = kafka_stream(spark, config, ",".join([names.submissions, names.outcomes, names.requests, names.progress]))
    topic = F.col("kafka_topic")
    valid_key = event_key_column(config.domain.contract(), {
        names.submissions: ("DiagnosticSubmitted", "event_id"),
        # one outcome per submission: later ones are duplicates whatever their own event id
        names.outcomes: ("OutcomeObserved", "submission_event_id"),
    })
    json_text = F.col("raw_value").cast("string")
    key = (F.when(topic.isin(names.submissions, names.outcomes), F.concat_ws("/", topic, valid_key))
           .when(topic == names.requests,
                 F.concat_ws("/", topic, F.nullif(F.trim(F.get_json_object(json_text, "$.request_id")), F.lit(""))))
           .when(topic == names.progress,
                 F.concat_ws("/", topic, F.get_json_object(json_text, "$.query_id"),
                             F.get_json_object(json_text, "$.batch_id"))))
    # concat_ws skips nulls: a key that is only the topic name means "no key": unique per delivery.
    key = F.when(key.isNull() | (key == topic), coordinate_key()).otherwise(key)
    return with_first_deliveries(rows, key, config.streaming.dedupe_horizon)


def make_landing_handler(spark: SparkSession, config: Config, runtime: QueryRuntime,
                         hooks: Sequence[Callable[[int, DataFrame], None]] = (),
                         production_bank: Callable[[], tuple[str, ItemBank] | None] | None = None,
                         ) -> Callable[[DataFrame, int], None]:
    """The query's ``foreachBatch`` handler; ``hooks`` get each batch's new valid submissions once
    they are in silver (the item watch); with ``production_bank`` (``registry.artifacts``) each
    submission lands with its effort flags, judged by the production version's item bank."""
    names = ScorerTopics.of(config)
    domain = config.domain.contract()

    def handle(batch_df: DataFrame, batch_id: int) -> None:
        with runtime.batch(batch_id) as (writer, report, attempt):
            batch = batch_df.persist()
            try:
                published = None
                if attempt >= config.streaming.max_batch_attempts:
                    _quarantine_poison(batch, writer, report, attempt)
                else:
                    effort = _effort(config, production_bank)
                    published = _land(spark, batch, writer, report, names, domain, hooks, effort)
                if published is not None:
                    runtime.saw_rows()  # not idle: a stop waits for these (job.Scorer.stop)
                runtime.write_progress(spark, writer, report, published)
            finally:
                batch.unpersist()

    return handle


def _effort(config: Config, production_bank) -> Callable[[DataFrame], DataFrame] | None:
    """Adds silver's effort columns with the production version's bank (None: no version, none added)."""
    production = production_bank() if production_bank is not None else None
    if production is None:
        return None
    version, bank = production

    def judged(rows: DataFrame) -> DataFrame:
        return (with_effort(rows, bank, config.psychometrics).drop(RAPID, "ability")
                .withColumn("effort_model_version", F.when(F.col("rapid_guess_share").isNotNull(), F.lit(version))))

    return judged


def _land(spark, batch: DataFrame, writer: sinks.BatchWriter, report: BatchReport, names: ScorerTopics, domain,
          hooks: Sequence[Callable[[int, DataFrame], None]] = (),
          effort: Callable[[DataFrame], DataFrame] | None = None) -> DataFrame | None:
    """Land one batch; return the other queries' progress rows it read (first deliveries), for
    the batch's one ``ops.stream_progress`` append, or None."""
    # Not cached: a second columnar copy of every raw value was no faster than redoing the join
    # (land-only, 50,000 submissions and their outcomes: 35.0–41.2 s against 37.2–39.7 s cached).
    delivered = first_delivery_flags(batch)
    published = None
    with timed(report, "count"):
        counts = {r.kafka_topic: r["count"] for r in delivered.groupBy("kafka_topic").count().collect()}
    report.rows_read = sum(n for topic, n in counts.items() if topic != names.progress)
    quarantine: list[DataFrame] = []
    for topic, table in ((names.submissions, "bronze.submissions_raw"), (names.outcomes, "bronze.outcomes_raw")):
        if counts.get(topic):
            with timed(report, table):
                writer.append(bronze_rows(delivered.where(F.col("kafka_topic") == topic), writer.batch_id), table)
    if counts.get(names.submissions):
        quarantine += _land_events(delivered.where(F.col("kafka_topic") == names.submissions), SUBMISSION, domain,
                                   SUBMISSIONS.column_names, "silver.submissions", DUPLICATE_EVENT_ID, "event_id",
                                   writer, report, hooks, effort)
    if counts.get(names.outcomes):
        quarantine += _land_events(delivered.where(F.col("kafka_topic") == names.outcomes), OUTCOME, domain,
                                   OUTCOMES.column_names, "silver.outcomes", DUPLICATE_OUTCOME,
                                   "submission_event_id", writer, report)
    if counts.get(names.requests):
        quarantine += _land_requests(delivered.where(F.col("kafka_topic") == names.requests), names.requests,
                                     writer, report)
    if counts.get(names.progress):
        published = _published_progress(delivered.where((F.col("kafka_topic") == names.progress)
                                                         & F.col("is_first")))
    if quarantine:
        rows = quarantine[0]
        for part in quarantine[1:]:
            rows = rows.unionByName(part)
        with timed(report, "silver.quarantine"):
            writer.append(rows, "silver.quarantine")
    return published  # read while the batch is still cached (the handler appends it)


def _land_events(rows: DataFrame, kind, domain, columns: list[str], table: str, duplicate_code: str,
                 duplicate_id: str, writer: sinks.BatchWriter, report: BatchReport,
                 hooks: Sequence[Callable[[int, DataFrame], None]] = (),
                 effort: Callable[[DataFrame], DataFrame] | None = None) -> list[DataFrame]:
    """Decode a topic's rows once; land the valid first deliveries; return the quarantine parts."""
    flags = rows.select(*COORDINATES, "is_first")
    decoded = (decode_events(rows, kind, domain)
               .join(F.broadcast(flags), list(COORDINATES), "inner")
               .withColumn("ingested_at", F.current_timestamp())
               .persist())
    try:
        with timed(report, f"{table}.decode"):
            tally = (decoded.groupBy(F.col("reason_code").isNull().alias("valid"), "is_first").count().collect())
        counts = {(r.valid, r.is_first): r["count"] for r in tally}
        valid_first = counts.get((True, True), 0)
        duplicates = counts.get((True, False), 0)
        refused = counts.get((False, True), 0) + counts.get((False, False), 0)
        parts = []
        if refused:
            parts.append(quarantine_rows(decoded.where(F.col("reason_code").isNotNull()), writer.batch_id,
                                         F.col("reason_code"), F.col("reason")))
        if duplicates:
            parts.append(quarantine_rows(decoded.where(F.col("reason_code").isNull() & ~F.col("is_first")),
                                         writer.batch_id, F.lit(duplicate_code),
                                         reason_for(duplicate_code, duplicate_id), F.col("event_id")))
        if valid_first:
            landed = decoded.where(F.col("reason_code").isNull() & F.col("is_first")).select(*columns)
            with timed(report, table):
                writer.append(effort(landed) if effort else landed, table)
            for hook in hooks:
                run_hook(hook, writer.batch_id, landed, report, QUERY)
        report.quarantined += refused + duplicates
        report.duplicates += duplicates
        if table == "silver.submissions":
            report.submissions_valid += valid_first
        else:
            report.outcomes += valid_first
        return [part.localCheckpoint(eager=True) for part in parts]  # decoded is released below
    finally:
        decoded.unpersist()


def _land_requests(rows: DataFrame, topic: str, writer: sinks.BatchWriter, report: BatchReport) -> list[DataFrame]:
    parsed = parse_request_log(rows, topic)
    refused = parsed.where(F.col("reason_code").isNotNull())
    usable = parsed.where(F.col("reason_code").isNull())
    first = usable.where(F.col("is_first"))
    later = usable.where(~F.col("is_first"))
    with timed(report, "ops.endpoint_requests"):
        landed = first.count()
        if landed:
            writer.append(request_rows(first), "ops.endpoint_requests")
    report.endpoint_requests += landed
    parts = [quarantine_rows(refused, writer.batch_id, F.col("reason_code"), F.col("reason")),
             quarantine_rows(later, writer.batch_id, F.lit(DUPLICATE_EVENT_ID),
                             reason_for(DUPLICATE_EVENT_ID, "request.request_id"), F.col("request.request_id"))]
    report.quarantined += refused.count() + later.count()
    return parts


def _published_progress(rows: DataFrame) -> DataFrame:
    """The progress records of score, gold and pairs as ``ops.stream_progress`` rows."""
    parsed = rows.select(F.from_json(F.col("raw_value").cast("string"), PROGRESS_DDL,
                                     {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"}).alias("p")).select("p.*")
    return parsed.where(F.col("batch_id").isNotNull())


def _quarantine_poison(batch: DataFrame, writer: sinks.BatchWriter, report: BatchReport, attempt: int) -> None:
    """The batch failed ``attempt - 1`` times: copy its raw messages to quarantine, decode nothing."""
    rows = batch.where(~F.col("_first"))
    count = rows.count()
    log.error("%s batch %d failed %d times: its %d messages go to silver.quarantine as %s, undecoded",
              QUERY, writer.batch_id, attempt - 1, count, POISON_BATCH)
    writer.append(quarantine_rows(rows, writer.batch_id, F.lit(POISON_BATCH),
                                  reason_for(POISON_BATCH, "kafka_topic"), F.lit(None)), "silver.quarantine")
    report.rows_read, report.quarantined = count, count
    report.note(f"poison batch: {count} messages quarantined undecoded after {attempt - 1} failed attempts")

