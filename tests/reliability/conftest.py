"""Fixtures for the reliability tests: a production model, a running endpoint, Kafka coordinates.

Test modules cannot import the fixtures of tests/streaming or tests/serving (importlib mode),
so the few pieces these tests share live here, built from the same public functions.
"""

from __future__ import annotations

import pytest

from learnscore.core import kafka_io
from learnscore.core.config import Config
from learnscore.core.ports import free_port
from learnscore.streaming.runtime import ScorerTopics
from tests import support
from tests.support import register_production, wait_for


@pytest.fixture(scope="session")
def logged_model_uri(mlflow_store, stack_config, fitted_model, small_history_events) -> str:
    """The session's small fitted model, logged once the way training logs it."""
    import mlflow

    from learnscore.core.tracking import use_mlflow
    from learnscore.model.features import model_input_from_events
    from learnscore.model.packaging import log_diagnostic_model

    use_mlflow(stack_config)
    with mlflow.start_run(run_name="reliability-tests-model"):
        return log_diagnostic_model(fitted_model, model_input_from_events(small_history_events[0][:5]))


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


def running_endpoint(config: Config, request_log: bool = True):
    """The endpoint on ``serving.port``; yields its base URL once a production model is loaded."""
    return support.running_endpoint(config, request_log=request_log, wait_ready=True)


def produce_located(config: Config, base_topic: str,
                    messages: list[tuple[bytes | None, bytes | None]]
                    | list[tuple[bytes | None, bytes | None, int | None]]) -> list[tuple[str, int, int]]:
    """Send (key, value) pairs — or (key, value, producer timestamp in epoch ms; None: now) — in
    order; return each message's (topic, partition, offset)."""
    producer = kafka_io.producer(config, max_request_size=2 * 1024 * 1024)
    try:
        futures = [producer.send(config.topic(base_topic), key=message[0], value=message[1],
                                 timestamp_ms=message[2] if len(message) > 2 else None)
                   for message in messages]
        producer.flush(timeout=120)
        return [(meta.topic, meta.partition, meta.offset)
                for meta in (future.get(timeout=60) for future in futures)]
    finally:
        producer.close(timeout=10)


def rows_read(spark, config: Config) -> int:
    try:
        table = spark.read.format("delta").load(config.table_path("ops.stream_progress"))
        # the landing query reads every message once
        return table.where("query = 'land'").agg({"rows_read": "sum"}).collect()[0][0] or 0
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
        kafka_io.create_topics(config, [*ScorerTopics.BASE_NAMES])


@pytest.fixture
def rel() -> Reliability:
    return Reliability()
