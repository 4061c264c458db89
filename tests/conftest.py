"""Session fixtures for the real parts: the Kafka broker, Spark, and the MLflow store.

Each test gets its own topic prefix, table paths, checkpoints and model name (``config``),
so tests never see each other's data while sharing one broker, one JVM and one store.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from learnscore.core.config import Config, load_config
from learnscore.core.kafka_io import broker_answers
from learnscore.core.ports import free_port

os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
# A test that forgets to point MLflow at its store must not leave mlflow.db in the checkout.
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:////tmp/learnscore-tests-stray-mlflow.db")
logging.getLogger("kafka").setLevel(logging.WARNING)
logging.getLogger("py4j").setLevel(logging.WARNING)


def pytest_collection_modifyitems(config, items):
    """Files with slow tests run first, then those with integration tests, unit tests last
    (``make test`` schedules whole files on its workers, in collection order with
    ``--no-loadscope-reorder``): the long ones start early and the many short files fill in
    at the end, instead of one worker finishing a long file alone."""
    tier: dict = {}
    for item in items:
        rank = 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("integration") else 2
        tier[item.path] = min(rank, tier.get(item.path, 2))
    items.sort(key=lambda item: tier[item.path])  # stable: the order within a tier is kept


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("learnscore")


@pytest.fixture(scope="session")
def base_config(session_dir) -> Config:
    """Config from conf/ and the environment (make test points it at the test broker)."""
    environ = {**os.environ, "LEARNSCORE__STATE_DIR": str(session_dir / "state")}
    return load_config(environ=environ)


@pytest.fixture(scope="session")
def kafka_broker(base_config, session_dir):
    """The test broker: the one `make test` started, or one started here for a bare `pytest`."""
    if os.environ.get("LEARNSCORE_TEST_TIER") == "unit":
        pytest.fail("a test of the fast tier (make check) asked for the Kafka broker: mark it "
                    "@pytest.mark.integration")
    if broker_answers(base_config.kafka.bootstrap_servers, timeout_s=3):
        yield base_config.kafka.bootstrap_servers
        return
    from learnscore.core.jars import resolve_jars
    from learnscore.stack.kafka_broker import KafkaBroker

    port, controller = free_port(), free_port()
    config = base_config.model_copy(update={
        "broker": base_config.broker.model_copy(update={"port": port, "controller_port": controller}),
    })
    resolve_jars(config)
    broker = KafkaBroker(config)
    broker.up()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.down()


@pytest.fixture(scope="session")
def stack_config(base_config, kafka_broker) -> Config:
    return base_config.model_copy(update={
        "kafka": base_config.kafka.model_copy(update={"bootstrap_servers": kafka_broker}),
        "spark": base_config.spark.model_copy(update={"driver_memory": "3g"}),
    })


@pytest.fixture
def config(stack_config, tmp_path) -> Config:
    """A per-test view of the stack: own topics, tables, checkpoints and model name."""
    tag = uuid.uuid4().hex[:8]
    return stack_config.model_copy(update={
        "kafka": stack_config.kafka.model_copy(update={"topic_prefix": f"t{tag}."}),
        "lake": stack_config.lake.model_copy(update={
            "root": str(tmp_path / "lake"), "checkpoints": str(tmp_path / "checkpoints")}),
        "mlflow": stack_config.mlflow.model_copy(update={"model_name": f"learnscore-test-{tag}"}),
    })


@pytest.fixture(scope="session")
def spark(stack_config):
    from learnscore.core.spark import create_spark_session

    session = create_spark_session(stack_config, app_name="learnscore-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def mlflow_store(stack_config):
    """The embedded MLflow store (SQLite + local artifacts) of this test session."""
    import mlflow

    from learnscore.core.tracking import prepare_store

    prepare_store(stack_config)
    mlflow.set_tracking_uri(stack_config.mlflow.tracking_uri)
    mlflow.set_registry_uri(stack_config.registry_uri)
    return stack_config.mlflow.tracking_uri


# -- model fixtures (batch/, registry/, schemas/features) ---------------------------------------


@pytest.fixture(scope="session")
def small_history(session_dir) -> Path:
    """A seeded simulated history of 3,000 learners (one diagnostic each), written once."""
    from datetime import datetime, timezone

    from learnscore.simulator.history import HistoryOptions, write_history

    folder = session_dir / "history-3k"
    write_history(folder, HistoryOptions(learners=3000, days=30, seed=11,
                                         end=datetime(2026, 11, 1, tzinfo=timezone.utc)))
    return folder


@pytest.fixture(scope="session")
def small_history_events(small_history) -> tuple[list[dict], list[dict]]:
    """(submissions, outcomes) of ``small_history`` as decoded events."""
    import orjson

    def read(name: str) -> list[dict]:
        return [orjson.loads(line) for line in (small_history / name).read_bytes().splitlines()]

    return read("submissions.jsonl"), read("outcomes.jsonl")


@pytest.fixture(scope="session")
def fitted_model(small_history_events):
    """A small DiagnosticModel fitted on the first 2,000 submissions of ``small_history``."""
    from learnscore.model.diagnostic import DiagnosticModel
    from learnscore.model.features import model_input_from_events

    submissions, outcomes = small_history_events
    model_input = model_input_from_events(submissions[:2000])
    return DiagnosticModel(score_params={"max_iter": 40, "max_leaf_nodes": 15},
                           level_params={"max_iter": 20, "max_leaf_nodes": 15}, random_state=0).fit(
        model_input, [o["observed_progress_score"] for o in outcomes[:2000]],
        [o["observed_comprehension_level"] for o in outcomes[:2000]])


@pytest.fixture(scope="session")
def silver_history(spark, stack_config, small_history, tmp_path_factory):
    """``small_history`` imported into silver tables of a shared lake, once per session.

    Returns ``(lake_config, versions)``; tests that only read silver (and write rows keyed by
    their own model name) share it instead of paying for the Delta set-up again.
    """
    from learnscore.batch.importer import import_history

    lake = tmp_path_factory.mktemp("silver-history")
    lake_config = stack_config.model_copy(update={"lake": stack_config.lake.model_copy(update={
        "root": str(lake / "lake"), "checkpoints": str(lake / "checkpoints")})})
    return lake_config, import_history(spark, lake_config, small_history).versions
