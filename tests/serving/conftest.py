"""Fixtures for the endpoint tests: real registered model versions, a running endpoint, events."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from learnscore.config import Config, Secrets
from learnscore.stack.processes import free_port
from serving.bench import sample_submission

DEV_MODEL = Path(__file__).with_name("_dev_model.py")


def make_submission(seed: int, responses: int = 20) -> dict[str, Any]:
    """A valid DiagnosticSubmitted, the same for the same seed."""
    return sample_submission(seed, responses)


def register_version(config: Config) -> str:
    """Register one more version of ``config.mlflow.model_name``; return its number."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from learnscore.tracking import use_mlflow

    use_mlflow(config)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(DEV_MODEL),
                                       registered_model_name=config.mlflow.model_name)
    return str(info.registered_model_version)


def set_alias(config: Config, alias: str, version: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=config.mlflow.tracking_uri, registry_uri=config.registry_uri) \
        .set_registered_model_alias(config.mlflow.model_name, alias, version)


@pytest.fixture
def submission():
    return make_submission


@pytest.fixture
def serving_config(config) -> Config:
    """The per-test config with a quick alias check."""
    return config.model_copy(update={"serving": config.serving.model_copy(update={
        "alias_check_seconds": 0.3, "port": free_port()})})


@pytest.fixture
def api_key(serving_config) -> str:
    return Secrets(serving_config).api_key.get_secret_value()


@contextlib.contextmanager
def running_endpoint(config: Config, request_log: bool = True) -> Iterator[str]:
    """The endpoint under a real uvicorn server on a free port; yields its base URL."""
    import uvicorn

    from serving.app import create_app

    app = create_app(config, request_log=request_log)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.serving.port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{config.serving.port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the endpoint did not start")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for(predicate, timeout_s: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def ready_version(base: str) -> str | None:
    answer = httpx.get(f"{base}/readyz", timeout=5)
    return answer.json()["model"]["version"] if answer.status_code == 200 else None


@pytest.fixture
def helpers():
    """The module-level helpers, for tests (importlib mode gives tests no package to import from)."""
    return type("Helpers", (), {
        "register_version": staticmethod(register_version), "set_alias": staticmethod(set_alias),
        "running_endpoint": staticmethod(running_endpoint), "wait_for": staticmethod(wait_for),
        "ready_version": staticmethod(ready_version), "make_submission": staticmethod(make_submission),
    })
