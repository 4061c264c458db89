"""The retrain worker's alerts, to a real local webhook receiver, with the real Delta ledger, lease
and MLflow registry (no broker: runs are driven through ``handle_burst``, as the consumer loop
does). A run is announced once when it starts (``retrain_requested``), and alerted once when it
is deferred and once when it fails for good (``retrain_failed``); a resumed attempt is not a new
run, even for a restarted worker whose dispatcher remembers nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from learnscore.batch.retrain_worker import RetrainWorker, run_id_for
from learnscore.core.alerts import configure_alerts
from learnscore.core.config import Config
from tests.support import WebhookReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_config(base_config, tmp_path) -> Config:
    from learnscore.core.tracking import prepare_store

    config = base_config.model_copy(update={
        "lake": base_config.lake.model_copy(update={"root": str(tmp_path / "lake"),
                                                    "checkpoints": str(tmp_path / "checkpoints")}),
        "mlflow": base_config.mlflow.model_copy(update={"model_name": f"alerts-{uuid.uuid4().hex[:8]}"}),
        "retrain": base_config.retrain.model_copy(update={
            "retry_backoff_seconds": 0.0, "failed_attempts": 2, "failed_backoff_seconds": 0.0,
            "concept_max_wait_seconds": 0.0, "lease_ttl_seconds": 20.0}),
    })
    prepare_store(config)
    return config


@pytest.fixture
def receiver(worker_config):
    with WebhookReceiver() as receiver:
        yield receiver
    configure_alerts(Config(), environ={})


def _alerting(config: Config, receiver: WebhookReceiver):
    """A fresh dispatcher, as a (re)started `learnscore retrain-worker` makes one."""
    settings = config.alerts.model_copy(update={"webhook_url": receiver.url, "retry_backoff_seconds": 0.01})
    return configure_alerts(config.model_copy(update={"alerts": settings}), environ={})


def _request(segment: str) -> dict:
    stamp = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    return {"event_id": str(uuid.uuid4()), "schema_version": 1, "event_time": stamp, "trigger": "drift",
            "detector": "ADWIN", "segment": segment, "statistic": "covariate/accuracy",
            "evidence": {"effect_sigma": -1.3, "n_after": 250.0}, "evidence_window_start": stamp,
            "evidence_window_end": stamp, "detected_at": stamp}


def _worker(config: Config, trainer) -> RetrainWorker:
    return RetrainWorker(config, trainer=trainer, promoter="unused:promote", spark_factory=lambda: None,
                         sleep=lambda seconds: None)


def _received(receiver: WebhookReceiver) -> list[tuple[str, str]]:
    return [(body["kind"], body["key"]) for body in receiver.bodies]


def test_a_run_is_announced_once_and_alerted_once_when_it_fails_for_good(worker_config, receiver):
    def broken(spark, config, **window):
        raise ValueError("no usable rows")

    request = _request("math/5-8")
    run_id = run_id_for(request["event_id"])
    dispatcher = _alerting(worker_config, receiver)
    first = _worker(worker_config, broken).handle_burst([request])  # attempt 1 of 2
    assert first.status == "attempt_failed" and dispatcher.flush(10)
    assert _received(receiver) == [("retrain_requested", run_id)]  # a failed attempt is not final

    dispatcher = _alerting(worker_config, receiver)  # a restarted worker: no dedupe memory
    failed = _worker(worker_config, broken).handle_burst([request])  # attempt 2 of 2: resumed
    assert failed.status == "failed" and dispatcher.flush(10)
    assert _worker(worker_config, broken).handle_burst([request]) is None  # redelivered: nothing
    assert dispatcher.flush(10)

    assert _received(receiver) == [("retrain_requested", run_id), ("retrain_failed", run_id)]
    announced, alerted = receiver.bodies
    assert announced["fields"]["trigger"] == "drift" and announced["fields"]["requests"] == [request["event_id"]]
    assert alerted["attachments"][0]["color"] == "danger"
    assert f"retrain run {run_id} failed for good" in alerted["text"]
    assert "training failed: no usable rows; failed 2 of 2 attempts" in alerted["text"]


def test_a_deferred_run_is_alerted_once_and_again_when_it_fails_for_good(worker_config, receiver):
    from mlflow.exceptions import MlflowException

    def mlflow_away(spark, config, **window):
        raise MlflowException("tracking server unreachable")

    request = _request("reading/1-4")
    run_id = run_id_for(request["event_id"])
    dispatcher = _alerting(worker_config, receiver)
    worker = _worker(worker_config, mlflow_away)
    assert worker.handle_burst([request]).status == "deferred"
    assert worker.handle_burst([request]).status == "deferred"  # still away: the same incident
    assert worker.handle_burst([request], may_defer=False).status == "failed"
    assert dispatcher.flush(10)

    assert _received(receiver) == [("retrain_requested", run_id), ("retrain_failed", f"{run_id}/deferred"),
                                   ("retrain_failed", run_id)]
    assert "deferred, its requests wait: " in receiver.bodies[1]["text"]
    assert "MLflow unreachable while training" in receiver.bodies[1]["text"]
    assert dispatcher.counts.suppressed == 1  # the second deferral
