"""``learnscore bench drift --e2e``: seconds from a drift's onset to a new production version
scoring the stream, with every real part running.

The scorer (Spark Structured Streaming, with the drift hook) and the retrain worker (real
training job, gates, ``auto`` policy) run side by side; the simulator sends 200 submissions/s
with outcomes 10 s later, switching to ``concept-shift`` after a warm-up that lets every
detector learn its reference. The clock runs from the first shifted submission to the first
``gold.predictions`` row scored by the retrained version; the stages in between (first drift
event, first request, run start/end, promotion) are reported too.

Everything is isolated under ``<state_dir>/bench/drift-e2e-<tag>`` with its own topic prefix
and model name; the broker is the configured one (``learnscore stack up``).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from learnscore.core.waiting import WaitTimedOut, wait_until

log = logging.getLogger(__name__)


def _isolated(config, tag: str):
    home = Path(config.state_dir) / "bench" / f"drift-e2e-{tag}"
    return config.model_copy(update={
        "kafka": config.kafka.model_copy(update={
            "topic_prefix": f"{config.kafka.topic_prefix}bench-drift-{tag}."}),
        "lake": config.lake.model_copy(update={"root": str(home / "lake"),
                                               "checkpoints": str(home / "checkpoints")}),
        "mlflow": config.mlflow.model_copy(update={"model_name": f"learnscore-bench-drift-{tag}"}),
    }), home


def measure_onset_to_production(config, *, warmup_s: float = 90.0, rate: float = 200.0,
                                outcome_delay_s: float = 10.0, learners: int = 6000,
                                timeout_s: float = 1200.0, seed: int = 13) -> dict[str, Any]:
    """Run the loop once; return the figures (seconds are wall-clock, from the onset)."""
    from learnscore.batch.history import load_history
    from learnscore.batch.retrain_worker import RetrainWorker
    from learnscore.batch.train import train_model
    from learnscore.core.kafka_io import BrokerUnreachable, broker_answers, create_topics, unreachable_message
    from learnscore.core.spark import create_spark_session
    from learnscore.registry.promote import promote
    from learnscore.schemas import topics
    from learnscore.simulator.history import HistoryOptions, write_history
    from learnscore.simulator.scenarios import ScenarioSpec
    from learnscore.simulator.stream import StreamOptions, stream_to_kafka
    from learnscore.streaming.job import start_scorer

    if not broker_answers(config.kafka.bootstrap_servers, timeout_s=5):
        raise BrokerUnreachable(unreachable_message(config.kafka.bootstrap_servers))
    tag = uuid.uuid4().hex[:8]
    config, home = _isolated(config, tag)
    create_topics(config, [topics.RETRAIN_REQUESTS, topics.LIFECYCLE])
    spark = create_spark_session(config, app_name="learnscore-bench-drift-e2e")
    log.info("e2e: initial model from %d simulated learners", learners)
    write_history(home / "history", HistoryOptions(learners=learners, days=1,
                                                   outcome_delay_s=3600, seed=seed))
    load_history(spark, config, home / "history")
    initial = train_model(spark, config, history_dir=home / "history", actor="bench drift")
    promote(config, version=initial.version, actor="bench drift", reason="initial model")

    scorer = start_scorer(spark, config)  # with the drift detectors on gold rows and pairs
    stop = threading.Event()
    runs: list = []
    worker = RetrainWorker(config, policy="auto", spark_factory=lambda: spark)
    worker_thread = threading.Thread(target=lambda: runs.extend(worker.serve(stop, max_runs=1)),
                                     name="retrain-worker", daemon=True)
    worker_thread.start()
    options = StreamOptions(rate=rate, duration_s=warmup_s + timeout_s, seed=seed + 1,
                            outcome_delay_s=outcome_delay_s,
                            scenarios=(ScenarioSpec("concept-shift", at_seconds=warmup_s),))
    started = datetime.now(timezone.utc)
    sim = threading.Thread(target=stream_to_kafka, args=(config, options),
                           kwargs={"stop_event": stop, "start": started, "keep_truth": False},
                           name="simulator", daemon=True)
    sim.start()
    onset = started + timedelta(seconds=warmup_s)
    result: dict[str, Any] = {
        "measured_at": started.isoformat(timespec="seconds"), "rate_per_s": rate,
        "outcome_delay_s": outcome_delay_s, "warmup_s": warmup_s, "scenario": "concept-shift",
        "initial_version": initial.version, "onset": onset.isoformat(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "settings": {"drift": config.drift.model_dump(mode="json"),
                     "retrain": config.retrain.model_dump(mode="json"),
                     "gates": config.gates.model_dump(mode="json"),
                     "streaming.trigger_seconds": config.streaming.trigger_seconds}}
    new_version_rows = None
    try:
        def scorer_alive() -> None:
            if scorer.failure():
                raise RuntimeError(f"the scorer failed: {scorer.failure()}")

        def new_version_scored():
            return _first_scored(spark, config, runs[0].model_version) \
                if runs and runs[0].model_version else None

        try:  # a timeout is a result (no retrained version scored), reported as such
            new_version_rows = wait_until(new_version_scored, warmup_s + timeout_s,
                                          "the retrained version to score", interval_s=2, check=scorer_alive)
        except WaitTimedOut:
            new_version_rows = None
    finally:
        stop.set()
        sim.join(60)
        worker_thread.join(120)
        scorer.stop()
    result.update(_stages(spark, config, onset, runs))
    if new_version_rows is None:
        result["onset_to_new_production_scoring_s"] = None
        result["meets_target"] = False
    else:
        seconds = (new_version_rows - onset).total_seconds()
        result["onset_to_new_production_scoring_s"] = round(seconds, 1)
        result["meets_target"] = seconds <= 600
    spark.stop()
    return result


def _first_scored(spark, config, version: str) -> datetime | None:
    from pyspark.sql import functions as F

    first = (spark.read.format("delta").load(config.table_path("gold.predictions"))
             .where(F.col("model_version") == version).agg(F.min("scored_at")).collect()[0][0])
    return first.replace(tzinfo=timezone.utc) if first is not None and first.tzinfo is None else first


def _stages(spark, config, onset: datetime, runs: list) -> dict[str, Any]:
    """Seconds from the onset to each step of the loop (None when it did not happen)."""
    from pyspark.sql import functions as F

    def since(moment):
        if moment is None:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return round((moment - onset).total_seconds(), 1)

    stages: dict[str, Any] = {}
    try:
        events = spark.read.format("delta").load(config.table_path("ops.drift_events"))
        first = events.agg(F.min("detected_at")).collect()[0][0]
        requested = events.where(F.col("request_id").isNotNull()).agg(F.min("detected_at")).collect()[0][0]
        stages["first_drift_event_s"] = since(first)
        stages["first_request_s"] = since(requested)
        stages["drift_events"] = events.count()
        stages["first_event_signal"] = [f"{r['kind']}/{r['signal']} {r['segment']}" for r in
                                        events.orderBy("detected_at").limit(3).collect()]
    except Exception as exc:  # noqa: BLE001 - no drift event table: nothing was detected
        log.warning("e2e: no drift events: %s", exc)
    if runs:
        run = runs[0]
        stages.update(run_status=run.status, new_version=run.model_version,
                      requests_in_run=len(run.request_ids), run_started_s=since(run.started_at),
                      run_finished_s=since(run.finished_at))
    return stages
