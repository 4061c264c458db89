"""What every query of the scorer shares: its topics, its per-batch bookkeeping, its progress.

A :class:`QueryRuntime` belongs to one query. Its :meth:`QueryRuntime.batch` context wraps one
micro-batch: it refuses to start a batch once a stop was asked (the batch runs again on restart),
counts the attempt (``streaming.attempts``), hands the handler a :class:`BatchWriter` for its
exactly-once appends and a :class:`BatchReport` to fill in, and records when the batch ended
(the runner's idle and status checks read that, from the main thread, under a lock).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from learnscore.core.config import Config
from learnscore.schemas import topics
from learnscore.schemas.tables import STREAM_PROGRESS
from learnscore.streaming.attempts import AttemptLog
from learnscore.streaming.progress import BatchReport, ProgressPublisher
from learnscore.streaming.sinks import BatchWriter

log = logging.getLogger(__name__)

STOP_MARKER = "learnscore-stop-requested"
# BatchReport counters summed per query for the scorer's /metrics (streaming/metrics.py).
COUNTED = ("rows_read", "scored", "quarantined", "duplicates", "failed", "outcomes", "endpoint_requests")


class StopRequested(RuntimeError):
    """Raised by a batch that starts after a stop was asked: it wrote nothing, and Spark runs
    it again (same offsets) when the scorer restarts."""

    def __init__(self):
        super().__init__(f"{STOP_MARKER}: the scorer is stopping; this batch runs again on restart")


@dataclass(frozen=True)
class ScorerTopics:
    """Deployed names of the topics the scorer reads and writes."""

    submissions: str
    outcomes: str
    requests: str
    scores: str
    retries: str
    progress: str
    shadow: str

    @classmethod
    def of(cls, config: Config) -> ScorerTopics:
        return cls(submissions=config.topic(topics.SUBMISSIONS), outcomes=config.topic(topics.OUTCOMES),
                   requests=config.topic(topics.ENDPOINT_REQUESTS), scores=config.topic(topics.SCORES),
                   retries=config.topic(topics.SCORE_RETRIES), progress=config.topic(topics.SCORER_PROGRESS),
                   shadow=config.topic(topics.SHADOW_SCORES))

    BASE_NAMES = (topics.SUBMISSIONS, topics.OUTCOMES, topics.ENDPOINT_REQUESTS, topics.SCORES,
                  topics.SCORE_RETRIES, topics.SCORER_PROGRESS, topics.SHADOW_SCORES)


@dataclass(frozen=True)
class ScorerHooks:
    """What runs after the Delta side landed a batch: ``predictions(batch_id, gold_rows)`` on gold
    rows (with the submissions' signals), ``pairs(batch_id, pair_rows)`` on prediction–outcome
    pairs and ``submissions(batch_id, silver_rows)`` on the new valid submissions (with their
    responses). Drift detection plugs in here (``streaming/drift/hook.py``, ``drift/items.py``)."""

    predictions: Sequence[Callable] = ()
    pairs: Sequence[Callable] = ()
    submissions: Sequence[Callable] = ()


def run_hook(hook: Callable, batch_id: int, rows, report: BatchReport, query: str) -> None:
    """A failing hook never stops the stream: logged, noted in the progress row, tried on the next batch."""
    name = getattr(hook, "__name__", "hook")
    try:
        with timed(report, f"hook.{name}"):
            hook(batch_id, rows)
    except Exception as exc:  # noqa: BLE001 - isolation is the point (issue: hooks never kill the stream)
        log.error("%s hook %s failed on batch %s (the stream goes on): %s", query, name, batch_id, exc)
        report.note(f"hook {name} failed: {str(exc)[:200]}")


@contextmanager
def timed(report: BatchReport, stage: str) -> Iterator[None]:
    """Wall time per stage, for the log and the benchmark's "where does the time go"."""
    started = time.monotonic()
    try:
        yield
    finally:
        report.timings[stage] = report.timings.get(stage, 0.0) + time.monotonic() - started


@dataclass
class QueryRuntime:
    """Per-query state the handler (stream thread) and the runner (main thread) share."""

    name: str
    config: Config
    checkpoint: str
    query_id: str | None = None
    batches: int = 0  # finished in this run
    rows_read_total: int = 0
    in_batch: bool = False
    stopping: bool = False
    last_rows_at: float = field(default_factory=time.monotonic)
    last_batch_ended_at: float = field(default_factory=time.monotonic)
    last_report: BatchReport | None = None
    # Set: this query's batch reports go to the progress topic for the landing query to land
    # (progress.py); unset (the landing query): appended to ops.stream_progress here.
    publisher: ProgressPublisher | None = None
    reports: deque = field(default_factory=lambda: deque(maxlen=10_000), repr=False)
    writes_since_compaction: dict = field(default_factory=dict, repr=False)  # table → appends
    notes: list = field(default_factory=list, repr=False)  # for the next batch's progress row
    _carried: list = field(default_factory=list, repr=False)  # notes the batch in flight took
    totals: dict = field(default_factory=dict, repr=False)  # counter → sum over this run (/metrics)
    _ready: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_query_id(self, query_id: str) -> None:
        self.query_id = str(query_id)
        self._ready.set()

    def request_stop(self) -> None:
        with self._lock:
            self.stopping = True

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self.in_batch else time.monotonic() - self.last_rows_at

    @contextmanager
    def batch(self, batch_id: int) -> Iterator[tuple[BatchWriter, BatchReport, int]]:
        with self._lock:
            if self.stopping:
                raise StopRequested()
            self.in_batch = True
        started = time.monotonic()
        try:
            # The first batch may start before start() returned the query (and its id) to us.
            if not self._ready.wait(timeout=120):
                raise RuntimeError(f"the {self.name} query's id was never set")
            attempts = AttemptLog(self.checkpoint)
            attempt = attempts.failed_before(batch_id) + 1
            report = BatchReport(self.name, int(batch_id), datetime.now(timezone.utc), query_id=self.query_id)
            with self._lock:
                self._carried, self.notes = list(self.notes), []
                report.notes.extend(self._carried)
            writer = BatchWriter(self.config, self.name, self.query_id, batch_id, first_of_run=self.batches == 0,
                                 on_write=self.count_write)
            try:
                yield writer, report, attempt
            except StopRequested:
                raise
            except Exception:
                attempts.failed(batch_id)  # a kill is not counted: only what the batch raised
                raise
            attempts.done()
            report.duration_s = time.monotonic() - started
            with self._lock:
                self.batches += 1
                self.rows_read_total += report.rows_read
                for counter in COUNTED:
                    self.totals[counter] = self.totals.get(counter, 0) + (getattr(report, counter) or 0)
                if report.rows_read:
                    self.last_rows_at = time.monotonic()
                self.last_report = report
                self.reports.append(report)
            log.info("%s (%.2fs)", report.summary(), report.duration_s)
            log.debug("%s batch %s stages: %s", self.name, batch_id,
                      ", ".join(f"{name} {seconds:.2f}s" for name, seconds in report.timings.items()))
        finally:
            with self._lock:
                self.in_batch = False
                self.last_batch_ended_at = time.monotonic()

    def count_write(self, table: str) -> None:
        self.writes_since_compaction[table] = self.writes_since_compaction.get(table, 0) + 1

    def compact_if_due(self, spark, report: BatchReport) -> None:
        """Compact the table this query wrote most often, once ``streaming.compact_after_writes``
        times since its last compaction (Delta OPTIMIZE of the small files each batch adds; one
        table a batch, between two batches of this query). No row changes; readers keep their
        snapshot; a crash here replays the batch's (skipped) writes, and maybe this."""
        from learnscore.streaming.sinks import compact

        every = self.config.streaming.compact_after_writes
        due = sorted(((n, table) for table, n in self.writes_since_compaction.items() if n >= every), reverse=True)
        if not every or not due:
            return
        table = due[0][1]
        try:
            with timed(report, f"compact.{table}"):
                removed, added = compact(spark, self.config, table)
        except Exception as exc:
            # Every query appends to ops.stream_progress and may compact it: two OPTIMIZEs of one
            # table conflict (Delta's Concurrent*Exception). Compaction changes no row, so the
            # loser skips it and tries again after its next batch.
            if "Concurrent" not in type(exc).__name__ and "DELTA_CONCURRENT" not in str(exc):
                raise
            log.info("%s: compaction of %s met a concurrent one; tried again after the next batch", self.name, table)
            return
        self.writes_since_compaction[table] = 0
        log.info("%s: compacted %s (%d small files into %d)", self.name, table, removed, added)

    def write_progress(self, spark, writer: BatchWriter, report: BatchReport, published=None) -> None:
        """This batch's ``ops.stream_progress`` row, once per batch: sent to the progress topic when
        the query has a :attr:`publisher`, else appended here together with ``published`` (the other
        queries' rows the landing query read in this batch: one commit for all of them)."""
        report.duration_s = report.duration_s or (time.monotonic() - _monotonic_of(report))
        if self.publisher is not None:
            with timed(report, "progress"):
                self.publisher.send(report)
        else:
            frame = spark.createDataFrame([report.row()], schema=STREAM_PROGRESS.ddl)
            if published is not None:
                frame = frame.unionByName(published)
            with timed(report, "ops.stream_progress"):
                written = writer.append(frame, "ops.stream_progress")
            if not written:  # a replay: its row was written before, without what this run noted since
                with self._lock:
                    self.notes[:0] = self._carried
        self.compact_if_due(spark, report)

    def saw_rows(self) -> None:
        """Count this batch as reading rows for :meth:`idle_for` even if no counter says so (the
        landing query reading the other queries' progress records)."""
        with self._lock:
            self.last_rows_at = time.monotonic()


def _monotonic_of(report: BatchReport) -> float:
    """When the report's batch started, on the monotonic clock (approximately)."""
    return time.monotonic() - (datetime.now(timezone.utc) - report.started_at).total_seconds()
