"""The streaming scorer: four Structured Streaming queries (five with a challenger) in one driver.

Users feel two latencies: the score reaching the application and the row reaching BI. So the
path from an event to its score commits no Delta table, and the Delta side lands apart from it:

================  ====================================================  ===========================
query             reads → writes                                          why apart
================  ====================================================  ===========================
``score``         submissions → ``diagnostic.scores`` (+ retries,          seconds from event to score:
                  progress); decode, dedupe (state), model UDF, one         no Delta commit on the way
                  Kafka write (streaming/scoring.py)
``land``          submissions, outcomes, request log, the others'          bronze, silver, quarantine,
                  progress → Delta (streaming/landing.py)                  ops: exactly once, in bulk
``gold``          ``diagnostic.scores`` → ``gold.predictions`` + drift      gold is what was published
                  (+ progress; streaming/gold.py)
``pairs``         scores ⋈ outcomes (state) → ``gold.prediction_outcomes``  no table probe per batch
                  + concept drift (+ progress; streaming/pairs.py)
``shadow``        submissions → challengers' UDFs → ``streaming.shadow-      a challenger never delays
                  scores`` (streaming/shadow.py; when shadow_aliases)       a learner's score
================  ====================================================  ===========================

Each query has its own checkpoint (``<lake.checkpoints>/scorer/<query>``) and FAIR scheduler
pool (weights from ``spark.scheduler_pools``: the scoring pool's is the highest), so a
seconds-long Delta commit does not hold up a score. Dedupe and pairing state live in Spark's
RocksDB state store; no batch reads a table, so a batch costs the same with 0 or 10 million rows
landed.

One process per query: a lease per query checkpoint (``streaming.lease``) refuses a second one.
The queries share nothing but Kafka and the tables, so ``streaming.queries`` may split them over two
processes: ``score`` in one, ``land,gold,pairs`` in another at a higher niceness. On few cores the
OS then hands the CPU to the scores first, which FAIR pools cannot inside one JVM (a running task
keeps its core, and a Delta commit is driver work). Kafka outputs are at-least-once with stable
ids; every Delta write is an idempotent append per (write, batch).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import SparkSession

from learnscore.core.config import Config, Secrets
from learnscore.core.waiting import WaitTimedOut, wait_until
from learnscore.streaming import gold, landing, pairs, scoring, shadow
from learnscore.streaming.lag import LagWatch, StreamLag, alert_stream_lag
from learnscore.streaming.lease import LeaseSet
from learnscore.streaming.model_cache import ModelCache
from learnscore.streaming.progress import ProgressPublisher
from learnscore.streaming.runtime import STOP_MARKER, QueryRuntime, ScorerHooks, ScorerTopics

log = logging.getLogger(__name__)

QUERY_NAME = "scorer"
LAG_CHECK_S = 5.0  # how often the run loop looks for lag (a broker call only while rows wait)
QUERIES = (scoring.QUERY, landing.QUERY, gold.QUERY, pairs.QUERY)
# The queries whose batch reports go through the progress topic to the landing query (progress.py).
PUBLISHING = (scoring.QUERY, gold.QUERY, pairs.QUERY)
# The Delta tables each query writes: a process creates those of the queries it runs (the
# scoring query writes none), so the two halves of a split scorer never race to create one.
QUERY_TABLES = {landing.QUERY: landing.TABLES, gold.QUERY: gold.TABLES,
                pairs.QUERY: ("gold.prediction_outcomes", "gold.shadow_prediction_outcomes")}


def failure_summary(text: str, fallback: str) -> str:
    """A query's error in one line: its first line, and when a Python traceback follows (a
    ``foreachBatch`` handler raised), the exception it ends with, which is what says why."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip():
        return fallback
    head = lines[0].strip()
    if "Traceback (most recent call last)" not in text:
        return head
    python = []
    for line in lines[1:]:
        if re.match(r"\s*at [\w$.<>]+\(", line):  # the JVM's stack follows the Python traceback
            break
        python.append(line)
    raised = [line.strip() for line in python if line.strip() and not line[0].isspace()]
    return f"{head} … {raised[-1][:500]}" if raised else head


def count_words(count: int | None) -> str:
    """A count for a message; None (the broker could not say) as words."""
    return "an unknown number of" if count is None else str(count)


class ScorerFailed(RuntimeError):
    pass


def scorer_checkpoint(config: Config, query: str | None = None) -> str:
    """``<lake.checkpoints>/scorer[/<query>]``."""
    base = config.checkpoint_path(QUERY_NAME)
    return base if query is None else f"{base}/{query}"


@dataclass
class Scorer:
    """The running queries: :meth:`failure`, :meth:`tick` from the run loop, :meth:`stop` to end them."""

    spark: SparkSession
    config: Config
    queries: dict
    runtimes: dict[str, QueryRuntime]
    models: ModelCache
    catch_up: scoring.RetryCatchUp
    lease: LeaseSet
    progress: ProgressPublisher
    shadow_models: dict[str, ModelCache] = field(default_factory=dict)  # alias → cache (shadow query)
    _last_catch_up_check: float = 0.0
    _positions: dict = field(default_factory=dict)
    _last_loss_check: float = 0.0
    _lag: LagWatch | None = None
    _lag_report: object = None  # the scoring report the lag watch saw last
    _last_lag_check: float = 0.0

    def model_caches(self) -> list[ModelCache]:
        """Production's model cache, then each challenger's."""
        return [self.models, *self.shadow_models.values()]

    @property
    def state(self) -> QueryRuntime:
        """The scoring query's runtime (batches, reports, last report)."""
        return self.runtimes[scoring.QUERY]

    @property
    def scores(self) -> bool:
        """Whether this process runs the scoring query (``streaming.queries``)."""
        return scoring.QUERY in self.queries

    @property
    def main(self) -> str:
        """The query whose batches ``--max-batches`` counts: the scoring one, else the first run."""
        return scoring.QUERY if self.scores else next(iter(self.queries))

    @property
    def query(self):
        return self.queries[self.main]

    def failure(self) -> str | None:
        """Why a query ended, if one ended on an error (a requested stop is not an error)."""
        for name, query in self.queries.items():
            if query.isActive:
                continue
            exc = query.exception()
            if exc is None or STOP_MARKER in str(exc):
                continue
            return f"{name}: {failure_summary(str(getattr(exc, 'desc', exc)), type(exc).__name__)}"
        return None

    def batches(self, query: str | None = None) -> int:
        return self.runtimes[query or self.main].batches

    def idle_for(self) -> float:
        """Seconds since any query last read a row (0 while one is in a batch)."""
        return min(runtime.idle_for() for runtime in self.runtimes.values())

    def all_started(self) -> bool:
        return all(query.lastProgress is not None for query in self.queries.values())

    def tick(self) -> None:
        """Called from the run loop: catch up waiting rows when the stream is idle; check Kafka
        retention against the queries' positions; alert when the stream lags (:meth:`check_lag`)."""
        now = time.monotonic()
        if self.scores and now - self._last_catch_up_check >= max(self.config.streaming.alias_check_seconds, 1.0):
            self._last_catch_up_check = now
            runtime = self.runtimes[scoring.QUERY]
            if not runtime.in_batch:
                try:
                    model = self.models.refresh().model
                    if self.catch_up.due(model):
                        self.catch_up.run_reported(model, runtime.query_id, self.progress)
                except Exception as exc:  # noqa: BLE001 - the next tick (or batch) tries again
                    log.warning("catch-up of waiting submissions failed (tried again later): %s", exc)
        if self.scores and now - self._last_lag_check >= LAG_CHECK_S:
            self._last_lag_check = now
            try:
                for lag in self.check_lag():
                    alert_stream_lag(lag)
            except Exception as exc:  # noqa: BLE001 - a check, not the stream: tried again next tick
                log.warning("the stream-lag check failed (tried again in %.0f s): %s", LAG_CHECK_S, exc)
        if now - self._last_loss_check >= self.config.streaming.data_loss_check_seconds:
            self._last_loss_check = now
            try:
                check_data_loss(self)
            except Exception as exc:  # noqa: BLE001 - a check, not the stream: tried again next time
                log.warning("the data-loss check failed (tried again in %.0f s): %s",
                            self.config.streaming.data_loss_check_seconds, exc)

    def check_lag(self, now: datetime | None = None) -> list[StreamLag]:
        """Feed the lag watch (``streaming/lag.py``) the scoring query's newest batch report — its
        median event → score latency and the submissions left waiting — or, with no new batch while
        submissions wait, the waiting count from Kafka; return what lags beyond
        ``alerts.stream_lag_seconds``."""
        if self._lag is None:
            self._lag = LagWatch(self.config.alerts.stream_lag_seconds)
        report = self.state.last_report
        latency_s = pending = batch_id = None
        if report is not None and report is not self._lag_report:
            self._lag_report = report
            latency_s, pending, batch_id = report.latency_p50_s, report.pending_unscored, report.batch_id
        elif self._lag.waiting:
            try:
                pending = self.catch_up.pending()
            except Exception as exc:  # noqa: BLE001 - unknown: the wait's clock keeps running
                log.debug("could not count waiting submissions for the lag check: %s", exc)
        return self._lag.observe(now or datetime.now(timezone.utc), latency_s=latency_s, pending=pending,
                                 batch_id=batch_id)

    def pending_unscored(self) -> int | None:
        """Valid submissions waiting on the retries topic for a version that can score them."""
        return scoring._safe_pending(self.catch_up)

    def catch_up_due(self) -> bool:
        try:
            return self.catch_up.due(self.models.model)
        except Exception:  # noqa: BLE001 - unknown: not due
            return False

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop after the micro-batches in flight (a batch that starts meanwhile writes nothing).

        In three steps: the queries that read submissions (score, shadow) stop first; gold and
        pairs then land what those published until they have been idle for a few triggers, at
        most ``streaming.stop_drain_seconds``, and stop; the landing query last, once it has read
        the progress topic to its end (what gold and pairs reported) — so a stopped scorer leaves
        no published score or progress record unlanded. ``timeout_s`` (a second signal) skips
        the waits.
        """
        upstream = [name for name in (scoring.QUERY, shadow.QUERY) if name in self.runtimes]
        self._stop_queries(upstream, timeout_s)
        middle = [name for name in (gold.QUERY, pairs.QUERY) if name in self.runtimes]
        rest = [name for name in self.runtimes if name not in upstream]
        if timeout_s is None and rest:
            settle = 2.0 + 2 * max(self.config.streaming.trigger_seconds, self.config.streaming.landing_trigger_seconds)
            self._drain(lambda: min(self.runtimes[name].idle_for() for name in rest) >= settle,
                        "the landing queries to go idle")
        self._stop_queries(middle, timeout_s)
        if timeout_s is None and landing.QUERY in self.runtimes and (upstream or middle):
            ends = self._progress_ends()
            if ends:
                self._drain(lambda: self._read_to(landing.QUERY, ends),
                            "the landing query to land the progress records")
        self._stop_queries([name for name in rest if name not in middle], timeout_s)
        self.progress.close()
        self.catch_up.close()
        self.lease.release()

    def _drain(self, done: Callable[[], bool], what: str) -> None:
        try:
            wait_until(lambda: self.failure() or done(), self.config.streaming.stop_drain_seconds, what,
                       interval_s=0.2)
        except WaitTimedOut as exc:
            log.warning("stopping: %s; what they had not landed yet is landed on restart", exc)

    def _progress_ends(self) -> dict[int, int]:
        """The progress topic's end offsets (empty when the broker cannot say: no wait then)."""
        from learnscore.core.kafka_io import consumer, end_offsets

        try:
            client = consumer(self.config)
            try:
                return end_offsets(client, ScorerTopics.of(self.config).progress)
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - the broker may be away: stop without the wait
            log.info("stopping: the progress topic's end offsets are unknown (%s); what is not landed "
                     "yet is landed on restart", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            return {}

    def _read_to(self, name: str, ends: dict[int, int]) -> bool:
        """Query ``name`` has finished a batch that read the progress topic up to ``ends``."""
        import json

        topic = ScorerTopics.of(self.config).progress
        if self.runtimes[name].in_batch:
            return False
        for source in (self.queries[name].lastProgress or {}).get("sources", []):
            end = source.get("endOffset")
            end = json.loads(end) if isinstance(end, str) else end
            if isinstance(end, dict) and topic in end:
                read = {int(p): int(o) for p, o in end[topic].items()}
                return all(read.get(p, 0) >= offset for p, offset in ends.items())
        return not any(ends.values())

    def _committed(self, name: str) -> bool:
        """Spark has recorded (committed) the last batch this query's handler finished."""
        last = self.runtimes[name].last_report
        progress = self.queries[name].lastProgress
        return last is None or (progress is not None and progress.get("batchId", -1) >= last.batch_id)

    def _stop_queries(self, names: list[str], timeout_s: float | None) -> None:
        for name in names:
            self.runtimes[name].request_stop()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (any(self.runtimes[name].in_batch for name in names)
               and (deadline is None or time.monotonic() < deadline)):
            time.sleep(0.1)
        # Spark writes a batch's commit after our handler returned: stopping in between leaves
        # that batch to be run again on restart (harmless, but it is work and its notes are lost).
        commit_wait_s = 10.0 if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            wait_until(lambda: all(self._committed(name) for name in names), commit_wait_s,
                       "Spark to commit the last batches", interval_s=0.1)
        except WaitTimedOut as exc:
            log.info("stopping %s: %s (that batch runs again, as a replay, on restart)", ", ".join(names), exc)
        for name in names:
            try:
                self.queries[name].stop()
            except Exception as exc:  # noqa: BLE001 - stopping the others matters more
                log.warning("stopping the %s query: %s", name, exc)


def _production_bank(config: Config):
    """What judges silver's effort flags: production's item bank (None with psychometrics off)."""
    if not config.psychometrics.enabled:
        return None
    from learnscore.registry.artifacts import production_item_bank

    return production_item_bank(config)


def scorer_leases(config: Config) -> tuple[list[str], LeaseSet]:
    """The queries this process runs (``streaming.queries``, the shadow query beside ``score``)
    and a lease per query checkpoint: the queries may run in two processes, one query never in two."""
    selected = [name for name in QUERIES if name in config.streaming.queries]
    names_run = selected + ([shadow.QUERY] if scoring.QUERY in selected and config.streaming.shadow_aliases else [])
    return names_run, LeaseSet([scorer_checkpoint(config, name) for name in names_run],
                               ttl_seconds=config.streaming.lease_ttl_seconds)


def start_scorer(spark: SparkSession, config: Config, hooks: ScorerHooks | None = None,
                 models: ModelCache | None = None, drift: bool = True, lease: LeaseSet | None = None) -> Scorer:
    """Take the leases, create topics and tables, start the queries of ``streaming.queries`` (all
    four by default, the shadow query with ``score``); return the running scorer.

    ``hooks`` default to the drift detectors (``drift.enabled``); ``drift=False`` runs none.
    ``lease``: the leases :func:`scorer_leases` gave, already acquired (taken here otherwise).
    """
    import mlflow

    from learnscore.core.kafka_io import create_topics
    from learnscore.core.lake import ensure_spark_tables
    from learnscore.schemas.topics import RETRAIN_REQUESTS

    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    mlflow.set_registry_uri(config.registry_uri)
    names_run, leases = scorer_leases(config)
    selected = [name for name in names_run if name in QUERIES]
    if lease is None:
        lease = leases
        lease.acquire()
    try:
        # The drift hook writes retrain requests: created here too, for brokers that do not auto-create.
        create_topics(config, [*ScorerTopics.BASE_NAMES, RETRAIN_REQUESTS])
        tables = dict.fromkeys(table for name in selected for table in QUERY_TABLES.get(name, ()))
        if tables:
            ensure_spark_tables(spark, config, tables)
        # One registry lookup and bank for silver and the item watch; a score-only process needs neither.
        production_bank = _production_bank(config) if set(selected) - {scoring.QUERY} else None
        if hooks is None:
            hooks = ScorerHooks()
            if drift and (config.drift.enabled or config.psychometrics.enabled) and set(selected) - {scoring.QUERY}:
                from learnscore.streaming.drift.hook import drift_hooks

                hooks = drift_hooks(config, scorer_checkpoint(config, gold.QUERY),
                                    scorer_checkpoint(config, pairs.QUERY), spark=spark,
                                    land_checkpoint=scorer_checkpoint(config, landing.QUERY),
                                    production_bank=production_bank)
        names = ScorerTopics.of(config)
        key = Secrets(config).pseudonym_key.get_secret_value()
        models = models or ModelCache(spark, config)
        publisher = ProgressPublisher(config, names)
        runtimes = {name: QueryRuntime(name, config, scorer_checkpoint(config, name),
                                       publisher=publisher if name in PUBLISHING else None)
                    for name in names_run}
        catch_up = scoring.RetryCatchUp(spark, config, names, scorer_checkpoint(config, scoring.QUERY))
        builders = {
            scoring.QUERY: lambda: (scoring.scoring_stream(spark, config, names),
                                    scoring.make_scoring_handler(spark, config, runtimes[scoring.QUERY], models,
                                                                 catch_up),
                                    config.streaming.trigger_seconds),
            landing.QUERY: lambda: (landing.landing_stream(spark, config, names),
                                    landing.make_landing_handler(spark, config, runtimes[landing.QUERY],
                                                                 hooks.submissions, production_bank),
                                    config.streaming.landing_trigger_seconds),
            gold.QUERY: lambda: (gold.gold_stream(spark, config, names),
                                 gold.make_gold_handler(spark, config, runtimes[gold.QUERY], key, hooks.predictions),
                                 config.streaming.landing_trigger_seconds),
            pairs.QUERY: lambda: (pairs.pairs_stream(spark, config, names),
                                  pairs.make_pairs_handler(spark, config, runtimes[pairs.QUERY], key, hooks.pairs),
                                  config.streaming.landing_trigger_seconds),
        }
        plans = {name: builders[name]() for name in selected}
        shadow_models = {alias: ModelCache(spark, config, alias=alias) for alias in config.streaming.shadow_aliases}
        if shadow.QUERY in runtimes:
            # No dedupe state here: a redelivered submission scored twice in shadow is dropped
            # by gold and the pairs (first per alias and submission), and a batch with no
            # challenger may then return without reading its rows.
            plans[shadow.QUERY] = (scoring.scoring_stream(spark, config, names, dedupe=False),
                                   shadow.make_shadow_handler(spark, config, runtimes[shadow.QUERY], models,
                                                              shadow_models),
                                   config.streaming.landing_trigger_seconds)
        for name in runtimes:  # a restart after an outage longer than the topics' retention
            positions = checkpoint_positions(scorer_checkpoint(config, name))
            if positions:
                _report_loss(runtimes[name], lost_messages(positions, _beginnings(config, positions), name))
        queries = {}
        context = spark.sparkContext
        for name, (plan, handler, trigger_s) in plans.items():
            # The pool applies to every job of the query, those inside foreachBatch included.
            context.setLocalProperty("spark.scheduler.pool", name)
            writer = (plan.writeStream.queryName(f"learnscore-{name}")
                      .option("checkpointLocation", scorer_checkpoint(config, name))
                      .foreachBatch(handler))
            if trigger_s > 0:
                writer = writer.trigger(processingTime=f"{trigger_s} seconds")
            queries[name] = writer.start()
            runtimes[name].set_query_id(queries[name].id)
        context.setLocalProperty("spark.scheduler.pool", None)
    except BaseException:
        lease.release()
        raise
    lease.start_renewing()
    log.info("scorer started: %s → scores on %s, Delta under %s", names.submissions, names.scores, config.lake.root)
    return Scorer(spark, config, queries, runtimes, models, catch_up, lease, publisher,
                  shadow_models)


def checkpoint_positions(checkpoint: str) -> dict[tuple[str, int], int]:
    """Where a query's checkpoint says it goes on reading: the offsets of its last planned batch
    (the ``offsets/<batch>`` file: a version line, metadata, then one JSON line per source)."""
    import json

    folder = Path(checkpoint.removeprefix("file://")) / "offsets"
    batches = sorted((int(p.name) for p in folder.glob("[0-9]*") if p.name.isdigit()), reverse=True) \
        if folder.is_dir() else []
    if not batches:
        return {}
    positions: dict[tuple[str, int], int] = {}
    for line in (folder / str(batches[0])).read_text().splitlines()[2:]:
        if line.strip().startswith("{"):
            positions.update(_offsets(json.loads(line)))
    return positions


def lost_messages(positions: dict[tuple[str, int], int], beginnings: dict[tuple[str, int], int],
                  query: str) -> list[str]:
    """A message for each partition whose oldest retained offset is past where ``query`` reads next.

    >>> lost_messages({("t", 0): 10, ("t", 1): 4}, {("t", 0): 15, ("t", 1): 0}, "land")
    ["5 messages of t[0] (offsets 10–14) were deleted by Kafka's retention before the land query read them..."]
    """
    out = []
    for (topic, partition), position in sorted(positions.items()):
        first = beginnings.get((topic, partition), 0)
        if first > position:
            out.append(f"{first - position} messages of {topic}[{partition}] (offsets {position}–{first - 1}) were "
                       f"deleted by Kafka's retention before the {query} query read them: lost to it. Raise the "
                       f"topic's retention.ms above the longest outage you expect")
    return out


def _beginnings(config: Config, partitions) -> dict[tuple[str, int], int]:
    from kafka import TopicPartition

    from learnscore.core.kafka_io import consumer

    client = consumer(config)
    try:
        starts = client.beginning_offsets([TopicPartition(t, p) for t, p in partitions])
        return {(tp.topic, tp.partition): offset for tp, offset in starts.items()}
    finally:
        client.close()


def check_data_loss(scorer: Scorer) -> list[str]:
    """Messages Kafka deleted (retention) before a query read them: logged and returned.

    The sources run with ``failOnDataLoss=false``: after an outage longer than the topics'
    retention the scorer goes on from the oldest message still there rather than stopping for
    good. What was lost is not silent: each gap (topic, partition, offsets) is logged as an
    error and noted in that query's progress row. Checked at start (against the checkpoints)
    and every ``streaming.data_loss_check_seconds`` (against where each query reads next).
    """
    lost = []
    for name, query in scorer.queries.items():
        positions: dict[tuple[str, int], int] = {}
        for source in (query.lastProgress or {}).get("sources", []):
            positions.update(_offsets(source.get("endOffset")))
        if positions:
            found = lost_messages(positions, _beginnings(scorer.config, positions), name)
            lost += _report_loss(scorer.runtimes[name], found)
    return lost


def _report_loss(runtime: QueryRuntime, messages: list[str]) -> list[str]:
    for message in messages:
        log.error(message)
        runtime.notes.append(message)
    return messages


def _offsets(value) -> dict[tuple[str, int], int]:
    import json

    if not value:
        return {}
    data = json.loads(value) if isinstance(value, str) else value
    return {(topic, int(partition)): int(offset)
            for topic, parts in data.items() for partition, offset in parts.items()}


def with_task_retries(config: Config, attempts: int = 4) -> Config:
    """``local[N]`` → ``local[N,attempts]``: let a local task be retried.

    Ctrl-C sends SIGINT to the terminal's whole process group. The JVM ignores it, but
    PySpark's UDF workers turn it into KeyboardInterrupt, which fails the task in flight;
    local mode tries a task once, so the micro-batch would fail. Retried, the task runs again
    in a fresh worker, the batch completes, and the scorer stops cleanly after it.

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
    pending_unscored: int | None


def lower_priority(niceness: int) -> None:
    """Add ``niceness`` to this process's nice value and, where Linux groups the CPU by session
    (autogroup, on by default), to its session's group too.

    With autogroup, a nice value only ranks processes of one session: a scorer started in a
    session of its own (another terminal, a service) kept its full CPU share at +10
    (streaming/README.md, "One process or two", has the measurement). The group holds this
    whole session: run the process in one of its own.
    """
    import os

    os.nice(niceness)
    group = Path("/proc/self/autogroup")
    if not group.exists():
        return
    try:
        current = int(group.read_text().split("nice")[-1])
        group.write_text(str(min(19, current + niceness)))
    except (OSError, ValueError) as exc:
        log.warning("niceness +%d applies within this session only (its CPU group kept its share: %s)",
                    niceness, exc)


def run_scorer(config: Config, *, until_idle_s: float | None = None, max_batches: int | None = None,
               handle_signals: bool = True, hooks: ScorerHooks | None = None,
               stop: threading.Event | None = None) -> RunSummary:
    """Run the scorer until a signal (SIGINT/SIGTERM), ``stop`` is set, ``until_idle_s`` without
    new data in any query and nothing waiting to be caught up, or ``max_batches`` micro-batches
    of the scoring query. Stops after the batches in flight."""
    import os

    from learnscore.core.endpoints import announce_endpoint, withdraw_endpoint
    from learnscore.core.spark import create_spark_session

    # A registry that stalls must not stall the stream for minutes (MLflow retries 7 times).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    names_run, lease = scorer_leases(config)
    lease.acquire()  # before the JVM starts: a second process for a running query fails in a second
    try:
        if config.streaming.niceness:
            # Before the JVM starts: it and its Python workers inherit the lower priority.
            lower_priority(config.streaming.niceness)
        log.info("this scorer runs the %s queries%s", ", ".join(names_run),
                 f" at niceness +{config.streaming.niceness}" if config.streaming.niceness else "")
        spark = create_spark_session(with_task_retries(config), app_name=f"learnscore-scorer-{'-'.join(names_run)}")
    except BaseException:
        lease.release()
        raise
    stop_signal = stop or threading.Event()
    previous = {}
    if handle_signals:
        def on_signal(signum, _frame):
            if stop_signal.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                raise KeyboardInterrupt
            log.info("%s: stopping after the micro-batches in flight", signal.Signals(signum).name)
            stop_signal.set()

        # After the SparkSession: PySpark installs its own SIGINT handler that cancels jobs.
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    scorer = start_scorer(spark, config, hooks=hooks, lease=lease)
    reason, wait_for_batch_s = "stopped", None
    metrics = None
    try:
        if config.streaming.metrics_port:
            from learnscore.streaming.metrics import serve_metrics

            metrics = serve_metrics(scorer, config.streaming.metrics_host, config.streaming.metrics_port)
            announced = announce_endpoint(config, "stream-metrics", f"http://{config.streaming.metrics_host}:"
                                                                      f"{metrics.server_port}/metrics")
        while True:
            failure = scorer.failure()
            if failure:
                raise ScorerFailed(f"the scorer query failed: {failure}")
            if stop_signal.is_set():
                reason = "signal"
                break
            if max_batches is not None and scorer.batches() >= max_batches:
                reason = f"{max_batches} batches"
                break
            # Idle only once every query has looked at Kafka: a slow start-up is not idleness.
            if (until_idle_s is not None and scorer.all_started() and scorer.idle_for() >= until_idle_s
                    and not scorer.catch_up_due()):
                reason = f"idle for {until_idle_s:g}s"
                break
            scorer.tick()
            try:
                scorer.query.awaitTermination(0.5)
            except Exception:  # noqa: BLE001 - reported through failure() on the next turn
                pass
    except KeyboardInterrupt:
        reason, wait_for_batch_s = "second signal", 0.0
    finally:
        if metrics is not None:
            metrics.shutdown()
            withdraw_endpoint(announced)
        scorer.stop(timeout_s=wait_for_batch_s)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    pending = scoring._safe_pending(scorer.catch_up)
    log.info("scorer stopped (%s) after %d %s batches; %s submissions wait to be scored", reason,
             scorer.batches(), scorer.main, count_words(pending))
    return RunSummary(scorer.batches(), reason, pending)
