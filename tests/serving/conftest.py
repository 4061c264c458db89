"""Fixtures for the endpoint tests: real registered model versions, a running endpoint, events.

Two real :class:`learnscore.model.diagnostic.DiagnosticModel` versions are logged once per session with
``learnscore.model.packaging.log_diagnostic_model`` (the training job's call): ``first`` is the session's
``fitted_model``; ``second`` is fitted with other hyperparameters on a subset, so its
predictions differ and a test can tell which version scored a request. Each test registers
them under its own model name (``config.mlflow.model_name``), which costs milliseconds.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from learnscore.core.config import Config, Secrets
from learnscore.core.ports import free_port
from tests.support import running_endpoint, wait_for

HELD_OUT = 2000  # fitted_model saw the first 2,000 submissions of small_history


@dataclass(frozen=True)
class LoggedModels:
    """Model URIs of the logged versions and the fitted models behind them."""

    uris: dict[str, str]
    models: dict[str, Any]


@pytest.fixture(scope="session")
def logged_models(mlflow_store, stack_config, fitted_model, small_history_events) -> LoggedModels:
    import mlflow

    from learnscore.core.tracking import use_mlflow
    from learnscore.model.diagnostic import DiagnosticModel
    from learnscore.model.features import model_input_from_events
    from learnscore.model.packaging import log_diagnostic_model

    submissions, outcomes = small_history_events
    second = DiagnosticModel(score_params={"max_iter": 15, "max_leaf_nodes": 7},
                             level_params={"max_iter": 8, "max_leaf_nodes": 7}, random_state=1).fit(
        model_input_from_events(submissions[:1000]),
        [o["observed_progress_score"] for o in outcomes[:1000]],
        [o["observed_comprehension_level"] for o in outcomes[:1000]])
    use_mlflow(stack_config)
    example = model_input_from_events(submissions[:3])
    uris = {}
    for name, model in (("first", fitted_model), ("second", second)):
        with mlflow.start_run(run_name=f"serving-tests-{name}"):
            uris[name] = log_diagnostic_model(model, example)
    return LoggedModels(uris, {"first": fitted_model, "second": second})


def big_submission(seed: int, responses: int) -> dict[str, Any]:
    """A valid DiagnosticSubmitted with ``responses`` answers (for body-size limits)."""
    rnd = random.Random(seed)
    return {
        "event_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
        "schema_version": 1, "event_time": "2026-11-05T10:00:00Z", "learner_id": f"learner-{seed}",
        "assessment_id": "diag-math-v1", "subject": "math", "grade_level": 5,
        "responses": [{"item_id": f"math.algebra.v1.{k:03d}", "skill": "algebra",
                       "correct": rnd.random() < 0.6, "response_time_ms": rnd.randint(2000, 40000),
                       "attempts": 1, "hint_used": False} for k in range(responses)],
    }


def set_alias(config: Config, alias: str, version: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=config.mlflow.tracking_uri, registry_uri=config.registry_uri) \
        .set_registered_model_alias(config.mlflow.model_name, alias, version)


@pytest.fixture
def serving_config(config) -> Config:
    """The per-test config with a quick alias check."""
    return config.model_copy(update={"serving": config.serving.model_copy(update={
        "alias_check_seconds": 0.3, "port": free_port()})})


@pytest.fixture
def api_key(serving_config) -> str:
    return Secrets(serving_config).api_key.get_secret_value()


def ready_version(base: str, api_key: str) -> str | None:
    """The production version the endpoint serves (None before one is loaded); /v1/model names
    it to holders of the key (the open /readyz does not)."""
    answer = httpx.get(f"{base}/v1/model", headers={"X-API-Key": api_key}, timeout=5)
    answer.raise_for_status()
    production = answer.json()["production"]
    return production["version"] if production else None


class Helpers:
    """What the endpoint tests share (importlib mode gives tests no package to import from)."""

    set_alias = staticmethod(set_alias)
    running_endpoint = staticmethod(running_endpoint)
    wait_for = staticmethod(wait_for)
    big_submission = staticmethod(big_submission)

    def __init__(self, logged: LoggedModels, submissions: list[dict], api_key: str):
        self.logged = logged
        self._held_out = submissions[HELD_OUT:]
        self.api_key = api_key

    def ready_version(self, base: str, api_key: str | None = None) -> str | None:
        return ready_version(base, api_key or self.api_key)

    def register_version(self, config: Config, which: str = "first") -> str:
        """Register the logged ``which`` model as a new version of ``config.mlflow.model_name``."""
        import mlflow

        from learnscore.core.tracking import use_mlflow

        use_mlflow(config)  # an endpoint under test may have pointed MLflow elsewhere
        registered = mlflow.register_model(self.logged.uris[which], config.mlflow.model_name)
        return str(registered.version)

    def submission(self, index: int) -> dict[str, Any]:
        """A simulated submission no model of the session was fitted on (cycles after 1,000)."""
        return self._held_out[index % len(self._held_out)]

    def expected(self, which: str, events: list[dict]) -> list[float]:
        """The progress scores the ``which`` model gives ``events``, computed in-process."""
        from learnscore.model.features import model_input_from_events

        predicted = self.logged.models[which].predict(model_input_from_events(events))
        return predicted["progress_score"].tolist()


@pytest.fixture
def helpers(logged_models, small_history_events, api_key) -> Helpers:
    return Helpers(logged_models, small_history_events[0], api_key)
