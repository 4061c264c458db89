"""The endpoint's error-rate alert, under a real uvicorn server, to a real local webhook receiver.

No model is registered, so every authorised scoring request is a 503 (``no_model``): a server
error that goes on. Wrong keys (401, then 429) are the client's errors and must not count.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from learnscore.core.alerts import configure_alerts
from learnscore.core.config import Config, Secrets
from learnscore.core.ports import free_port
from tests.support import WebhookReceiver, running_endpoint

pytestmark = pytest.mark.integration


def _submission(seed: int) -> dict:
    """A valid DiagnosticSubmitted (the endpoint checks the contract before it looks for a model)."""
    return {"event_id": str(uuid.UUID(int=seed + 1, version=4)), "schema_version": 1,
            "event_time": "2026-11-05T10:00:00Z", "learner_id": f"learner-{seed}",
            "assessment_id": "diag-math-v1", "subject": "math", "grade_level": 5,
            "responses": [{"item_id": f"math.algebra.v1.{k:03d}", "skill": "algebra", "correct": k % 2 == 0,
                           "response_time_ms": 9000, "attempts": 1, "hint_used": False} for k in range(3)]}


def _endpoint_config(base_config: Config, webhook_url: str) -> Config:
    """No broker and no model needed: a model name nobody registered, the request log off."""
    return base_config.model_copy(update={
        "mlflow": base_config.mlflow.model_copy(update={"model_name": f"alerts-{uuid.uuid4().hex[:8]}"}),
        "serving": base_config.serving.model_copy(update={"port": free_port(), "alias_check_seconds": 0.5}),
        "alerts": base_config.alerts.model_copy(update={
            "webhook_url": webhook_url, "retry_backoff_seconds": 0.01, "endpoint_error_rate": 0.2,
            "endpoint_error_window_seconds": 2.0, "endpoint_error_min_requests": 10}),
    })


def test_the_error_rate_alert_reaches_the_webhook_once_while_server_errors_go_on(base_config):
    with WebhookReceiver() as receiver:
        config = _endpoint_config(base_config, receiver.url)
        dispatcher = configure_alerts(config, environ={})  # what `learnscore serve` does at start
        try:
            with running_endpoint(config, request_log=False) as base, httpx.Client(base_url=base, timeout=30) as client:
                refused = [client.post("/v1/score", json=_submission(n), headers={"X-API-Key": "w" * 40}).status_code
                           for n in range(40)]
                assert dispatcher.flush(10)
                after_client_errors = list(receiver.bodies)
                key = {"X-API-Key": Secrets(config).api_key.get_secret_value()}
                statuses, began = [], time.monotonic()
                while time.monotonic() - began < 5.0:  # errors for 2.5 windows: the watch announces again
                    statuses.append(client.post("/v1/score", json=_submission(len(statuses)), headers=key).status_code)
                    time.sleep(0.05)
                assert dispatcher.flush(10)
        finally:
            configure_alerts(Config(), environ={})

    assert set(refused) <= {401, 429} and after_client_errors == []  # 4xx never count
    assert set(statuses) == {503} and len(statuses) >= 30
    alerts = [body for body in receiver.bodies if body["kind"] == "endpoint_error_rate"]
    assert len(alerts) == 1, alerts
    first = alerts[0]
    assert first["key"] == "/v1/score"
    # The 10th counted request (min_requests) crossed the threshold: 10 server errors of 10.
    assert (first["fields"]["errors"], first["fields"]["requests"], first["fields"]["share"]) == (10, 10, 1.0)
    assert "10 of 10 requests failed with a server error (5xx) in the last 2 s: 100% > 20%" in first["text"]
    assert dispatcher.counts.suppressed >= 1  # announced again later in the incident: deduplicated
