"""Helpers the test folders share: waiting, a running endpoint, a production model.

A plain module (``from tests.support import ...``): in importlib mode one conftest cannot import
another's helpers, so the ones several folders need live here, once.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from learnscore.core.config import Config
from learnscore.core.waiting import WaitTimedOut, wait_until

ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate: Callable[[], object], timeout_s: float = 120, what: str = "condition",
             interval_s: float = 0.25, *, scorer=None):
    """Call ``predicate`` until it returns something truthy (returned); fail after ``timeout_s``,
    or as soon as ``scorer`` (a running ``learnscore.streaming.job.Scorer``) reports a failure."""
    def scorer_alive() -> None:
        if scorer is not None and scorer.failure():
            raise AssertionError(f"the scorer failed: {scorer.failure()}")

    try:
        return wait_until(predicate, timeout_s, what, interval_s=interval_s, check=scorer_alive)
    except WaitTimedOut as exc:
        raise AssertionError(str(exc)) from None


@contextlib.contextmanager
def running_endpoint(config: Config, *, request_log: bool = True, port: int | None = None,
                     wait_ready: bool = False) -> Iterator[str]:
    """The REST endpoint under a real uvicorn server in a thread; yields its base URL.

    ``port`` defaults to ``serving.port``; ``wait_ready`` also waits for a loaded production
    model (``/readyz`` answers 200).
    """
    import uvicorn

    from learnscore.serving.app import create_app

    port = port or config.serving.port
    server = uvicorn.Server(uvicorn.Config(create_app(config, request_log=request_log), host="127.0.0.1",
                                           port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 30, "the endpoint to start", 0.05)
        assert thread.is_alive(), "the endpoint did not start"
        if wait_ready:
            wait_for(lambda: _ready(base), 120, "a loaded production model")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _ready(base: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def register_production(config: Config, model_uri: str, alias: str | None = "production") -> str:
    """Register ``model_uri`` under the config's model name and point ``alias`` at it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from learnscore.core.tracking import use_mlflow

    use_mlflow(config)
    version = str(mlflow.register_model(model_uri, config.mlflow.model_name).version)
    if alias:
        MlflowClient().set_registered_model_alias(config.mlflow.model_name, alias, version)
    return version


def process_env(config: Config, pythonpath: Iterable[Path | str] = (), **extra: str) -> dict[str, str]:
    """The environment of a ``learnscore`` process a test starts: the per-test config's broker,
    topics, lake and MLflow store as ``LEARNSCORE__`` variables (the test process's own are
    dropped), the project (and ``pythonpath``) importable, then ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEARNSCORE__")}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, pythonpath)]),
        "LEARNSCORE__STATE_DIR": str(config.state_dir),
        "LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers,
        "LEARNSCORE__KAFKA__TOPIC_PREFIX": config.kafka.topic_prefix,
        "LEARNSCORE__LAKE__ROOT": config.lake.root,
        "LEARNSCORE__LAKE__CHECKPOINTS": config.lake.checkpoints,
        "LEARNSCORE__MLFLOW__TRACKING_URI": config.mlflow.tracking_uri,
        "LEARNSCORE__MLFLOW__ARTIFACT_ROOT": config.mlflow.artifact_root,
        "LEARNSCORE__MLFLOW__MODEL_NAME": config.mlflow.model_name,
    })
    env.update(extra)
    return env


# -- the scoring query's handler, driven directly (tests/streaming) ----------------------------
KAFKA_ROWS = ("raw_key binary, raw_value binary, kafka_topic string, kafka_partition int, kafka_offset bigint, "
              "kafka_timestamp timestamp")


def decoded_batch(spark, config, events, first_offset=0):
    """A micro-batch as the scoring query's plan hands it to the handler."""
    from datetime import datetime, timedelta, timezone

    import orjson

    from learnscore.streaming.decode import SUBMISSION, decode_events
    from learnscore.streaming.runtime import ScorerTopics

    sent = datetime.now(timezone.utc) - timedelta(seconds=5)
    topic = ScorerTopics.of(config).submissions
    rows = [(e["learner_id"].encode(), orjson.dumps(e), topic, 0, first_offset + i, sent)
            for i, e in enumerate(events)]
    return decode_events(spark.createDataFrame(rows, KAFKA_ROWS), SUBMISSION, config.domain.contract())


class ScoringHandler:
    """The scoring query's handler, driven directly; what it published, read back from Kafka."""

    def __init__(self, kit, config, tmp_path):
        from learnscore.core import kafka_io
        from learnscore.streaming.model_cache import ModelCache
        from learnscore.streaming.runtime import QueryRuntime, ScorerTopics
        from learnscore.streaming.scoring import RetryCatchUp, make_scoring_handler

        names = ScorerTopics.of(config)
        kafka_io.create_topics(config, list(ScorerTopics.BASE_NAMES))
        checkpoint = str(tmp_path / "score")
        self.runtime = QueryRuntime("score", config, checkpoint)
        self.runtime.set_query_id("model-states")
        self.catch_up = RetryCatchUp(kit.spark, config, names, checkpoint)
        self.handle = make_scoring_handler(kit.spark, config, self.runtime, ModelCache(kit.spark, config),
                                           self.catch_up)
        self.config, self.names = config, names

    def __call__(self, batch, batch_id):
        self.handle(batch, batch_id)

    def read(self, topic):
        from learnscore.core import kafka_io

        consumer = kafka_io.consumer(self.config, topic, auto_offset_reset="earliest", consumer_timeout_ms=3000)
        try:
            return list(consumer)
        finally:
            consumer.close()

    def scores(self):
        from learnscore.schemas.events import SCORE_ISSUED, validate_bytes

        return [validate_bytes(SCORE_ISSUED, m.value).event for m in self.read(self.names.scores)]

    def retries(self):
        import orjson

        from learnscore.streaming.scoring import FAILED_VERSION_HEADER

        return [(orjson.loads(m.value)["event_id"], dict(m.headers)[FAILED_VERSION_HEADER].decode())
                for m in self.read(self.names.retries)]

    def progress(self):
        import orjson

        return [orjson.loads(m.value) for m in self.read(self.names.progress)]
