"""A registry that goes away: the endpoint keeps serving its model and says so."""

from __future__ import annotations

import httpx
import pytest

from learnscore.core.ports import free_port
from learnscore.core.tracking import use_mlflow
from learnscore.stack.mlflow_server import MlflowUi

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_registry_unreachable_keeps_serving_and_says_so(serving_config, mlflow_store, api_key, helpers, tmp_path):
    version = helpers.register_version(serving_config)
    helpers.set_alias(serving_config, "production", version)
    # The registry as a real MLflow tracking server over the test store, which we can stop.
    server_config = serving_config.model_copy(update={
        "state_dir": tmp_path / "mlflow-server",
        "mlflow": serving_config.mlflow.model_copy(update={"ui_port": free_port()}),
    })
    registry = MlflowUi(server_config)
    registry.up()
    config = serving_config.model_copy(update={
        "mlflow": serving_config.mlflow.model_copy(update={"tracking_uri": registry.url, "registry_uri": None}),
        "serving": serving_config.serving.model_copy(update={"registry_timeout_s": 2.0}),
    })
    try:
        with helpers.running_endpoint(config, request_log=False) as base:
            helpers.wait_for(lambda: helpers.ready_version(base) == version, what="the model via the server")
            registry.down()
            helpers.wait_for(lambda: httpx.get(f"{base}/readyz").json()["status"] == "degraded",
                             what="the registry noticed as unreachable")
            ready = httpx.get(f"{base}/readyz")
            metrics = httpx.get(f"{base}/metrics", headers={"X-API-Key": api_key}).text
            scored = httpx.post(f"{base}/v1/score", json=helpers.submission(1),
                                headers={"X-API-Key": api_key})
            registry.up()
            helpers.wait_for(lambda: httpx.get(f"{base}/readyz").json()["status"] == "ready",
                             timeout_s=60, what="the registry back")
            metrics_back = httpx.get(f"{base}/metrics", headers={"X-API-Key": api_key}).text
    finally:
        registry.down()
        use_mlflow(serving_config)  # the endpoint pointed MLflow at the server: back to the store

    assert ready.status_code == 200
    body = ready.json()
    assert body["model_loaded"] is True and body["registry"]["reachable"] is False
    # An open route: no version, model name or registry location.
    assert "model" not in body and config.mlflow.model_name not in ready.text and registry.url not in ready.text
    assert "learnscore_serving_registry_reachable 0.0" in metrics
    assert f'learnscore_serving_model_loaded{{alias="production",model_name="{config.mlflow.model_name}",' \
           f'model_version="{version}"}} 1.0' in metrics
    assert scored.status_code == 200 and scored.json()["model_version"] == version
    assert "learnscore_serving_registry_reachable 1.0" in metrics_back
