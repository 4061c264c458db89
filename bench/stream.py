"""``learnscore bench stream``: how fast the scorer drains a backlog, and how quickly it answers.

Three figures, written to ``bench/results/stream.json``:

- ``throughput_eps``: submissions per second while the scorer drains a pre-loaded backlog
  (default 200,000 simulated submissions of 20–40 responses, plus their outcomes for a tenth
  of them, some broken events and request-log lines) through every table: bronze,
  silver, quarantine, gold predictions, ScoreIssued on Kafka, prediction-outcome pairs and the
  progress table. Measured from the start of the first micro-batch to the end of the last one.
- ``latency_p50_s``/``p95``/``p99``: event time → the row committed in ``gold.predictions``
  (the modification time of the Delta data file that holds it; the commit follows within
  milliseconds) while submissions are produced live at a steady rate (default 500/s).
- ``raw_model_eps``: the same featurize + predict on the same submissions in a plain Python
  loop (no Kafka, Spark or Delta), and ``ratio_to_raw`` = throughput / raw.

The backlog is generated and produced before the clock starts. Per-stage wall times summed over
the drain's micro-batches (``stage_seconds``) show where the time goes; bench/README.md reads them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
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


def register_production_model(config: Config, seed: int = 11, learners: int = 6000) -> str:
    """Fit the project's model on a small simulated history, register it, alias it production.

    Returns the version. The benchmark measures the pipeline, not model quality, so the
    history is small; the model is the real one (same features, same packaging).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from learnscore.core.tracking import use_mlflow
    from learnscore.model.diagnostic import model_from_config
    from learnscore.model.features import model_input_from_events
    from learnscore.model.packaging import log_diagnostic_model
    from learnscore.registry.access import PRODUCTION
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
    version = mlflow.register_model(model_uri, config.mlflow.model_name).version
    MlflowClient().set_registered_model_alias(config.mlflow.model_name, PRODUCTION, version)
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


def drain_figures(reports) -> dict[str, Any]:
    """Throughput and per-stage time of the micro-batches that drained the backlog."""
    reports = [r for r in reports if r.rows_read or r.scored]
    first = min(r.started_at for r in reports)
    last = max(r.started_at.timestamp() + r.duration_s for r in reports)
    seconds = last - first.timestamp()
    submissions = sum(r.submissions_valid for r in reports)
    return {
        "drain_seconds": round(seconds, 2),
        "throughput_eps": round(submissions / seconds, 1),
        "batches": len(reports),
        "submissions_landed": submissions,
        "scored": sum(r.scored for r in reports),
        "quarantined": sum(r.quarantined for r in reports),
        "outcomes": sum(r.outcomes for r in reports),
        "endpoint_requests": sum(r.endpoint_requests for r in reports),
        "stage_seconds": stage_seconds(reports),
        "batch_seconds": [round(r.duration_s, 2) for r in reports],
    }


def stage_seconds(reports, per_batch: bool = False) -> dict[str, float]:
    """Wall seconds per handler stage, summed over ``reports`` (or averaged per batch), largest first."""
    stages: dict[str, float] = {}
    for report in reports:
        for stage, value in report.timings.items():
            stages[stage] = stages.get(stage, 0.0) + value
    scale = 1 / max(1, len(reports)) if per_batch else 1.0
    return {k: round(v * scale, 3 if per_batch else 2) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])}


def committed_latencies(spark, config: Config, event_ids: set[str]) -> list[float]:
    """Seconds from each event's time to the write of the Delta file holding its gold row."""
    from pyspark.sql import functions as F

    ids = spark.createDataFrame([(event_id,) for event_id in event_ids], "event_id string")
    gold = (spark.read.format("delta").load(config.table_path("gold.predictions"))
            .select("event_id", "event_time", F.col("_metadata.file_modification_time").alias("written")))
    rows = (gold.join(F.broadcast(ids), "event_id")
            .select((F.unix_micros("written") - F.unix_micros("event_time")).alias("micros"))
            .collect())
    return [row.micros / 1e6 for row in rows]


def run_stream_benchmark(config: Config, *, events: int = 200_000, rate: float = 500.0,
                         latency_seconds: float = 60.0, output: str | Path = "bench/results/stream.json",
                         seed: int = 2026, live_outcomes: bool = True) -> dict[str, Any]:
    """Run the whole benchmark against the configured broker; write and return the figures.

    ``live_outcomes=False`` sends no outcomes during the latency run (they would follow after
    it): the latency of the submission path on its own, what splitting the outcome work off
    the scorer's batch could win at best.
    """
    import uuid

    from learnscore.core.kafka_io import BrokerUnreachable, broker_answers, unreachable_message
    from learnscore.core.spark import create_spark_session
    from learnscore.simulator.stream import StreamOptions, stream_to_kafka
    from learnscore.streaming.job import start_scorer

    if not broker_answers(config.kafka.bootstrap_servers, timeout_s=5):
        raise BrokerUnreachable(unreachable_message(config.kafka.bootstrap_servers))
    tag = uuid.uuid4().hex[:8]
    home = Path(config.state_dir) / "bench" / f"stream-{tag}"
    config = config.model_copy(update={
        "kafka": config.kafka.model_copy(update={"topic_prefix": f"{config.kafka.topic_prefix}bench-{tag}."}),
        "lake": config.lake.model_copy(update={"root": str(home / "lake"),
                                               "checkpoints": str(home / "checkpoints")}),
        "mlflow": config.mlflow.model_copy(update={"model_name": f"learnscore-bench-{tag}"}),
    })
    result: dict[str, Any] = {"benchmark": "stream", "started_at": datetime.now(timezone.utc).isoformat(),
                              "machine": machine(), "events": events, "rate": rate,
                              "live_outcomes": live_outcomes,
                              "settings": {"max_offsets_per_trigger": config.streaming.max_offsets_per_trigger,
                                           "trigger_seconds": config.streaming.trigger_seconds,
                                           "kafka_partitions": config.kafka.partitions,
                                           "spark_master": config.spark.master,
                                           "shuffle_partitions": config.spark.shuffle_partitions}}
    log.info("bench: training and registering a model as %s", config.mlflow.model_name)
    version = register_production_model(config)
    log.info("bench: producing a backlog of %d submissions", events)
    counts = produce_backlog(config, events, seed)
    result["backlog"] = counts
    messages = sum(counts.values())

    spark = create_spark_session(config, app_name="learnscore-bench-stream")
    scorer = start_scorer(spark, config)
    try:
        _wait(lambda: scorer.state.rows_read_total >= messages and scorer.state.pending_unscored == 0
              and not scorer.state.in_batch, timeout_s=3600, what="the backlog to drain", scorer=scorer)
        drained = drain_figures(list(scorer.state.reports))
        result.update(drained)
        result["machine"]["load_average_after_drain"] = _load_average()
        write_result(result, output)  # the drain figures, even if a later step fails
        log.info("bench: drained %d submissions in %.1fs: %.0f/s", drained["submissions_landed"],
                 drained["drain_seconds"], drained["throughput_eps"])

        log.info("bench: latency run, %g submissions/s for %gs", rate, latency_seconds)
        batches_before = len(scorer.state.reports)
        live = stream_to_kafka(config, StreamOptions(rate=rate, duration_s=latency_seconds,
                                                     outcome_delay_s=5.0 if live_outcomes else
                                                     latency_seconds + 3600.0, seed=seed + 1,
                                                     drain_outcomes=False), keep_truth=False)
        live_ids = set(live.valid_event_ids)
        gold = lambda: spark.read.format("delta").load(config.table_path("gold.predictions"))
        from pyspark.sql import functions as F

        ids = spark.createDataFrame([(i,) for i in live_ids], "event_id string")
        _wait(lambda: gold().join(F.broadcast(ids), "event_id").count() >= len(live_ids),
              timeout_s=300, what="the live submissions to be scored", scorer=scorer, interval_s=2.0)
        latencies = committed_latencies(spark, config, live_ids)
        points = percentiles(latencies)
        live_reports = list(scorer.state.reports)[batches_before:]
        result.update({
            "latency_p50_s": round(points[50], 3), "latency_p95_s": round(points[95], 3),
            "latency_p99_s": round(points[99], 3), "latency_events": len(latencies),
            "latency_batches": len(live_reports),
            "latency_batch_seconds_mean": round(sum(r.duration_s for r in live_reports)
                                                / max(1, len(live_reports)), 2),
            # The fixed cost of a micro-batch shows here: at 500/s a batch holds a few thousand rows.
            "latency_stage_seconds_per_batch": stage_seconds(live_reports, per_batch=True),
        })
    finally:
        scorer.stop()
    log.info("bench: raw model speed")
    raw = raw_model_eps(config, version, sample_submissions(min(events, 50_000), seed))
    result["raw_model_eps"] = round(raw, 1)
    result["ratio_to_raw"] = round(result["throughput_eps"] / raw, 3)
    result["machine"]["load_average_at_end"] = _load_average()
    result["finished_at"] = datetime.now(timezone.utc).isoformat()
    write_result(result, output)
    return result
