"""The MLflow tracking server (a real `mlflow server` process over its own store) is killed:
the stream keeps scoring with the model it has, the endpoint keeps serving, the retrain worker
retries with back-off, records the attempt as deferred and keeps the request; nothing crashes, and
once the server is back the worker serves that request and the new one, and the stream sees the
registry again."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import orjson
import pytest

from learnscore.batch.retrain_runs import runs
from learnscore.batch.retrain_worker import RetrainWorker
from learnscore.core import kafka_io
from learnscore.core.config import Secrets
from learnscore.core.ports import free_port
from learnscore.schemas import topics
from learnscore.stack.mlflow_server import MlflowUi
from learnscore.streaming.model_cache import OK, REGISTRY_UNREACHABLE
from learnscore.streaming.runtime import ScorerTopics

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def tiny_train(spark, config, *, since, until, trigger, request_id):
    """A real MLflow run and registered version of a tiny model: the worker's trainer contract."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LinearRegression

    from learnscore.core.tracking import use_mlflow

    use_mlflow(config)
    model = LinearRegression().fit(np.arange(6.0).reshape(-1, 1), np.arange(6.0))
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=config.mlflow.model_name,
                                        pip_requirements=["scikit-learn==1.9.1"])
    return {"version": str(info.registered_model_version), "run_id": run.info.run_id}


def retrain_request() -> dict:
    now = datetime.now(timezone.utc)
    stamp = now.isoformat().replace("+00:00", "Z")
    return {"event_id": str(uuid.uuid4()), "schema_version": 1, "event_time": stamp, "trigger": "drift",
            "detector": "ADWIN", "segment": "math/5-8", "statistic": "concept/abs_error",
            "evidence": {"effect_sigma": 1.3, "n_after": 250.0},
            "evidence_window_start": (now - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
            "evidence_window_end": stamp, "detected_at": stamp}


def test_a_killed_mlflow_server_stops_nothing(spark, fault_config, kit, fitted_model, small_history_events,
                                              tmp_path, monkeypatch, caplog, restore_mlflow):
    from learnscore.model.features import model_input_from_events

    # One quick try per registry call: the back-off under test is the worker's, not MLflow's.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    store = tmp_path / "mlflow"
    server_config = fault_config.model_copy(update={"state_dir": tmp_path / "server", "mlflow": fault_config.mlflow.model_copy(update={
        "tracking_uri": f"sqlite:///{store / 'mlflow.db'}", "artifact_root": str(store / "artifacts"),
        "ui_port": free_port()})})
    server = MlflowUi(server_config)
    config = fault_config.model_copy(update={
        "mlflow": server_config.mlflow.model_copy(update={"tracking_uri": server.url, "registry_uri": None}),
        "retrain": fault_config.retrain.model_copy(update={
            "debounce_seconds": 0.5, "retry_attempts": 3, "retry_backoff_seconds": 1.0,
            "deferred_retry_seconds": 5.0, "concept_max_wait_seconds": 0.0,
            "consumer_group": f"retrain-{uuid.uuid4().hex[:6]}"}),
        "serving": fault_config.serving.model_copy(update={"alias_check_seconds": 0.5,
                                                           "registry_timeout_s": 2.0}),
    })
    submissions, _ = small_history_events
    waves = [submissions[2000:2030], submissions[2030:2060], submissions[2060:2090]]
    kafka_io.create_topics(config, [*ScorerTopics.BASE_NAMES, topics.RETRAIN_REQUESTS])
    api_key = Secrets(config).api_key.get_secret_value()
    scorer = kit.ScorerThread(config)
    stop_worker = threading.Event()
    worker = RetrainWorker(config, trainer=tiny_train, promoter=lambda *a, **k: None,
                           spark_factory=lambda: None, policy="manual")
    worker_thread = threading.Thread(target=worker.serve, args=(stop_worker,), daemon=True)
    try:
        server.up()
        version = kit.register_production(config, fitted_model, model_input_from_events(submissions[:20]))
        produce(config, topics.SUBMISSIONS, kit.messages(waves[0]))
        scorer.start()
        worker_thread.start()
        with kit.running_endpoint(config) as base:
            def score_one(index: int) -> httpx.Response:
                return httpx.post(f"{base}/v1/score", json=submissions[2500 + index],
                                  headers={"X-API-Key": api_key}, timeout=30)

            kit.wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 90, "the endpoint's model")
            kit.wait_for(lambda: scorer.check() and kit.table_count(config, "gold.predictions") >= 30, 600, "the first wave scored")

            os.killpg(server.record().pid, signal.SIGKILL)  # the server and its uvicorn worker
            server.down()
            produce(config, topics.SUBMISSIONS, kit.messages(waves[1]))
            early = retrain_request()
            produce(config, topics.RETRAIN_REQUESTS, [(b"math/5-8", orjson.dumps(early))])
            kit.wait_for(lambda: scorer.check() and kit.table_count(config, "gold.predictions") >= 60, 600,
                         "the second wave scored with the registry away")
            kit.wait_for(lambda: httpx.get(f"{base}/readyz").json()["status"] == "degraded", 30,
                         "the endpoint noticing the registry away")
            during = [score_one(i) for i in range(3)]
            kit.wait_for(lambda: ledger(config).get(early["event_id"]) == "deferred", 120,
                         "the retrain attempt recorded as deferred")
            assert worker_thread.is_alive(), "the retrain worker stopped"

            server.up()
            later = retrain_request()
            produce(config, topics.RETRAIN_REQUESTS, [(b"math/5-8", orjson.dumps(later))])
            produce(config, topics.SUBMISSIONS, kit.messages(waves[2]))
            # The later request joins the resumed run if polled before its next try (succeeded),
            # or is answered by that run's version if it comes after (covered): served either way.
            kit.wait_for(lambda: ledger(config).get(later["event_id"]) in ("succeeded", "covered")
                         and ledger(config).get(early["event_id"]) == "succeeded", 120,
                         "both requests served once the server is back")
            kit.wait_for(lambda: scorer.check() and kit.table_count(config, "gold.predictions") >= 90, 600, "the third wave scored")
            kit.wait_for(lambda: httpx.get(f"{base}/readyz").json()["status"] == "ready", 60,
                         "the endpoint seeing the registry again")
            after = score_one(3)
    finally:
        stop_worker.set()
        scorer.stop()
        worker_thread.join(timeout=60)
        server.down()

    assert scorer.error is None
    assert [answer.status_code for answer in during] == [200, 200, 200]
    assert {answer.json()["model_version"] for answer in during + [after]} == {version}
    predictions = spark.read.format("delta").load(config.table_path("gold.predictions")).collect()
    sent = [event["event_id"] for wave in waves for event in wave]
    assert sorted(row.event_id for row in predictions) == sorted(sent)
    assert {row.model_version for row in predictions} == {version}
    statuses = [row.model_status for row in spark.read.format("delta").load(
        config.table_path("ops.stream_progress")).where("query = 'score'").orderBy("batch_id").collect()]
    assert REGISTRY_UNREACHABLE in statuses and statuses[-1] == OK

    ledger_rows = runs(config)
    deferred_row = ledger_rows[ledger_rows.status == "deferred"].iloc[0]
    assert "failed 3 times; last error: MlflowException" in deferred_row.message
    assert "runs again in 5 s" in deferred_row.message
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert any("attempt 1 of 3" in m and "retrying in 1 s" in m for m in retries), retries
    assert any("attempt 2 of 3" in m and "retrying in 2 s" in m for m in retries), retries
    # Deferred (once, or again while the server was starting), never failed; then one run served
    # the early request, whether the later one joined it or had a run of its own.
    attempts = ledger_rows.status.tolist()
    assert attempts[:2] == ["started", "deferred"] and attempts[-1] == "succeeded"
    assert set(attempts) == {"started", "deferred", "succeeded"}, attempts


def produce(config, base_topic: str, pairs: list[tuple[bytes, bytes]]) -> None:
    producer = kafka_io.producer(config)
    try:
        for key, value in pairs:
            producer.send(config.topic(base_topic), key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


def ledger(config) -> dict[str, str]:
    from learnscore.batch.retrain_runs import request_statuses

    return request_statuses(config)
