"""Helpers the test folders share: waiting, a running endpoint, a production model.

A plain module (``from tests.support import ...``): in importlib mode one conftest cannot import
another's helpers, so the ones several folders need live here, once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from learnscore.core.config import Config
from learnscore.core.waiting import WaitTimedOut, wait_until

ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate: Callable[[], object], timeout_s: float = 240, what: str = "condition",
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


# -- alerts ------------------------------------------------------------------------------------
class WebhookReceiver:
    """A tiny alert webhook receiver in a thread; ``status`` is what it answers; ``bodies`` the
    JSON bodies it got."""

    def __init__(self, status: int = 200):
        self.bodies: list[dict] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# -- a `learnscore stream start` process (kill, cluster and own-model tests) ------------------------


def scorer_env(config, **extra: str) -> dict[str, str]:
    """The per-test config as environment variables for a `learnscore stream start` process."""
    defaults = {"LEARNSCORE__STREAMING__LANDING_TRIGGER_SECONDS": "0.5", "LEARNSCORE__STREAMING__ALIAS_CHECK_SECONDS": "1",
                "LEARNSCORE__STREAMING__LEASE_TTL_SECONDS": "5", "LEARNSCORE__STREAMING__COMPACT_AFTER_WRITES": "6",
                "LEARNSCORE__SPARK__DRIVER_MEMORY": "1g"}
    return process_env(config, **{**defaults, **extra})  # extra overrides a default


class ScorerProcess:
    """`learnscore stream start` in its own process group, its output in a log file."""

    def __init__(self, config, log_path: Path, args: tuple[str, ...] = (), **env: str):
        self.env, self.log_path, self.args = scorer_env(config, **env), log_path, args
        self.process: subprocess.Popen | None = None
        self.offset = 0

    def start(self) -> None:
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "learnscore", "stream", "start", *self.args],
                                            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def logged(self, pattern: str) -> int:
        text = self.log_path.read_text(errors="replace")[self.offset:]
        return len(re.findall(pattern, text))

    def wait_for_log(self, pattern: str, what: str, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.logged(pattern):
            assert self.process.poll() is None, f"the scorer exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout_s}s:\n{self.tail()}"
            time.sleep(0.1)

    def kill(self, signum=signal.SIGKILL, timeout_s: float = 180) -> int:
        os.killpg(self.process.pid, signum)  # the whole group: Python, the JVM, the UDF workers
        return self.process.wait(timeout=timeout_s)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
