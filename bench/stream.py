"""``learnscore bench stream``: the scorer's two latencies, its drain, and its cost as tables grow.

Figures written to ``bench/results/stream.json`` (every query of the scorer running):

- ``score_latency_p50/p95/p99_s``: event time → the ``ScoreIssued`` record's Kafka timestamp,
  and ``gold_latency_p50/p95/p99_s``: event time → the commit of the event's ``gold.predictions``
  row (the Delta commit's timestamp), while submissions are produced live at 500/s and at 2,000/s
  (``latency_runs``);
- ``throughput_eps``: submissions per second draining a pre-loaded backlog (default 200,000
  simulated submissions, outcomes for half of them, 1% broken events and duplicates, request-log
  lines) through every table: bronze, silver, quarantine, ScoreIssued, gold, pairs, progress —
  from the start of the first micro-batch of any query to the end of the last;
- ``parse_only_eps``: Spark's ``from_json`` with the contract's schema + a count over the same
  backlog in the same session, and ``ratio_to_parse_only``;
- ``raw_model_eps``: featurize + predict of the same submissions in a plain Python loop;
- ``batch_cost_by_table_rows``: the seconds a micro-batch of each Delta query takes with 0, 1M and
  10M rows already in silver and gold (``--table-rows``);
- ``stage_seconds`` per query: where the drain's time goes (streaming/README.md reads them).

The backlog is generated and produced before the clock starts.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from learnscore.core.config import Config

log = logging.getLogger(__name__)


def machine() -> dict[str, Any]:
    """Cores, memory and CPU model of this machine (for the results file)."""
    import psutil

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu_model": model, "python": platform.python_version(),
            "load_average_at_start": _load_average()}


def _load_average() -> list[float]:
    """1, 5 and 15-minute load averages: the machine is shared, so the figures need them."""
    return [round(x, 2) for x in os.getloadavg()]


def percentiles(values: list[float], points=(50, 95, 99)) -> dict[int, float | None]:
    """Nearest-rank percentiles of ``values`` (None when empty).

    >>> percentiles([1.0, 2.0, 3.0, 4.0])
    {50: 2.0, 95: 4.0, 99: 4.0}
    """
    import math

    ordered = sorted(values)
    if not ordered:
        return {p: None for p in points}
    return {p: ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in points}


def write_result(result: dict[str, Any], output: str | Path) -> Path:
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


# -- the backlog -------------------------------------------------------------------------------


def produce_backlog(config: Config, events: int, seed: int = 2026) -> dict[str, int]:
    """Produce ``events`` simulated submissions (about 1% broken ones and duplicates mixed in),
    outcomes for the first half of them, and request-log lines; return counts per kind.

    Outcomes only for the first half: the Kafka source spreads ``maxOffsetsPerTrigger`` over
    partitions by their lag, so outcome *i* of a topic as long as the submissions topic could
    land one batch before submission *i* and be refused as an unknown submission. Offsets half
    as far along always come after their submission.
    """
    from datetime import timedelta

    from learnscore.core.kafka_io import create_topics, producer
    from learnscore.schemas import topics
    from learnscore.simulator.stream import OUTCOME, SUBMISSION, MessagePlan, StreamOptions, producer_compression

    create_topics(config, [topics.SUBMISSIONS, topics.OUTCOMES, topics.ENDPOINT_REQUESTS])
    rate = 5000.0
    options = StreamOptions(rate=rate, duration_s=events / rate, invalid_ratio=0.01,
                            outcome_delay_s=30.0, seed=seed, drain_outcomes=True)
    start = datetime.now(timezone.utc) - timedelta(hours=2)  # all event times in the past
    plan = MessagePlan(options, start, keep_truth=False)
    names = {topics.SUBMISSIONS: config.topic(topics.SUBMISSIONS),
             topics.OUTCOMES: config.topic(topics.OUTCOMES)}
    kafka = producer(config, linger_ms=20, batch_size=256 * 1024, compression_type=producer_compression())
    counts: dict[str, int] = {}
    began = time.monotonic()
    try:
        for message in plan:
            if message.kind == OUTCOME and counts.get(OUTCOME, 0) >= events // 2:
                continue
            kafka.send(names[message.topic], key=message.key, value=message.value)
            counts[message.kind] = counts.get(message.kind, 0) + 1
            if message.kind == SUBMISSION and counts[SUBMISSION] % 50_000 == 0:
                log.info("backlog: %d submissions produced (%.0f/s)", counts[SUBMISSION],
                         counts[SUBMISSION] / (time.monotonic() - began))
        requests = config.topic(topics.ENDPOINT_REQUESTS)
        for index in range(max(100, events // 100)):
            line = {"request_id": f"bench-{seed}-{index}", "received_at": start.isoformat(),
                    "status_code": 200 if index % 50 else 422, "latency_ms": 4.0 + index % 7,
                    "model_name": config.mlflow.model_name, "model_version": "1",
                    "route": "/v1/score", "items": 1, "error_code": None, "error": None}
            kafka.send(requests, key=line["request_id"].encode(), value=orjson.dumps(line))
        counts["request_log"] = max(100, events // 100)
        kafka.flush(timeout=300)
    finally:
        kafka.close(timeout=30)
    log.info("backlog produced in %.0fs: %s", time.monotonic() - began, counts)
    return counts


def sample_submissions(events: int, seed: int = 2026) -> list[dict]:
    """The first ``events`` valid submissions of the backlog (same seed), decoded."""
    from datetime import timedelta

    from learnscore.simulator.generator import Simulator

    simulator = Simulator(seed=seed, start=datetime.now(timezone.utc) - timedelta(hours=2),
                          interval_s=1 / 5000.0)
    return simulator.take(events).submissions


# -- a model to score with ---------------------------------------------------------------------


def register_production_model(config: Config, seed: int = 11, learners: int = 6000, alias: str = "production") -> str:
    """Fit the project's model on a small simulated history, register it, give it ``alias``.

    Returns the version. The benchmark measures the pipeline, not model quality, so the
    history is small; the model is the real one (same features, same packaging).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from learnscore.core.tracking import use_mlflow
    from learnscore.model.diagnostic import model_from_config
    from learnscore.model.features import model_input_from_events
    from learnscore.model.packaging import log_diagnostic_model
    from learnscore.registry.register import pinned_content_tags
    from learnscore.simulator.generator import Simulator

    use_mlflow(config)
    history = Simulator(seed=seed, start=datetime(2026, 1, 5, tzinfo=timezone.utc), interval_s=1.0,
                        run="bench-history").take(learners)
    model_input = model_input_from_events(history.submissions)
    model = model_from_config(config.model).fit(
        model_input, [o["observed_progress_score"] for o in history.outcomes],
        [o["observed_comprehension_level"] for o in history.outcomes])
    with mlflow.start_run(run_name="bench-stream-model"):
        model_uri = log_diagnostic_model(model, model_input)
    # Pinned like every registered version (registry/trust.py), so the stream loads it unwarned.
    version = mlflow.register_model(model_uri, config.mlflow.model_name,
                                    tags=pinned_content_tags(config, model_uri)).version
    MlflowClient().set_registered_model_alias(config.mlflow.model_name, alias, version)
    return str(version)


def raw_model_eps(config: Config, version: str, submissions: list[dict], chunk: int = 5000) -> float:
    """Featurize + predict ``submissions`` with the registered model in a plain Python loop."""
    import mlflow

    from learnscore.model.features import model_input_from_events

    model = mlflow.pyfunc.load_model(f"models:/{config.mlflow.model_name}/{version}")
    model.predict(model_input_from_events(submissions[:100]))  # warm up
    began = time.perf_counter()
    for start in range(0, len(submissions), chunk):
        model.predict(model_input_from_events(submissions[start:start + chunk]))
    return len(submissions) / (time.perf_counter() - began)


# -- the runs ----------------------------------------------------------------------------------


def _wait(predicate, timeout_s: float, what: str, scorer=None, interval_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if scorer is not None and scorer.failure():
            raise RuntimeError(f"the scorer failed during the benchmark: {scorer.failure()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark: timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def drain_figures(runtimes) -> dict[str, Any]:
    """Throughput and per-stage time of every query's micro-batches that drained the backlog."""
    reports = {name: [r for r in runtime.reports if r.rows_read or r.scored or r.outcomes]
               for name, runtime in runtimes.items()}
    every = [r for rs in reports.values() for r in rs]
    first = min(r.started_at.timestamp() for r in every)
    last = max(r.started_at.timestamp() + r.duration_s for r in every)
    seconds = last - first
    submissions = sum(r.submissions_valid for r in reports.get("land", []))
    return {
        "drain_seconds": round(seconds, 2),
        "throughput_eps": round(submissions / seconds, 1),
        "submissions_landed": submissions,
        "scored": sum(r.scored for r in reports.get("score", [])),
        "gold_rows": sum(r.scored for r in reports.get("gold", [])),
        "pairs": sum(r.outcomes for r in reports.get("pairs", [])),
        "quarantined": sum(r.quarantined for r in reports.get("land", [])),
        "batches": {name: len(rs) for name, rs in reports.items()},
        "query_seconds": {name: round(sum(r.duration_s for r in rs), 2) for name, rs in reports.items()},
        "stage_seconds": {name: stage_seconds(rs) for name, rs in reports.items()},
    }


def stage_seconds(reports, per_batch: bool = False) -> dict[str, float]:
    """Wall seconds per handler stage, summed over ``reports`` (or averaged per batch), largest first."""
    stages: dict[str, float] = {}
    for report in reports:
        for stage, value in report.timings.items():
            stages[stage] = stages.get(stage, 0.0) + value
    scale = 1 / max(1, len(reports)) if per_batch else 1.0
    return {k: round(v * scale, 3 if per_batch else 2) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])}


def score_latencies(config: Config, event_ids: set[str]) -> list[float]:
    """Seconds from each event's time to the Kafka timestamp of its first ``ScoreIssued``."""
    from learnscore.core.kafka_io import consumer
    from learnscore.schemas import topics

    seen: dict[str, float] = {}
    reader = consumer(config, config.topic(topics.SCORES), auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        for message in reader:
            event = orjson.loads(message.value)
            sid = event.get("submission_event_id")
            if sid in event_ids and sid not in seen:
                sent = datetime.fromisoformat(event["submission_time"]).timestamp()
                seen[sid] = message.timestamp / 1000 - sent
    finally:
        reader.close()
    return list(seen.values())


def gold_latencies(spark, config: Config, event_ids: set[str]) -> list[float]:
    """Seconds from each event's time to the Delta commit that made its gold row visible."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from learnscore.streaming.sinks import MARKER_PREFIX

    history = DeltaTable.forPath(spark, config.table_path("gold.predictions")).history().collect()
    committed = {int(h.userMetadata.rsplit("@", 1)[1]): h.timestamp.timestamp() for h in history
                 if h.userMetadata and h.userMetadata.startswith(MARKER_PREFIX)}
    ids = spark.createDataFrame([(event_id,) for event_id in event_ids], "event_id string")
    rows = (spark.read.format("delta").load(config.table_path("gold.predictions"))
            .join(F.broadcast(ids), "event_id").select("batch_id", "event_time").collect())
    return [committed[row.batch_id] - row.event_time.replace(tzinfo=timezone.utc).timestamp()
            for row in rows if row.batch_id in committed]


def parse_only_eps(spark, config: Config, messages: int) -> float:
    """``from_json`` with the contract's Spark schema + a count over the backlog's submissions."""
    from pyspark.sql import functions as F

    from learnscore.core.kafka_io import spark_kafka_options
    from learnscore.schemas import topics
    from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED

    raw = (spark.read.format("kafka").options(**spark_kafka_options(config))
           .option("subscribe", config.topic(topics.SUBMISSIONS)).option("startingOffsets", "earliest").load())
    parsed = raw.select(F.from_json(F.col("value").cast("string"), DIAGNOSTIC_SUBMITTED.spark_schema()).alias("e"))
    began = time.perf_counter()
    count = parsed.where(F.col("e.event_id").isNotNull()).count()
    return count / (time.perf_counter() - began)


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process with its descendants (the JVM, its Python
    workers, and those that ended), and by the whole machine (``machine``)."""
    import psutil

    used: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        total = 0.0
        for process in tree:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
        used[name] = total
    machine = psutil.cpu_times()
    used["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    return used


def latency_run(spark, config: Config, scorer, rate: float, seconds: float, seed: int,
                live_outcomes: bool, warmup_s: float = 30.0, processes: dict[str, int] | None = None,
                ) -> dict[str, Any]:
    """Produce live submissions at ``rate`` for ``seconds`` after ``warmup_s`` at the same rate;
    both latencies of every one sent after the warm-up, and the cores each of ``processes``
    (name → pid) and the machine kept busy while they were sent."""
    from pyspark.sql import functions as F

    from learnscore.simulator.stream import StreamOptions, stream_to_kafka

    def send(duration_s: float, seed: int):
        return stream_to_kafka(config, StreamOptions(rate=rate, duration_s=duration_s,
                                                     outcome_delay_s=5.0 if live_outcomes else duration_s + 3600.0,
                                                     seed=seed, drain_outcomes=False), keep_truth=False)

    # The first seconds at a rate after an idle minute are a cold start, not the steady state:
    # Spark ends a Python worker idle for a minute (PythonWorkerFactory), and a new one loads
    # the model again. They are sent first, and their latencies reported apart.
    warm_ids = set(send(warmup_s, seed + 1000).valid_event_ids) if warmup_s else set()
    before = {name: len(runtime.reports) for name, runtime in scorer.runtimes.items()}
    cpu_before, began = cpu_seconds(processes or {}), time.monotonic()
    live = send(seconds, seed)
    cpu_after, sent_for = cpu_seconds(processes or {}), time.monotonic() - began
    live_ids = set(live.valid_event_ids)
    ids = spark.createDataFrame([(i,) for i in live_ids], "event_id string")
    gold = lambda: spark.read.format("delta").load(config.table_path("gold.predictions"))
    _wait(lambda: gold().join(F.broadcast(ids), "event_id").count() >= len(live_ids),
          timeout_s=600, what="the live submissions to reach gold", scorer=scorer, interval_s=2.0)
    score = percentiles(score_latencies(config, live_ids))
    landed = percentiles(gold_latencies(spark, config, live_ids))
    reports = {name: list(runtime.reports)[before[name]:] for name, runtime in scorer.runtimes.items()}
    cold = percentiles(score_latencies(config, warm_ids)) if warm_ids else {}
    return {
        "rate": rate, "seconds": seconds, "events": len(live_ids), "sent_rate": round(live.rate_achieved, 1)
        if hasattr(live, "rate_achieved") else None,
        "warmup_seconds": warmup_s, "warmup_score_latency_p95_s": _round(cold.get(95)),
        "cores_busy": {name: round((cpu_after[name] - cpu_before[name]) / sent_for, 2) for name in cpu_after},
        **{f"score_latency_p{p}_s": _round(score[p]) for p in (50, 95, 99)},
        **{f"gold_latency_p{p}_s": _round(landed[p]) for p in (50, 95, 99)},
        "batches": {name: len(rs) for name, rs in reports.items()},
        "batch_seconds_mean": {name: round(sum(r.duration_s for r in rs) / max(1, len(rs)), 2)
                               for name, rs in reports.items()},
        "stage_seconds_per_batch": {name: stage_seconds(rs, per_batch=True) for name, rs in reports.items()},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _with_queries(config: Config, queries: list[str]) -> Config:
    return config.model_copy(update={"streaming": config.streaming.model_copy(update={"queries": queries})})


def _start_landing_process(config: Config, queries: list[str]):
    """``learnscore stream start --queries <queries>`` at niceness +10, on the bench's topics,
    lake and model (its log: ``<lake root>/../landing.log``); started like every background
    process of ours (pickle refused)."""
    import sys

    from learnscore.stack.processes import start_background

    env = {"LEARNSCORE__KAFKA__TOPIC_PREFIX": config.kafka.topic_prefix,
           "LEARNSCORE__LAKE__ROOT": config.lake.root, "LEARNSCORE__LAKE__CHECKPOINTS": config.lake.checkpoints,
           "LEARNSCORE__MLFLOW__MODEL_NAME": config.mlflow.model_name,
           "LEARNSCORE__STREAMING__SHADOW_ALIASES": orjson.dumps(config.streaming.shadow_aliases).decode(),
           "LEARNSCORE__STREAMING__NICENESS": "10", "LEARNSCORE__DRIFT__ENABLED": "false"}
    return start_background("bench-landing", [sys.executable, "-m", "learnscore", "stream", "start", "--queries",
                                              ",".join(queries)], Path(config.lake.root).parent / "landing.log",
                            endpoint="", env=env)


def _drained(spark, config: Config, counts: dict[str, int]) -> bool:
    def rows(table: str) -> int:
        try:
            return spark.read.format("delta").load(config.table_path(table)).count()
        except Exception:  # noqa: BLE001 - not created yet
            return 0

    # Silver too: the landing query may still be on its backlog batch when gold is complete.
    return (rows("gold.predictions") >= counts.get("submission", 0)
            and rows("silver.submissions") >= counts.get("submission", 0)
            and rows("silver.outcomes") >= counts.get("outcome", 0)
            and rows("gold.prediction_outcomes") >= counts.get("outcome", 0) * 0.98)


def fill_tables(spark, config: Config, rows: int) -> None:
    """``rows`` synthetic rows in silver.submissions and gold.predictions (one response each):
    the tables a running platform has after months; written in one Spark job each."""
    from pyspark.sql import functions as F

    from learnscore.core.lake import ensure_spark_tables
    from learnscore.schemas.domain import LEVELS
    from learnscore.streaming.sinks import conform

    ensure_spark_tables(spark, config, ["silver.submissions", "gold.predictions"])
    if rows <= 0:
        return
    base = spark.range(rows).select(
        F.expr("uuid()").alias("event_id"), F.lit(1).alias("schema_version"),
        F.expr("timestamp_seconds(1700000000 + id)").alias("event_time"),
        F.concat(F.lit("filler-"), F.col("id").cast("string")).alias("learner_id"),
        F.lit("filler").alias("assessment_id"),
        F.lit("math").alias("subject"), (F.col("id") % 12 + 1).alias("grade_level"),
        F.array(F.struct(F.lit("i").alias("item_id"), F.lit("s").alias("skill"), F.lit(True).alias("correct"),
                         F.lit(1000).cast("bigint").alias("response_time_ms"),
                         F.lit(1).cast("bigint").alias("attempts"),
                         F.lit(False).alias("hint_used"))).alias("responses"),
        F.lit("filler").alias("kafka_topic"), F.lit(0).alias("kafka_partition"), F.col("id").alias("kafka_offset"),
        F.current_timestamp().alias("kafka_timestamp"), F.current_timestamp().alias("ingested_at"))
    conform(base, "silver.submissions").write.format("delta").mode("append").save(
        config.table_path("silver.submissions"))
    gold = base.select("event_id", F.col("learner_id").alias("learner_key"), "assessment_id", "subject",
                       "grade_level", "event_time", F.lit(50.0).alias("progress_score"),
                       F.lit("developing").alias("comprehension_level"),
                       *[F.lit(0.25).alias(f"p_{level}") for level in LEVELS],
                       F.lit("filler").alias("model_name"), F.lit("0").alias("model_version"),
                       F.col("event_time").alias("scored_at"), F.lit(1.0).alias("latency_s"),
                       F.lit(-1).cast("bigint").alias("batch_id"), F.col("event_id").alias("score_event_id"),
                       F.col("event_time").alias("published_at"), F.col("event_time").alias("landed_at"),
                       F.lit(0.0).alias("rapid_guess_share"), F.lit(False).alias("low_effort"),
                       F.lit(None).cast("double").alias("effort_moderated_score"))
    conform(gold, "gold.predictions").write.format("delta").mode("append").save(config.table_path("gold.predictions"))


def batch_cost(spark, config: Config, rows: int, events: int, seed: int) -> dict[str, Any]:
    """The seconds of one micro-batch per query over ``events`` submissions, with ``rows`` already landed."""
    import uuid

    from learnscore.streaming.job import start_scorer

    tag = uuid.uuid4().hex[:6]
    home = Path(config.state_dir) / "bench" / f"cost-{tag}"
    config = config.model_copy(update={
        "kafka": config.kafka.model_copy(update={"topic_prefix": f"{config.kafka.topic_prefix}cost-{tag}."}),
        "lake": config.lake.model_copy(update={"root": str(home / "lake"), "checkpoints": str(home / "checkpoints")}),
    })
    began = time.monotonic()
    fill_tables(spark, config, rows)
    filled_s = time.monotonic() - began
    counts = produce_backlog(config, events, seed)
    scorer = start_scorer(spark, config, drift=False)
    try:
        _wait(lambda: scorer.runtimes["gold"].rows_read_total >= counts.get("submission", events) * 0.98
              and scorer.runtimes["land"].rows_read_total >= sum(counts.values()) - counts.get("request_log", 0)
              and not any(r.in_batch for r in scorer.runtimes.values()),
              timeout_s=1800, what=f"{events} events through every query with {rows:,} rows landed", scorer=scorer)
        cost = {name: [round(r.duration_s, 2) for r in runtime.reports if r.rows_read or r.scored]
                for name, runtime in scorer.runtimes.items()}
    finally:
        scorer.stop()
    return {"rows_landed": rows, "fill_seconds": round(filled_s, 1), "events": events, "batch_seconds": cost,
            "batch_seconds_total": {name: round(sum(values), 2) for name, values in cost.items()}}


def run_stream_benchmark(config: Config, *, events: int = 200_000, rates: tuple[float, ...] = (500.0, 2000.0),
                         latency_seconds: float = 60.0, output: str | Path = "bench/results/stream.json",
                         seed: int = 2026, live_outcomes: bool = True,
                         table_rows: tuple[int, ...] = (0, 1_000_000, 10_000_000),
                         cost_events: int = 5000, shadow: bool = False, split: Sequence[str] = ()) -> dict[str, Any]:
    """Run the whole benchmark against the configured broker; write and return the figures.

    ``split``: these queries (``score`` among them) run here and the others in a second process
    (``learnscore stream start --queries …``) at niceness +10, as ``streaming.queries`` deploys
    them on a few cores; the drain is then timed on the tables.
    """
    import uuid

    from learnscore.core.kafka_io import BrokerUnreachable, broker_answers, unreachable_message
    from learnscore.core.spark import create_spark_session
    from learnscore.streaming.job import QUERIES, start_scorer

    if not broker_answers(config.kafka.bootstrap_servers, timeout_s=5):
        raise BrokerUnreachable(unreachable_message(config.kafka.bootstrap_servers))
    tag = uuid.uuid4().hex[:8]
    home = Path(config.state_dir) / "bench" / f"stream-{tag}"
    config = config.model_copy(update={
        "kafka": config.kafka.model_copy(update={"topic_prefix": f"{config.kafka.topic_prefix}bench-{tag}."}),
        "lake": config.lake.model_copy(update={"root": str(home / "lake"),
                                               "checkpoints": str(home / "checkpoints")}),
        "mlflow": config.mlflow.model_copy(update={"model_name": f"learnscore-bench-{tag}"}),
        # --shadow: a challenger ("staging") scored beside production by the shadow query.
        "streaming": config.streaming.model_copy(update={"shadow_aliases": ["staging"] if shadow else []}),
    })
    result: dict[str, Any] = {
        "benchmark": "stream", "command": "learnscore bench stream",
        "started_at": datetime.now(timezone.utc).isoformat(),
        "machine": machine(), "events": events, "live_outcomes": live_outcomes, "shadow_model": shadow,
        "settings": {"max_offsets_per_trigger": config.streaming.max_offsets_per_trigger,
                     "score_max_offsets_per_trigger": config.streaming.score_max_offsets_per_trigger,
                     "trigger_seconds": config.streaming.trigger_seconds,
                     "landing_trigger_seconds": config.streaming.landing_trigger_seconds,
                     "kafka_partitions": config.kafka.partitions, "spark_master": config.spark.master,
                     "shuffle_partitions": config.spark.shuffle_partitions}}
    log.info("bench: training and registering a model as %s", config.mlflow.model_name)
    version = register_production_model(config)
    if shadow:
        result["shadow_version"] = register_production_model(config, seed=12, alias="staging")
    log.info("bench: producing a backlog of %d submissions", events)
    counts = produce_backlog(config, events, seed)
    result["backlog"] = counts
    messages = sum(counts.values())

    spark = create_spark_session(config, app_name="learnscore-bench-stream")
    if split and "score" not in split:
        raise ValueError(f"--split names the queries of the scoring process: {', '.join(split)} lacks score")
    others = [name for name in QUERIES if name not in split]
    result["split_processes"] = [list(split), others] if split else None
    landing_process = _start_landing_process(config, others) if split else None
    began = time.monotonic()
    scorer = start_scorer(spark, _with_queries(config, list(split)) if split else config, drift=False)
    try:
        if split:
            _wait(lambda: _drained(spark, config, counts), timeout_s=3600, interval_s=2.0, scorer=scorer,
                  what="the backlog to drain through every table (the landing in its own process)")
            seconds = time.monotonic() - began
            result.update({"drain_seconds": round(seconds, 2), "submissions_landed": counts.get("submission", 0),
                           "throughput_eps": round(counts.get("submission", 0) / seconds, 1),
                           "note": "split: drain timed from the scorer's start to the last row in silver and gold"})
        else:
            landing, gold = scorer.runtimes["land"], scorer.runtimes["gold"]
            _wait(lambda: landing.rows_read_total >= messages and gold.rows_read_total >= counts.get("submission", 0)
                  and scorer.runtimes["pairs"].rows_read_total >= counts.get("outcome", 0) * 0.98
                  and not any(r.in_batch for r in scorer.runtimes.values()),
                  timeout_s=3600, what="the backlog to drain through every table", scorer=scorer)
            result.update(drain_figures(scorer.runtimes))
        result["machine"]["load_average_after_drain"] = _load_average()
        write_result(result, output)  # the drain figures, even if a later step fails
        log.info("bench: drained %d submissions in %.1fs: %.0f/s", result["submissions_landed"],
                 result["drain_seconds"], result["throughput_eps"])
        result["parse_only_eps"] = round(parse_only_eps(spark, config, messages), 1)
        result["ratio_to_parse_only"] = round(result["throughput_eps"] / result["parse_only_eps"], 3)
        runs = []
        for index, rate in enumerate(rates):
            log.info("bench: latency run, %g submissions/s for %gs", rate, latency_seconds)
            processes = {"this process (scoring; the simulator)": os.getpid(),
                         **({"second process": landing_process.pid} if landing_process is not None else {})}
            runs.append(latency_run(spark, config, scorer, rate, latency_seconds, seed + 1 + index, live_outcomes,
                                    processes=processes))
            write_result({**result, "latency_runs": runs}, output)
        result["latency_runs"] = runs
        at_500 = next((run for run in runs if run["rate"] == 500.0), runs[0] if runs else None)
        if at_500:
            result.update({key: value for key, value in at_500.items() if "latency_p" in key})
    finally:
        scorer.stop()
        if landing_process is not None:
            from learnscore.stack.processes import stop_process

            stop_process(landing_process, timeout_s=300, leader_first=True)
    log.info("bench: raw model speed")
    raw = raw_model_eps(config, version, sample_submissions(min(events, 50_000), seed))
    result["raw_model_eps"] = round(raw, 1)
    result["ratio_to_raw"] = round(result["throughput_eps"] / raw, 3)
    write_result(result, output)
    costs = []
    for rows in table_rows:
        log.info("bench: batch cost with %d rows in silver and gold", rows)
        costs.append(batch_cost(spark, config, rows, cost_events, seed + 100))
        write_result({**result, "batch_cost_by_table_rows": costs}, output)
    result["batch_cost_by_table_rows"] = costs
    result["machine"]["load_average_at_end"] = _load_average()
    result["finished_at"] = datetime.now(timezone.utc).isoformat()
    write_result(result, output)
    return result
