"""``learnscore bench drift --e2e``: seconds from a drift's onset to a new production version
scoring the stream, with every real part running.

The scorer (Spark Structured Streaming, with the drift hook) and the retrain worker (real
training job, gates, ``auto`` policy) run side by side; the simulator sends 200 submissions/s
with outcomes 10 s later, switching to the scenario (default ``concept-shift``) after a warm-up
that lets every detector learn its reference. The clock runs from the first shifted submission
to the first ``gold.predictions`` row scored by the retrained version; the stages in between
(first drift event, first request, run start/end, promotion) are reported too.

Then the retrained version's quality (:func:`retrained_quality`): R² and macro-F1 on labelled
post-onset submissions made after its training data ends, beside the previous version and the
post-shift oracle on the same rows (the simulator's exact expected score, ``oracle_score``, for
each learner's true ability under the relation in force), and the version's share of it.

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


def measure_onset_to_production(config, *, scenario: str = "concept-shift", warmup_s: float = 90.0,
                                rate: float = 200.0, outcome_delay_s: float = 10.0, learners: int = 6000,
                                timeout_s: float = 1200.0, judge_rows: int = 3000, judge_timeout_s: float = 300.0,
                                seed: int = 13) -> dict[str, Any]:
    """Run the loop once; return the figures (seconds are wall-clock, from the onset)."""
    from learnscore.batch.importer import import_history
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
    import_history(spark, config, home / "history")
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
                            scenarios=(ScenarioSpec(scenario, at_seconds=warmup_s),))
    started = datetime.now(timezone.utc)
    sent: list = []  # the simulator's report, with the truth of every submission it sent
    sim = threading.Thread(target=lambda: sent.append(stream_to_kafka(config, options, stop_event=stop,
                                                                      start=started, keep_truth=True)),
                           name="simulator", daemon=True)
    sim.start()
    onset = started + timedelta(seconds=warmup_s)
    result: dict[str, Any] = {
        "measured_at": started.isoformat(timespec="seconds"), "rate_per_s": rate,
        "outcome_delay_s": outcome_delay_s, "warmup_s": warmup_s, "scenario": scenario,
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
        if new_version_rows is not None:  # let outcomes of rows it never trained on land
            _wait_for_judge_rows(config, runs[0].model_version, judge_rows, judge_timeout_s, scorer_alive)
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
        if sent and sent[0].truth is not None:
            result["retrained_quality"] = retrained_quality(
                config, sent[0].truth.to_pandas(), onset, initial.version, runs[0].model_version, judge_rows)
    spark.stop()
    return result


def _wait_for_judge_rows(config, version: str, rows: int, timeout_s: float, check) -> None:
    from learnscore.registry.access import training_cutoff
    from learnscore.registry.window import recent_labelled_window

    cutoff = training_cutoff(config, version)
    try:
        wait_until(lambda: len(recent_labelled_window(config, rows, after=cutoff)[1]) >= rows or None,
                   timeout_s, f"{rows} labelled submissions after version {version}'s training data",
                   interval_s=10, check=check)
    except WaitTimedOut as exc:
        log.warning("e2e: %s; the quality is measured on what landed", exc)


def retrained_quality(config, truth, onset: datetime, previous: str, version: str, rows: int) -> dict[str, Any]:
    """The retrained ``version``, the ``previous`` one and the post-shift oracle on the same rows:
    labelled submissions made after the onset *and* after ``version``'s training data ends (none of
    them trained it). ``truth``: the simulator's truth per submission (``event_id``, ``oracle_score``,
    ``oracle_level``)."""
    from learnscore.model.metrics import level_metrics, score_metrics
    from learnscore.registry.access import training_cutoff
    from learnscore.registry.gates import window_metrics
    from learnscore.registry.trust import load_trusted_version
    from learnscore.registry.window import recent_labelled_window

    cutoff = training_cutoff(config, version)
    after = max(moment for moment in (cutoff, onset) if moment is not None)
    model_input, labels = recent_labelled_window(config, rows, after=after)
    oracle = truth.set_index("event_id").reindex(labels["event_id"])
    known = oracle["oracle_score"].notna().to_numpy()
    model_input, labels, oracle = (model_input[known].reset_index(drop=True), labels[known].reset_index(drop=True),
                                   oracle[known])
    if labels.empty:
        return {"rows": 0, "note": f"no labelled post-onset submissions after {after.isoformat()} landed"}

    def quality(metrics: dict[str, float]) -> dict[str, float]:
        return {name: round(float(metrics[name]), 4) for name in ("r2", "mae", "macro_f1", "accuracy")}

    observed_score, observed_level = labels["observed_progress_score"], labels["observed_comprehension_level"]
    oracle_figures = quality({**score_metrics(observed_score, oracle["oracle_score"].to_numpy()),
                              **level_metrics(observed_level, oracle["oracle_level"].to_numpy(dtype=object))})
    figures = {name: quality(window_metrics(load_trusted_version(config, number).predict(model_input), labels))
               for name, number in (("retrained", version), ("previous", previous))}
    retrained = figures["retrained"]
    return {
        "rows": len(labels), "after": after.isoformat(), "retrained_version": version,
        "previous_version": previous, **figures, "post_shift_oracle": oracle_figures,
        "r2_share_of_oracle": round(retrained["r2"] / oracle_figures["r2"], 4) if oracle_figures["r2"] > 0 else None,
        "macro_f1_share_of_oracle": (round(retrained["macro_f1"] / oracle_figures["macro_f1"], 4)
                                     if oracle_figures["macro_f1"] > 0 else None),
        "goal_share": 0.9,
    }


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
