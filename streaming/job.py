"""The streaming scorer: one Structured Streaming query over Kafka, one ``foreachBatch`` handler.

One query subscribes to ``diagnostic.submissions``, ``diagnostic.outcomes`` and
``serving.requests`` and splits each micro-batch by topic. One query means one checkpoint and
one writer per Delta table (no concurrent-MERGE conflicts; steps that write different tables
run side by side in threads), and an outcome that arrives in the same batch as its submission
is classified after the submission landed in silver.

Exactly-once (DESIGN §5): Kafka offsets live in the checkpoint; after a crash Spark runs the
last uncommitted batch again, with the same offsets — and only that one, as the first batch
of the restarted query. Each write in the handler is idempotent:

- where a replayed batch produces the very same rows (bronze, silver, quarantine, the request
  log, the progress row), the write is an append that records ``(app id, batch id)`` in its
  commit (one app id per logical write, derived from the query id that the checkpoint keeps,
  so a new checkpoint gets new ids); the first batch of a run skips a write whose marker is
  already committed (``learnscore.streaming.sinks.append_once`` says why this is not Delta's
  ``txnAppId`` option);
- where a replay may produce other rows (scoring: the production version or the pending rows
  picked for catch-up may have changed), the first batch of a run MERGEs (inserting missing
  keys only); later batches of the run append, since their rows cannot be in the table yet.

Deduplication: an ``event_id`` already landed from *other* Kafka coordinates (or repeated in
the batch) is a true duplicate and is quarantined; one landed from the *same* coordinates is
our own batch replayed, and is neither landed again nor quarantined.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from learnscore.core.config import Config, Secrets
from learnscore.registry.access import RegistryUnreachable, production_version
from learnscore.schemas import topics
from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, OUTCOME_OBSERVED
from learnscore.schemas.tables import OUTCOMES, STREAM_PROGRESS, SUBMISSIONS
from learnscore.streaming import sinks
from learnscore.streaming.ingest import (
    DUPLICATE,
    NEW,
    REPLAY,
    TopicContract,
    bronze_rows,
    delivery_verdicts,
    event_columns,
    kafka_rows,
    validate_events,
    with_verdicts,
)
from learnscore.streaming.model_cache import (
    SCORE_FAILED,
    ModelCache,
)
from learnscore.streaming.outcomes import outcome_verdicts, prediction_outcome_rows
from learnscore.streaming.progress import BatchReport
from learnscore.streaming.quarantine import (
    DUPLICATE_EVENT_ID,
    DUPLICATE_OUTCOME,
    UNKNOWN_SUBMISSION,
    quarantine_rows,
    reason_for,
)
from learnscore.streaming.request_log import parse_request_log, request_rows
from learnscore.streaming.score import prediction_rows, score_issued_value, score_submissions

log = logging.getLogger(__name__)

QUERY_NAME = "scorer"
STREAM_TABLES = ("bronze.submissions_raw", "bronze.outcomes_raw", "silver.submissions",
                 "silver.quarantine", "silver.outcomes", "gold.predictions",
                 "gold.prediction_outcomes", "ops.stream_progress", "ops.endpoint_requests")
# Read in full by every batch's duplicate, outcome and pair checks: compacted first.
PROBED_TABLES = ("gold.predictions", "ops.endpoint_requests", "silver.outcomes", "silver.submissions")
SUBMISSION_REQUIRED = ("event_id", "event_time", "learner_id", "assessment_id", "subject",
                       "grade_level", "responses")
OUTCOME_REQUIRED = ("event_id", "event_time", "submission_event_id", "learner_id",
                    "observed_progress_score", "observed_comprehension_level")
_STOP_MARKER = "learnscore-stop-requested"

# (batch_id, predictions written this batch with the responses they were scored from,
#  prediction-outcome pairs written this batch);
# either frame may be None. Drift detection plugs in here (DESIGN §7).
AfterScoringHook = Callable[[int, "DataFrame | None", "DataFrame | None"], None]


class StopRequested(RuntimeError):
    """Raised by a batch that starts after a stop was asked: it wrote nothing, and Spark runs
    it again (same offsets) when the scorer restarts."""

    def __init__(self):
        super().__init__(f"{_STOP_MARKER}: the scorer is stopping; this batch runs again on restart")


class ScorerFailed(RuntimeError):
    pass


class WriterIds:
    """App ids for the idempotent appends, one per logical write, from the query's id.

    The query id is stored in the checkpoint, so it survives restarts and a new checkpoint
    gets a new one (and new app ids, whose batch ids start at 0 again).
    """

    def __init__(self):
        self._query_id: str | None = None
        self._ready = threading.Event()

    def set_query_id(self, query_id: str) -> None:
        self._query_id = str(query_id)
        self._ready.set()

    def app_id(self, write: str) -> str:
        # The first batch may start before start() has returned the query to us.
        if not self._ready.wait(timeout=120):
            raise RuntimeError("the scorer's query id was never set; start it with start_scorer()")
        return f"learnscore.{QUERY_NAME}.{self._query_id}.{write}"


@dataclass
class ScorerState:
    """What the handler (stream thread) and the run loop (main thread) share."""

    pending_unscored: int = 0
    stalled_version: str | None = None  # a catch-up with this version scored nothing
    batches: int = 0
    rows_read_total: int = 0
    last_report: BatchReport | None = None
    reports: deque = field(default_factory=lambda: deque(maxlen=10_000), repr=False)
    started_at: float = field(default_factory=time.monotonic)
    last_rows_at: float = field(default_factory=time.monotonic)
    last_batch_started_at: float = 0.0
    last_batch_ended_at: float = field(default_factory=time.monotonic)
    in_batch: bool = False
    stopping: bool = False
    writes_since_compaction: dict = field(default_factory=dict, repr=False)  # table → appends
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_write(self, table: str) -> None:
        with self._lock:
            self.writes_since_compaction[table] = self.writes_since_compaction.get(table, 0) + 1

    def due_for_compaction(self, after_writes: int) -> str | None:
        """The table written most often, if ``after_writes`` times, since its last compaction in
        this run (the ones every batch probes first): one a batch, so that tables written
        together are not all compacted at once."""
        with self._lock:
            counts = sorted(self.writes_since_compaction.items(),
                            key=lambda item: (-item[1], item[0] not in PROBED_TABLES, item[0]))
        return counts[0][0] if after_writes and counts and counts[0][1] >= after_writes else None

    def compacted(self, table: str) -> None:
        with self._lock:
            self.writes_since_compaction[table] = 0

    def enter_batch(self) -> None:
        with self._lock:
            if self.stopping:
                raise StopRequested()
            self.in_batch = True
            self.last_batch_started_at = time.monotonic()

    def leave_batch(self) -> None:
        with self._lock:
            self.in_batch = False
            self.last_batch_ended_at = time.monotonic()

    def request_stop(self) -> None:
        with self._lock:
            self.stopping = True

    def idle_for(self) -> float:
        return 0.0 if self.in_batch else time.monotonic() - self.last_rows_at


@dataclass(frozen=True)
class ScorerTopics:
    """Deployed names of the topics the scorer reads and writes."""

    submissions: str
    outcomes: str
    requests: str
    scores: str
    wakeups: str

    @classmethod
    def of(cls, config: Config) -> ScorerTopics:
        return cls(submissions=config.topic(topics.SUBMISSIONS), outcomes=config.topic(topics.OUTCOMES),
                   requests=config.topic(topics.ENDPOINT_REQUESTS), scores=config.topic(topics.SCORES),
                   wakeups=config.topic(topics.SCORER_WAKEUPS))

    @property
    def subscribed(self) -> list[str]:
        return [self.submissions, self.outcomes, self.requests, self.wakeups]


def make_batch_handler(spark: SparkSession, config: Config, *, models: ModelCache, state: ScorerState,
                       writer_ids: WriterIds, pseudonym_key: str,
                       hooks: Sequence[AfterScoringHook] = ()) -> Callable[[DataFrame, int], None]:
    """The ``foreachBatch`` handler of the scorer: ``handle(batch_df, batch_id)``."""
    names = ScorerTopics.of(config)
    contracts = (TopicContract(names.submissions, DIAGNOSTIC_SUBMITTED, "submission", SUBMISSION_REQUIRED),
                 TopicContract(names.outcomes, OUTCOME_OBSERVED, "outcome", OUTCOME_REQUIRED))

    def handle(batch_df: DataFrame, batch_id: int) -> None:
        state.enter_batch()
        try:
            run = _BatchRun(spark, config, names, contracts, models, state, writer_ids,
                            pseudonym_key, hooks, batch_df, batch_id)
            run.process()
        finally:
            state.leave_batch()

    return handle


class _BatchRun:
    """The work of one micro-batch, stage by stage; holds its counters and cached frames."""

    def __init__(self, spark, config, names, contracts, models, state, writer_ids, pseudonym_key,
                 hooks, batch_df, batch_id):
        self.spark, self.config, self.names, self.contracts = spark, config, names, contracts
        self.models, self.state, self.ids, self.key, self.hooks = models, state, writer_ids, pseudonym_key, hooks
        self.batch_df, self.batch_id = batch_df, int(batch_id)
        self.report = BatchReport(self.batch_id, datetime.now(timezone.utc))
        self.clock = time.monotonic()
        self.cached: list[DataFrame] = []
        self.frozen: list[DataFrame] = []
        self.quarantine: list[DataFrame] = []
        self.fresh: DataFrame | None = None  # submissions landed by this batch, not scored yet
        self.fresh_count = 0
        # Newly landed submissions add to the pending count; replayed ones were counted at
        # start-up already (they are in silver without a prediction).
        self.landed_new = 0
        self.predictions: DataFrame | None = None  # gold rows written by this batch (+ responses)
        self.silver_new: DataFrame | None = None  # submissions to land in silver
        self.accepted_outcomes: DataFrame | None = None  # outcomes landed by this batch
        self.outcomes_replayed = False
        self._lock = threading.Lock()  # counters and timings: stages run in parallel threads
        # Spark re-runs at most one batch: the first one a (re)started query executes.
        self.first_of_run = state.batches == 0
        self.may_be_replay = self.first_of_run

    # -- helpers -------------------------------------------------------------------------------
    def keep(self, frame: DataFrame, stage: str) -> DataFrame:
        """Materialize a frame that several steps use, so its input is read (and validated,
        scored) once.

        A local checkpoint, not ``persist()``: after every write Spark re-caches cached plans
        that read the written table, so a persisted frame joined with silver would be
        recomputed after the silver write — at a cost, and with other results (new rows
        would then look like replays). A checkpoint freezes the batch's view and its lineage.
        """
        with self.timed(stage):
            frozen = frame.localCheckpoint(eager=True)
        self.frozen.append(frozen)
        return frozen

    def cache_batch(self, frame: DataFrame) -> DataFrame:
        """Cache the Kafka batch: it reads no table, so writes cannot invalidate it, and the
        first count fills the cache (one job, where a checkpoint would take two)."""
        frame = frame.persist()
        self.cached.append(frame)
        return frame

    def table(self, name: str) -> DataFrame:
        return sinks.read_table(self.spark, self.config, name)

    def append(self, rows: DataFrame, table: str) -> None:
        with self.timed(table):
            sinks.append_once(rows, self.config, table, self.ids.app_id(table), self.batch_id,
                              may_be_replay=self.first_of_run)
        self.state.count_write(table)

    def land_scored(self, rows: DataFrame, table: str, key: str) -> None:
        """Write rows whose content a replay may change (scoring): MERGE when this batch may be
        a replay, else a plain idempotent append.

        Spark re-runs at most one batch, the first one a (re)started query executes: a later
        batch of the same run is a first attempt, so its rows cannot be in the table yet and
        the cheaper append is exact. The MERGE covers the first batch, whose replayed rows may
        differ from the crashed attempt's (another model version, other pending rows), and any
        batch holding events landed from the same coordinates before (a new checkpoint
        reading old offsets again).
        """
        with self.timed(table):
            if self.may_be_replay:
                sinks.merge_new(self.spark, rows, self.config, table, key)
            else:
                sinks.append_once(rows, self.config, table, self.ids.app_id(table), self.batch_id,
                                  may_be_replay=False)
        self.state.count_write(table)

    def add(self, **counts: int) -> None:
        """Add to the batch report's counters (stages in parallel threads share them)."""
        with self._lock:
            for name, value in counts.items():
                setattr(self.report, name, getattr(self.report, name) + value)

    def in_parallel(self, *steps: Callable[[], None]) -> None:
        """Run independent steps at once and wait for all; the first error is raised.

        A small Spark job or Delta commit spends much of its time in driver work and the file
        system, with the two cores idle; writes to different tables overlapped shorten the
        batch. Each write stays idempotent on its own, so a crash may leave any subset done.
        ``InheritableThread`` carries the Spark local properties (job description) over.
        """
        from pyspark import InheritableThread

        errors: list[BaseException] = []

        def run(step):
            try:
                step()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the batch's thread
                errors.append(exc)

        threads = [InheritableThread(target=run, args=(step,)) for step in steps[1:]]
        for thread in threads:
            thread.start()
        run(steps[0])
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    @contextmanager
    def timed(self, stage: str):
        """Wall time per stage, for the log and the benchmark's "where does the time go"."""
        started = time.monotonic()
        # Spark jobs carry the stage as their description (Spark UI, event log).
        context = self.spark.sparkContext
        outer = context.getLocalProperty("spark.job.description")
        context.setLocalProperty("spark.job.description", f"{QUERY_NAME} batch {self.batch_id}: {stage}")
        try:
            yield
        finally:
            context.setLocalProperty("spark.job.description", outer)
            with self._lock:
                self.report.timings[stage] = self.report.timings.get(stage, 0.0) + time.monotonic() - started

    # -- the stages ----------------------------------------------------------------------------
    def process(self) -> None:
        try:
            checked = self.cache_batch(parse_request_log(
                validate_events(kafka_rows(self.batch_df), self.contracts), self.names.requests))
            with self.timed("validate"):
                totals, valid = self._tally(checked)
            self.report.rows_read = sum(n for t, n in totals.items() if t != self.names.wakeups)
            if self.report.rows_read:
                self.state.last_rows_at = time.monotonic()
            invalid = sum(totals.values()) - sum(valid.values())
            if invalid:
                refused = checked.where(F.col("reason_code").isNotNull())
                self.quarantine.append(quarantine_rows(refused, self.batch_id, F.col("reason_code"),
                                                       F.col("reason")))
                self.add(quarantined=invalid)
            # The raw copies and the request log depend on nothing but the batch: they are
            # written beside the submissions → predictions → outcome pairs path.
            side = [lambda topic=topic, table=table: self.append(
                        bronze_rows(checked.where(F.col("kafka_topic") == topic), self.batch_id), table)
                    for topic, table in ((self.names.submissions, "bronze.submissions_raw"),
                                         (self.names.outcomes, "bronze.outcomes_raw"))
                    if totals.get(topic)]
            if valid.get(self.names.requests):
                side.append(lambda: self._land_requests(checked, valid[self.names.requests]))
            self.in_parallel(lambda: self._land_and_score(checked, totals, valid), *side)
            if self.quarantine:
                rows = self.quarantine[0]
                for part in self.quarantine[1:]:
                    rows = rows.unionByName(part)
                self.append(rows, "silver.quarantine")
            with self.timed("progress"):
                self._write_progress()
            self._compact()
            log.debug("batch %s stages: %s", self.batch_id, ", ".join(
                f"{name} {seconds:.2f}s" for name, seconds in self.report.timings.items()))
        finally:
            for frame in self.cached:
                frame.unpersist()
            for frame in self.frozen:
                _release(frame)

    def _land_and_score(self, checked: DataFrame, totals: dict[str, int], valid: dict[str, int]) -> None:
        if totals.get(self.names.submissions):
            self._land_submissions(checked, valid.get(self.names.submissions, 0))

        def land_silver():
            if self.silver_new is not None:
                self.append(self.silver_new, "silver.submissions")
            # Outcomes are classified against silver.submissions holding this batch's too.
            if valid.get(self.names.outcomes):
                self._land_outcomes(checked)

        # Scoring reads the batch, not silver, so the silver writes leave the path from an
        # event to its committed prediction. Should gold commit and silver not, the replay finds
        # the submissions new, scores them again and its MERGE (first batch of a run) keeps
        # gold one row per event. The pairs need both sides landed.
        self.in_parallel(self._score, land_silver)
        self._join_outcomes()

    def _tally(self, checked: DataFrame) -> tuple[dict[str, int], dict[str, int]]:
        rows = (checked.groupBy("kafka_topic")
                .agg(F.count(F.lit(1)).alias("rows"),
                     F.sum(F.col("reason_code").isNull().cast("long")).alias("valid"))
                .collect())
        return ({r.kafka_topic: r.rows for r in rows}, {r.kafka_topic: r.valid for r in rows})

    def _land_submissions(self, checked: DataFrame, valid_count: int) -> None:
        if not valid_count:
            return
        rows = checked.where(F.col("kafka_topic") == self.names.submissions)
        events = event_columns(rows.where(F.col("reason_code").isNull()), self.contracts[0])
        # Only the verdicts (coordinates + delivery) are materialized; the events stay in the
        # cached batch and meet their verdicts again where they are written or scored.
        verdicts = self.keep(delivery_verdicts(events, self.table("silver.submissions")), "dedupe")
        with self.timed("dedupe"):
            counts = {r.delivery: r["count"] for r in verdicts.groupBy("delivery").count().collect()}
        classified = with_verdicts(events, verdicts)
        new, replay, duplicate = counts.get(NEW, 0), counts.get(REPLAY, 0), counts.get(DUPLICATE, 0)
        if duplicate:
            self.quarantine.append(quarantine_rows(
                classified.where(F.col("delivery") == DUPLICATE), self.batch_id,
                F.lit(DUPLICATE_EVENT_ID), reason_for(DUPLICATE_EVENT_ID, "event_id"), F.col("event_id")))
            self.add(quarantined=duplicate, duplicates=duplicate)
        silver = classified.withColumn("ingested_at", F.current_timestamp())
        if new:
            self.silver_new = silver.where(F.col("delivery") == NEW)
        self.report.submissions_valid = new + replay
        self.may_be_replay = self.may_be_replay or replay > 0
        fresh = silver.where(F.col("delivery").isin(NEW, REPLAY)).select(*SUBMISSIONS.column_names)
        self.fresh_count, self.landed_new = new + replay, new
        if replay:
            # A replayed batch: some of its submissions may have been scored before the crash.
            fresh = self.keep(fresh.join(self.table("gold.predictions").select("event_id"),
                                         "event_id", "left_anti"), "replay.check")
            with self.timed("replay.check"):
                self.fresh_count = fresh.count()
        self.fresh = fresh if self.fresh_count else None

    def _score(self) -> None:
        with self.timed("model.refresh"):
            model_state = self.models.refresh()
        model = model_state.model
        self.report.model_status, self.report.model_version = model_state.status, (
            model.version if model else None)
        if model_state.message:
            self.report.note(model_state.message)
        pending_before = self.state.pending_unscored
        catch_up = None
        if model and pending_before > 0 and model.version != self.state.stalled_version:
            catch_up = self._pending_rows()
        parts = [frame.withColumn("_catch_up", F.lit(flag))
                 for frame, flag in ((self.fresh, False), (catch_up, True)) if frame is not None]
        if not parts:
            return
        to_score = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
        if model is None:
            self.state.pending_unscored = pending_before + self.landed_new
            self.report.pending_unscored = self.state.pending_unscored
            if self.fresh_count:
                self.report.note(f"{self.fresh_count} submissions wait for a model")
            return
        try:
            scored = self.keep(score_submissions(to_score, model.udf, model.name, model.version,
                                                 self.key), "score")
            with self.timed("score"):
                stats = scored.agg(
                F.sum(F.col("output_ok").cast("long")).alias("ok"),
                    F.sum((~F.col("output_ok")).cast("long")).alias("bad"),
                    F.sum((F.col("output_ok") & F.col("_catch_up")).cast("long")).alias("caught_up"),
                    F.percentile_approx(F.when(F.col("output_ok"), F.col("latency_s")),
                                        [0.5, 0.95, 0.99], 10000).alias("latency"),
                ).collect()[0]
        except Exception as exc:  # noqa: BLE001 - a model that raises must not stop the stream
            attempted = to_score.count()
            log.error("batch %s: version %s of %s raised while scoring %d rows; they stay pending: %s",
                      self.batch_id, model.version, model.name, attempted, _first_line(exc))
            self.report.model_status = SCORE_FAILED
            self.report.note(f"scoring raised: {_first_line(exc)[:300]}")
            self.report.failed = attempted
            self.state.pending_unscored = pending_before + self.landed_new
            self.report.pending_unscored = self.state.pending_unscored
            if catch_up is not None:
                self.state.stalled_version = model.version
            return
        ok, bad, caught_up = stats.ok or 0, stats.bad or 0, stats.caught_up or 0
        self.report.scored, self.report.failed = ok, bad
        if stats.latency:
            self.report.latency_p50_s, self.report.latency_p95_s, self.report.latency_p99_s = stats.latency
        if bad:
            self.report.note(f"{bad} rows with unusable model output (NaN, out of range or unknown "
                             f"level) stay pending")
            log.warning("batch %s: version %s gave unusable output for %d rows; not written, they "
                        "stay pending", self.batch_id, model.version, bad)
        if caught_up:
            self.report.note(f"caught up {caught_up} pending submissions")
        self.state.pending_unscored = max(0, pending_before + self.landed_new - ok)
        self.report.pending_unscored = self.state.pending_unscored
        if catch_up is not None and not caught_up:
            self.state.stalled_version = model.version  # no progress: wait for another version
        if not ok:
            return
        good = scored.where(F.col("output_ok"))
        # Publish before the gold commit: if the process dies in between, the replay publishes
        # again (at-least-once; ScoreIssued ids are deterministic, consumers dedupe on them).
        with self.timed("kafka.scores"):
            sinks.publish(good, self.config, self.names.scores, F.col("learner_id"), score_issued_value())
        # With the responses they were scored from, for the after-scoring hooks (drift features
        # come from them); the gold write keeps only the table's columns.
        self.predictions = prediction_rows(good, self.batch_id, extra=("responses",))
        self.land_scored(self.predictions, "gold.predictions", "event_id")

    def _pending_rows(self) -> DataFrame:
        """Landed submissions without a prediction, oldest first, at most ``score_batch_rows``."""
        pending = self.table("silver.submissions").join(
            self.table("gold.predictions").select("event_id"), "event_id", "left_anti")
        if self.fresh is not None:
            pending = pending.join(self.fresh.select("event_id"), "event_id", "left_anti")
        return (pending.orderBy("ingested_at", "event_id")
                .limit(self.config.streaming.score_batch_rows)
                .select(*SUBMISSIONS.column_names))

    def _land_outcomes(self, checked: DataFrame) -> None:
        rows = checked.where(F.col("kafka_topic") == self.names.outcomes)
        events = event_columns(rows.where(F.col("reason_code").isNull()), self.contracts[1])
        verdicts = self.keep(outcome_verdicts(events, self.table("silver.submissions"),
                                              self.table("silver.outcomes")), "outcomes.classify")
        with self.timed("outcomes.classify"):
            counts = {(r.problem, r.delivery): r["count"]
                      for r in verdicts.groupBy("problem", "delivery").count().collect()}
        classified = with_verdicts(events, verdicts)
        refused = sum(n for (problem, _), n in counts.items() if problem is not None)
        if refused:
            reason = F.lit(None).cast("string")
            for code, id_column in ((DUPLICATE_EVENT_ID, "event_id"),
                                    (UNKNOWN_SUBMISSION, "submission_event_id"),
                                    (DUPLICATE_OUTCOME, "submission_event_id")):
                reason = F.when(F.col("problem") == code, reason_for(code, id_column)).otherwise(reason)
            self.quarantine.append(quarantine_rows(classified.where(F.col("problem").isNotNull()),
                                                   self.batch_id, F.col("problem"), reason,
                                                   F.col("event_id")))
            self.add(quarantined=refused, duplicates=sum(
                n for (problem, _), n in counts.items() if problem in (DUPLICATE_EVENT_ID, DUPLICATE_OUTCOME)))
        accepted = classified.where(F.col("problem").isNull()).withColumn("ingested_at",
                                                                           F.current_timestamp())
        if counts.get((None, NEW)):
            self.append(accepted.where(F.col("delivery") == NEW), "silver.outcomes")
        self.report.outcomes = counts.get((None, NEW), 0) + counts.get((None, REPLAY), 0)
        self.outcomes_replayed = counts.get((None, REPLAY), 0) > 0
        if self.report.outcomes:
            self.accepted_outcomes = accepted.select(*OUTCOMES.column_names)

    def _join_outcomes(self) -> None:
        """Pair predictions with outcomes, whichever came first; runs after both landed."""
        parts = []
        if self.accepted_outcomes is not None:
            # Outcomes arriving after their prediction (gold read now: it holds this batch's).
            parts.append(prediction_outcome_rows(self.table("gold.predictions"), self.accepted_outcomes,
                                                 batch_side="outcomes"))
        if self.predictions is not None:
            # Predictions arriving after their outcome (catch-up, or late scoring).
            parts.append(prediction_outcome_rows(self.predictions, self.table("silver.outcomes"),
                                                 batch_side="predictions"))
        pairs = None
        if parts:
            pairs = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
            pairs = self.keep(pairs.dropDuplicates(["event_id"]), "pairs.join")
            with self.timed("pairs.join"):
                joined = pairs.count()
            if joined:
                self.may_be_replay = self.may_be_replay or self.outcomes_replayed
                self.land_scored(pairs, "gold.prediction_outcomes", "event_id")
            else:
                pairs = None
        for hook in self.hooks:
            with self.timed(f"hook.{getattr(hook, '__name__', 'hook')}"):
                hook(self.batch_id, self.predictions, pairs)

    def _land_requests(self, checked: DataFrame, valid_count: int) -> None:
        if not valid_count:
            return
        rows = request_rows(checked.where((F.col("kafka_topic") == self.names.requests)
                                          & F.col("reason_code").isNull()))
        verdicts = self.keep(delivery_verdicts(rows, self.table("ops.endpoint_requests"),
                                               key="request_id"), "requests.classify")
        with self.timed("requests.classify"):
            counts = {r.delivery: r["count"] for r in verdicts.groupBy("delivery").count().collect()}
        classified = with_verdicts(rows, verdicts)
        if counts.get(DUPLICATE):
            self.quarantine.append(quarantine_rows(
                classified.where(F.col("delivery") == DUPLICATE), self.batch_id,
                F.lit(DUPLICATE_EVENT_ID), reason_for(DUPLICATE_EVENT_ID, "request_id"),
                F.col("request_id")))
            self.add(quarantined=counts[DUPLICATE])
        if counts.get(NEW):
            self.append(classified.where(F.col("delivery") == NEW), "ops.endpoint_requests")
        self.report.endpoint_requests = counts.get(NEW, 0) + counts.get(REPLAY, 0)

    def _compact(self) -> None:
        """Compact a table written ``streaming.compact_after_writes`` times since its last
        compaction: the duplicate, outcome and pair checks read every file of the tables they
        probe (`learnscore bench files`: 1.1 s over 40 files, 3.4 s over 4,000, same 200,000 rows).
        Here, after the batch's writes and in its own thread, nothing of the stream writes
        concurrently; a crash now replays the batch's (skipped) writes, and maybe this."""
        table = self.state.due_for_compaction(self.config.streaming.compact_after_writes)
        if table is None:
            return
        started = time.monotonic()
        with self.timed(f"compact.{table}"):
            removed, added = sinks.compact(self.spark, self.config, table)
        self.state.compacted(table)
        log.info("compacted %s: %d small files into %d in %.1f s", table, removed, added,
                 time.monotonic() - started)

    def _write_progress(self) -> None:
        report = self.report
        report.pending_unscored = self.state.pending_unscored
        report.duration_s = duration = time.monotonic() - self.clock
        row = report.row()
        frame = self.spark.createDataFrame([row], schema=STREAM_PROGRESS.ddl)
        self.append(frame, "ops.stream_progress")
        self.state.batches += 1
        self.state.rows_read_total += report.rows_read
        self.state.last_report = report
        self.state.reports.append(report)
        log.info("%s (%.2fs)", report.summary(), duration)


def _quiet_checkpoint_release_warnings(spark: SparkSession) -> None:
    """Spark warns on every release of a local checkpoint that its lineage is gone — which is
    the point of releasing it after the batch; keep the log for real warnings."""
    try:
        jvm = spark._jvm
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            "org.apache.spark.rdd.MapPartitionsRDD", jvm.org.apache.logging.log4j.Level.ERROR)
    except Exception as exc:  # noqa: BLE001 - a noisier log is all that is lost
        log.debug("could not quiet checkpoint release warnings: %s", exc)


def _release(frame: DataFrame) -> None:
    """Free the blocks of a local checkpoint now rather than whenever the JVM collects it."""
    try:
        frame._jdf.queryExecution().analyzed().rdd().unpersist(False)
    except Exception as exc:  # noqa: BLE001 - only memory is at stake; Spark frees it later
        log.debug("could not release a checkpointed frame early: %s", exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if line.strip() and not line.startswith("Traceback"):
            return line.strip()
    return type(exc).__name__


# -- wiring ------------------------------------------------------------------------------------


def count_pending(spark: SparkSession, config: Config) -> int:
    """Landed submissions without a prediction (checked once at start-up, off the hot path)."""
    silver = sinks.read_table(spark, config, "silver.submissions").select("event_id")
    gold = sinks.read_table(spark, config, "gold.predictions").select("event_id")
    return silver.join(gold, "event_id", "left_anti").count()


class Scorer:
    """A running scorer query: :meth:`wake_up_if_needed` from the run loop, :meth:`stop` to end it."""

    def __init__(self, spark: SparkSession, config: Config, query, state: ScorerState,
                 models: ModelCache):
        self.spark, self.config, self.query, self.state, self.models = spark, config, query, state, models
        self.topics = ScorerTopics.of(config)
        self._producer = None
        self._wakeup_sent_at = 0.0
        self._registry_checked_at = 0.0
        self._last_catch_up_answer = False

    def failure(self) -> str | None:
        """Why the query ended, if it ended on an error (a requested stop is not an error)."""
        if self.query.isActive:
            return None
        exc = self.query.exception()
        if exc is None or _STOP_MARKER in str(exc):
            return None
        return _first_line(exc) if not hasattr(exc, "desc") else str(exc.desc).splitlines()[0]

    def catch_up_possible(self) -> bool:
        """Pending rows exist and the production version may score them (asks the registry)."""
        if self.state.pending_unscored <= 0:
            return False
        now = time.monotonic()
        if now - self._registry_checked_at < self.config.streaming.alias_check_seconds:
            return self._last_catch_up_answer
        self._registry_checked_at = now
        try:
            version = production_version(self.config)
        except RegistryUnreachable:
            version = None
        failed = self.models.failed_version()
        self._last_catch_up_answer = (version is not None and version != self.state.stalled_version
                                      and version != failed)
        return self._last_catch_up_answer

    def wake_up_if_needed(self) -> bool:
        """Start a micro-batch when pending rows could be caught up but no data arrives.

        Spark runs a batch only when a subscribed topic has new data, so an idle scorer
        would never catch up; a tiny message on the scorer's own wake-up topic makes it run one.
        """
        state = self.state
        if state.in_batch or state.pending_unscored <= 0:
            return False
        now = time.monotonic()
        if now - state.last_batch_ended_at < max(self.config.streaming.trigger_seconds, 0.5):
            return False
        if self._wakeup_sent_at > state.last_batch_started_at:
            return False  # one outstanding wake-up is enough
        if not self.catch_up_possible():
            return False
        if self._producer is None:
            from learnscore.core.kafka_io import producer

            self._producer = producer(self.config)
        self._producer.send(self.topics.wakeups, value=b'{"reason": "catch-up"}').get(timeout=30)
        self._wakeup_sent_at = time.monotonic()
        log.info("%d submissions wait to be scored and the stream is idle: woke it up",
                 state.pending_unscored)
        return True

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop after the micro-batch in flight (a batch that starts meanwhile writes nothing)."""
        self.state.request_stop()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.state.in_batch and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)
        self.query.stop()
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None


def start_scorer(spark: SparkSession, config: Config, hooks: Sequence[AfterScoringHook] = (),
                 models: ModelCache | None = None) -> Scorer:
    """Create topics and tables, count pending rows, start the query; return the running scorer."""
    import mlflow

    from learnscore.core.kafka_io import create_topics, spark_kafka_options
    from learnscore.core.lake import ensure_spark_tables

    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    mlflow.set_registry_uri(config.registry_uri)
    names = ScorerTopics.of(config)
    create_topics(config, [topics.SUBMISSIONS, topics.OUTCOMES, topics.ENDPOINT_REQUESTS,
                           topics.SCORES, topics.SCORER_WAKEUPS])
    ensure_spark_tables(spark, config, STREAM_TABLES)
    _quiet_checkpoint_release_warnings(spark)
    state = ScorerState(pending_unscored=count_pending(spark, config))
    if state.pending_unscored:
        log.info("%d landed submissions have no prediction yet; they are scored as soon as a "
                 "production model is available", state.pending_unscored)
    models = models or ModelCache(spark, config)
    writer_ids = WriterIds()
    handler = make_batch_handler(spark, config, models=models, state=state, writer_ids=writer_ids,
                                 pseudonym_key=Secrets(config).pseudonym_key.get_secret_value(),
                                 hooks=hooks)
    streaming = config.streaming
    source = (spark.readStream.format("kafka").options(**spark_kafka_options(config))
              .option("subscribe", ",".join(names.subscribed))
              .option("startingOffsets", streaming.starting_offsets)
              .option("maxOffsetsPerTrigger", str(streaming.max_offsets_per_trigger))
              .load())
    writer = (source.writeStream.queryName(f"learnscore-{QUERY_NAME}")
              .option("checkpointLocation", config.checkpoint_path(QUERY_NAME))
              .foreachBatch(handler))
    if streaming.trigger_seconds > 0:
        writer = writer.trigger(processingTime=f"{streaming.trigger_seconds} seconds")
    query = writer.start()
    writer_ids.set_query_id(query.id)
    log.info("scorer query %s started: %s → Delta under %s", query.id, ", ".join(names.subscribed[:3]),
             config.lake.root)
    return Scorer(spark, config, query, state, models)


def with_task_retries(config: Config, attempts: int = 4) -> Config:
    """``local[N]`` → ``local[N,attempts]``: let a local task be retried.

    Ctrl-C sends SIGINT to the terminal's whole process group. The JVM ignores it, but
    PySpark's UDF workers turn it into KeyboardInterrupt, which fails the task in flight;
    local mode tries a task once, so the micro-batch would fail. Retried, the task runs again
    in a fresh worker, the batch completes, and the scorer stops cleanly after it.

    >>> from learnscore.core.config import Config
    >>> with_task_retries(Config()).spark.master
    'local[2,4]'
    """
    match = re.fullmatch(r"local\[(\d+|\*)\]", config.spark.master.replace(" ", ""))
    if not match:
        return config
    master = f"local[{match.group(1)},{attempts}]"
    return config.model_copy(update={"spark": config.spark.model_copy(update={"master": master})})


@dataclass
class RunSummary:
    batches: int
    stopped_because: str
    pending_unscored: int


def run_scorer(config: Config, *, until_idle_s: float | None = None, max_batches: int | None = None,
               handle_signals: bool = True, hooks: Sequence[AfterScoringHook] = (),
               stop: threading.Event | None = None) -> RunSummary:
    """Run the scorer until a signal (SIGINT/SIGTERM), ``stop`` is set, ``until_idle_s`` without
    new data and nothing left to catch up, or ``max_batches`` micro-batches. Stops after the
    batch in flight."""
    import os

    from learnscore.core.spark import create_spark_session

    # A registry that stalls must not stall the stream for minutes (MLflow retries 7 times).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    spark = create_spark_session(with_task_retries(config), app_name="learnscore-scorer")
    stop_signal = stop or threading.Event()
    previous = {}
    if handle_signals:
        def on_signal(signum, _frame):
            if stop_signal.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                raise KeyboardInterrupt
            log.info("%s: stopping after the micro-batch in flight", signal.Signals(signum).name)
            stop_signal.set()

        # After the SparkSession: PySpark installs its own SIGINT handler that cancels jobs.
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    scorer = start_scorer(spark, config, hooks=hooks)
    reason, wait_for_batch_s = "stopped", None
    try:
        while True:
            failure = scorer.failure()
            if failure:
                raise ScorerFailed(f"the scorer query failed: {failure}")
            if not scorer.query.isActive:
                reason = "query ended"
                break
            if stop_signal.is_set():
                reason = "signal"
                break
            if max_batches is not None and scorer.state.batches >= max_batches:
                reason = f"{max_batches} batches"
                break
            # Idle only once a trigger has looked at Kafka (it reports progress, with data or
            # not): a slow start-up is not idleness, and would stop before the first batch.
            if (until_idle_s is not None and scorer.state.idle_for() >= until_idle_s
                    and scorer.query.lastProgress is not None and not scorer.catch_up_possible()):
                reason = f"idle for {until_idle_s:g}s"
                break
            scorer.wake_up_if_needed()
            try:
                scorer.query.awaitTermination(0.5)
            except Exception:  # noqa: BLE001 - reported through failure() on the next turn
                pass
    except KeyboardInterrupt:
        reason, wait_for_batch_s = "second signal", 0.0
    finally:
        scorer.stop(timeout_s=wait_for_batch_s)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("scorer stopped (%s) after %d batches; %d submissions wait to be scored",
             reason, scorer.state.batches, scorer.state.pending_unscored)
    return RunSummary(scorer.state.batches, reason, scorer.state.pending_unscored)
