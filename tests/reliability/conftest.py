"""Fixtures for the reliability tests: a production model, a running endpoint, Kafka coordinates.

Test modules cannot import the fixtures of tests/streaming or tests/serving (importlib mode),
so the few pieces these tests share live here, built from the same public functions.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import pytest

from learnscore import kafka_io
from learnscore.config import Config
from learnscore.stack.processes import free_port
from schemas import topics


@pytest.fixture(scope="session")
def logged_model_uri(mlflow_store, stack_config, fitted_model, small_history_events) -> str:
    """The session's small fitted model, logged once the way training logs it."""
    import mlflow

    from batch.packaging import log_diagnostic_model
    from learnscore.tracking import use_mlflow
    from schemas.features import model_input_from_events

    use_mlflow(stack_config)
    with mlflow.start_run(run_name="reliability-tests-model"):
        return log_diagnostic_model(fitted_model, model_input_from_events(small_history_events[0][:5]))


def register_production(config: Config, model_uri: str) -> str:
    """Register ``model_uri`` under the config's model name and make it ``production``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from learnscore.tracking import use_mlflow

    use_mlflow(config)
    version = str(mlflow.register_model(model_uri, config.mlflow.model_name).version)
    MlflowClient().set_registered_model_alias(config.mlflow.model_name, "production", version)
    return version


@pytest.fixture
def rel_config(config) -> Config:
    """The per-test config: quick trigger and alias checks, the endpoint on a free port."""
    return config.model_copy(update={
        "streaming": config.streaming.model_copy(update={"trigger_seconds": 0.5,
                                                         "alias_check_seconds": 0.5}),
        "serving": config.serving.model_copy(update={"alias_check_seconds": 0.3, "port": free_port()}),
    })


@pytest.fixture
def production(rel_config, logged_model_uri) -> str:
    """The production version of this test's model name."""
    return register_production(rel_config, logged_model_uri)


@contextlib.contextmanager
def running_endpoint(config: Config, request_log: bool = True) -> Iterator[str]:
    """The endpoint under a real uvicorn server on ``serving.port``; yields its base URL once a
    production model is loaded."""
    import httpx
    import uvicorn

    from serving.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(config, request_log=request_log), host="127.0.0.1",
                                           port=config.serving.port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{config.serving.port}"
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 30, "the endpoint to start")
        assert thread.is_alive(), "the endpoint did not start"
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 60,
                 "a loaded production model")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.25)


def produce_located(config: Config, base_topic: str,
                    messages: list[tuple[bytes | None, bytes | None]]) -> list[tuple[str, int, int]]:
    """Send (key, value) pairs in order; return each message's (topic, partition, offset)."""
    producer = kafka_io.producer(config, max_request_size=2 * 1024 * 1024)
    try:
        futures = [producer.send(config.topic(base_topic), key=key, value=value) for key, value in messages]
        producer.flush(timeout=120)
        return [(meta.topic, meta.partition, meta.offset)
                for meta in (future.get(timeout=60) for future in futures)]
    finally:
        producer.close(timeout=10)


def rows_read(spark, config: Config) -> int:
    try:
        table = spark.read.format("delta").load(config.table_path("ops.stream_progress"))
        return table.agg({"rows_read": "sum"}).collect()[0][0] or 0
    except Exception:  # noqa: BLE001 - the table does not exist before the first batch
        return 0


def consume_all(config: Config, base_topic: str, idle_ms: int = 5000) -> list:
    consumer = kafka_io.consumer(config, config.topic(base_topic), auto_offset_reset="earliest",
                                 consumer_timeout_ms=idle_ms)
    try:
        return list(consumer)
    finally:
        consumer.close()


class Reliability:
    """The helpers above as one fixture (test modules cannot import this conftest)."""

    register_production = staticmethod(register_production)
    running_endpoint = staticmethod(running_endpoint)
    wait_for = staticmethod(wait_for)
    produce_located = staticmethod(produce_located)
    rows_read = staticmethod(rows_read)
    consume_all = staticmethod(consume_all)

    @staticmethod
    def create_stream_topics(config: Config) -> None:
        kafka_io.create_topics(config, [topics.SUBMISSIONS, topics.OUTCOMES, topics.ENDPOINT_REQUESTS,
                                        topics.SCORES, topics.SCORER_WAKEUPS])


@pytest.fixture
def rel() -> Reliability:
    return Reliability()
