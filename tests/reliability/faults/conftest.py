"""Helpers for the fault tests: a broker of the test's own (which it may stop), the scorer in a
thread it can stop, the endpoint, registered versions, table counts."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest

from learnscore.core.config import Config
from learnscore.core.ports import free_port
from tests import support
from tests.support import wait_for


def with_own_broker(config: Config, state_dir: Path) -> Config:
    """``config`` pointed at a broker of its own (own state folder, free ports)."""
    port = free_port()
    return config.model_copy(update={
        "state_dir": state_dir,
        "broker": config.broker.model_copy(update={"port": port, "controller_port": free_port(),
                                                   "sasl_ssl_port": None}),
        "kafka": config.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"}),
    })


def register_production(config: Config, model, model_input, alias: str | None = "production") -> str:
    """Log ``model`` as training does, register it under the config's name, point ``alias`` at it."""
    import mlflow

    from learnscore.core.tracking import use_mlflow
    from learnscore.model.packaging import log_diagnostic_model

    use_mlflow(config)
    with mlflow.start_run(run_name="reliability-test-model"):
        model_uri = log_diagnostic_model(model, model_input)
    return support.register_production(config, model_uri, alias)


def running_endpoint(config: Config):
    """The REST endpoint (with its request log) on a free port; yields its base URL."""
    return support.running_endpoint(config, port=free_port())


def messages(events: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(event["learner_id"].encode(), orjson.dumps(event)) for event in events]


def table_count(config: Config, table: str) -> int:
    """Rows in a Delta table of ``config``'s lake (read without Spark); 0 before it exists."""
    from learnscore.core.lake import read_table

    return len(read_table(config, table))


def id_counts(spark, config: Config, table: str, column: str = "event_id") -> Counter:
    frame = spark.read.format("delta").load(config.table_path(table))
    return Counter(row[0] for row in frame.select(column).collect())


class ScorerThread:
    """``run_scorer`` in a thread of the test (on the session's Spark), stopped through ``stop``."""

    def __init__(self, config):
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.summary = None
        self._thread = threading.Thread(target=self._run, args=(config,), daemon=True)

    def _run(self, config) -> None:
        from learnscore.streaming.job import run_scorer

        try:
            self.summary = run_scorer(config, handle_signals=False, stop=self._stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def check(self) -> bool:
        assert self.alive(), f"the scorer stopped: {self.error!r}"
        return True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=180)


class Kit:
    """What the fault tests share (test modules cannot import conftest in importlib mode)."""

    wait_for = staticmethod(wait_for)
    with_own_broker = staticmethod(with_own_broker)
    register_production = staticmethod(register_production)
    messages = staticmethod(messages)
    id_counts = staticmethod(id_counts)
    table_count = staticmethod(table_count)
    running_endpoint = staticmethod(running_endpoint)
    ScorerThread = ScorerThread


@pytest.fixture
def kit() -> Kit:
    return Kit()


@pytest.fixture
def fault_config(config) -> Config:
    """The per-test config with a quick trigger and alias check."""
    return config.model_copy(update={"streaming": config.streaming.model_copy(update={
        "trigger_seconds": 0.5, "alias_check_seconds": 0.5})})


@pytest.fixture
def restore_mlflow(stack_config):
    """Point MLflow back at the session's store after a test that pointed it at a server."""
    yield
    from learnscore.core.tracking import use_mlflow

    use_mlflow(stack_config)
