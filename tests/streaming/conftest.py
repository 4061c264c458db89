"""Helpers for the scorer tests: seeded events, producing them, waiting for the stream."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from learnscore.core import kafka_io
from learnscore.schemas.events import LEVELS, SUBJECTS
from learnscore.streaming.runtime import ScorerTopics
from tests.support import wait_for

# Submissions 60 days ago, outcomes 30 days later: all in the past, stable within a session.
BASE_TIME = (datetime.now(timezone.utc) - timedelta(days=60)).replace(hour=9, minute=0, second=0,
                                                                      microsecond=0)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Events:
    """Seeded, valid DiagnosticSubmitted / OutcomeObserved events (and broken ones)."""

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)

    def submission(self, index: int, responses: int = 12, event_time: datetime | None = None) -> dict:
        rng = self.rng
        skills = ["fractions", "decimals", "geometry", "algebra"]
        return {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "schema_version": 1,
            "event_time": _stamp(event_time or BASE_TIME + timedelta(seconds=index)),
            "learner_id": f"learner-{index:05d}",
            "assessment_id": f"diag-{index % 3}",
            "subject": SUBJECTS[index % len(SUBJECTS)],
            "grade_level": 1 + index % 12,
            "responses": [{
                "item_id": f"item-{rng.randrange(200):03d}",
                "skill": skills[rng.randrange(len(skills))],
                "correct": rng.random() < 0.6,
                "response_time_ms": rng.randrange(2_000, 90_000),
                "attempts": 1 + rng.randrange(3),
                "hint_used": rng.random() < 0.2,
            } for _ in range(responses)],
        }

    def outcome(self, submission: dict, index: int) -> dict:
        return {
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "schema_version": 1,
            "event_time": _stamp(BASE_TIME + timedelta(days=30, seconds=index)),
            "submission_event_id": submission["event_id"],
            "learner_id": submission["learner_id"],
            "observed_progress_score": round(self.rng.uniform(0, 100), 2),
            "observed_comprehension_level": LEVELS[index % len(LEVELS)],
        }


# Broken submissions and the reason code the contract gives each.
def broken_submissions(events: Events) -> list[tuple[bytes, str]]:
    def variant(change) -> bytes:
        event = events.submission(10_000 + len(cases))
        change(event)
        return orjson.dumps(event)

    cases: list[tuple[bytes, str]] = []
    cases.append((b"{not json", "not_json"))
    cases.append((variant(lambda e: e.pop("learner_id")), "missing_field"))
    cases.append((variant(lambda e: e.update(grade_level=13)), "out_of_range"))
    cases.append((variant(lambda e: e.update(subject="astrology")), "unknown_value"))
    cases.append((variant(lambda e: e.update(event_id="not-a-uuid")), "invalid_uuid"))
    cases.append((variant(lambda e: e.update(responses=[])), "too_few_items"))
    cases.append((b"[1, 2, 3]", "not_an_object"))
    return cases


def produce(config, base_topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Send (key, value) pairs to the deployed topic and wait until all are acknowledged."""
    producer = kafka_io.producer(config)
    try:
        for key, value in messages:
            producer.send(config.topic(base_topic), key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


def as_messages(events: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(e["learner_id"].encode(), orjson.dumps(e)) for e in events]


class StreamKit:
    """What a scorer test needs, as one fixture (test modules cannot import conftest)."""

    def __init__(self, spark, config, seed: int = 7):
        self.spark, self.config = spark, config
        self.events = Events(seed)
        self.wait_for = wait_for
        self.as_messages = as_messages

    def broken_submissions(self) -> list[tuple[bytes, str]]:
        return broken_submissions(self.events)

    def produce(self, base_topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
        produce(self.config, base_topic, messages)

    def table(self, name: str):
        return self.spark.read.format("delta").load(self.config.table_path(name))

    def rows_read(self) -> int:
        """Messages the landing query has read (the other queries read what it lands, or parts)."""
        try:
            return (self.table("ops.stream_progress").where("query = 'land'").agg({"rows_read": "sum"})
                    .collect()[0][0] or 0)
        except Exception:  # noqa: BLE001 - the table does not exist before the scorer starts
            return 0

    def wait_rows_read(self, total: int, scorer=None, timeout_s: float = 180) -> None:
        def done() -> bool:
            if scorer is not None and scorer.failure():
                raise AssertionError(f"the scorer failed: {scorer.failure()}")
            return self.rows_read() >= total

        wait_for(done, timeout_s, what=f"{total} rows read by the landing query")

    def progress(self, query: str):
        """The ``ops.stream_progress`` rows of one query, in batch order."""
        return self.table("ops.stream_progress").where(f"query = '{query}'").orderBy("batch_id").collect()


@pytest.fixture
def stream_config(config):
    """The per-test config with a quick trigger and alias check for tests."""
    return config.model_copy(update={"streaming": config.streaming.model_copy(update={
        "trigger_seconds": 0.5, "alias_check_seconds": 0.5})})


@pytest.fixture
def kit(spark, stream_config) -> StreamKit:
    kafka_io.create_topics(stream_config, [*ScorerTopics.BASE_NAMES])
    return StreamKit(spark, stream_config)


# -- models (the project's real model, small and seeded) ----------------------------------------


@pytest.fixture(scope="session")
def small_model(fitted_model, small_history_events):
    """The session's small fitted DiagnosticModel and a little model input for its signature."""
    from learnscore.model.features import model_input_from_events

    return fitted_model, model_input_from_events(small_history_events[0][:20])


def register_model(config, model, model_input, alias: str | None = "production") -> str:
    """Log ``model`` the way training does, register it under the config's name, set ``alias``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from learnscore.core.tracking import use_mlflow
    from learnscore.model.packaging import log_diagnostic_model

    use_mlflow(config)
    with mlflow.start_run(run_name="scorer-test-model"):
        model_uri = log_diagnostic_model(model, model_input)
    version = str(mlflow.register_model(model_uri, config.mlflow.model_name).version)
    if alias:
        MlflowClient().set_registered_model_alias(config.mlflow.model_name, alias, version)
    return version


def move_production(config, version: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_registered_model_alias(config.mlflow.model_name, "production", version)


@pytest.fixture
def models(kit, small_model, mlflow_store):
    """Register versions for this test: ``models.register(alias=...)``, ``models.promote(v)``."""

    class Models:
        def register(self, model=None, alias: str | None = "production") -> str:
            return register_model(kit.config, model or small_model[0], small_model[1], alias)

        def promote(self, version: str) -> None:
            move_production(kit.config, version)

    return Models()


@pytest.fixture
def production_model(models) -> str:
    return models.register()
