"""The secure profile for real (conf/secure.yaml's broker): the simulator, the streaming scorer
and the retrain worker, each a real ``learnscore`` process logged in as its own SCRAM user (the
first two pick it themselves, as ``kafka.sasl_username: null`` in conf/secure.yaml has them), talk
to a broker that has no PLAINTEXT listener and allows nothing without an ACL (TLS with a keytool
certificate, passwords from the environment). A user without an ACL for a topic is refused; a
wrong password is a clear error within seconds; no secret shows up in any process log or on any
process's command line (``/proc/*/cmdline``, sampled while everything runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import orjson
import psutil
import pytest

from learnscore.core import kafka_io
from learnscore.core.config import Secrets
from learnscore.core.lake import read_table
from learnscore.core.ports import free_port, port_is_free
from learnscore.schemas import topics
from learnscore.stack.kafka_acls import ensure_principals
from learnscore.stack.kafka_broker import KafkaBroker
from learnscore.stack.kafka_security import principal_variable, sasl_ssl_client_config, super_user_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
API_KEY = "apikey-4c1d9e-DO-NOT-LEAK-7f3b2a"
PSEUDONYM_KEY = "pseudonymkey-9a8b7c6d5e4f-DO-NOT-LEAK-0123456789"
ROLE_PASSWORDS = {"scorer": "scorerpass-DO-NOT-LEAK-1a2b-sasl", "endpoint": "endpointpass-DO-NOT-LEAK-3c4d",
                  "retrain_worker": "workerpass-DO-NOT-LEAK-5e6f-sasl", "producer": "producerpass-DO-NOT-LEAK-7a8b"}
BROKER_PASSWORD = "brokerpass-DO-NOT-LEAK-9c0d-sasl"
SECRETS = (API_KEY, PSEUDONYM_KEY, BROKER_PASSWORD, *ROLE_PASSWORDS.values())


@pytest.fixture
def sasl_broker(stack_config, tmp_path, monkeypatch):
    """A broker of its own as the secure profile has it: SASL_SSL only, ACLs, no auto-creation;
    its users, ACLs and topics made as `stack up` makes them. Yields the clients' config."""
    for name, value in ((Secrets.API_KEY, API_KEY), (Secrets.PSEUDONYM_KEY, PSEUDONYM_KEY),
                        ("LEARNSCORE_KAFKA_BROKER_PASSWORD", BROKER_PASSWORD),
                        *((principal_variable(role), password) for role, password in ROLE_PASSWORDS.items())):
        monkeypatch.setenv(name, value)
    tag = uuid.uuid4().hex[:6]
    config = stack_config.model_copy(update={
        "state_dir": tmp_path / "sasl-state",
        "broker": stack_config.broker.model_copy(update={
            "port": free_port(), "controller_port": free_port(), "sasl_ssl_port": free_port(),
            "plaintext_listener": False, "acls": True, "auto_create_topics": False}),
        "kafka": stack_config.kafka.model_copy(update={"topic_prefix": f"s{tag}."}),
        "retrain": stack_config.retrain.model_copy(update={"consumer_group": f"worker-{tag}"}),
        "lake": stack_config.lake.model_copy(update={
            "root": str(tmp_path / "lake"), "checkpoints": str(tmp_path / "checkpoints")}),
        "mlflow": stack_config.mlflow.model_copy(update={"model_name": f"learnscore-sasl-{tag}"}),
    })
    broker = KafkaBroker(config)
    record = broker.up()
    try:
        admin, admin_secrets = super_user_client(config)
        kafka_io.create_topics(admin, topics.ALL_TOPICS, secrets=admin_secrets)
        ensure_principals(config)
        yield sasl_ssl_client_config(config), record.pid
    finally:
        broker.down()


def by_role(env: dict[str, str], role: str) -> dict[str, str]:
    """``env`` without a user name or password: the command picks its own ``kafka.principals``
    user, its password from ``$LEARNSCORE_KAFKA_PASSWORD_<ROLE>`` (how conf/secure.yaml runs)."""
    env = {k: v for k, v in env.items() if k not in ("LEARNSCORE__KAFKA__SASL_USERNAME", Secrets.KAFKA_PASSWORD)}
    return {**env, principal_variable(role): ROLE_PASSWORDS[role]}


def as_role(config, role: str):
    """``(config, secrets)`` of a client logged in as the user of ``role``."""
    user = getattr(config.kafka.principals, role)
    client = config.model_copy(update={"kafka": config.kafka.model_copy(update={"sasl_username": user})})
    return client, Secrets(client, environ={Secrets.KAFKA_PASSWORD: ROLE_PASSWORDS[role]})


def process_env(config, role: str, **extra: str) -> dict[str, str]:
    """The environment of a ``learnscore`` process logged in as the user of ``role``: the SASL_SSL
    listener only, secrets from the environment."""
    kafka = config.kafka
    return {**{k: v for k, v in os.environ.items() if not k.startswith("LEARNSCORE_KAFKA_")},
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "batch")]),
            "LEARNSCORE__STATE_DIR": str(config.state_dir),
            "LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "LEARNSCORE__KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "LEARNSCORE__KAFKA__SASL_MECHANISM": kafka.sasl_mechanism,
            "LEARNSCORE__KAFKA__SASL_USERNAME": getattr(kafka.principals, role),
            "LEARNSCORE__RETRAIN__CONSUMER_GROUP": config.retrain.consumer_group,
            "LEARNSCORE__KAFKA__SSL_CAFILE": str(kafka.ssl_cafile),
            "LEARNSCORE__KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
            "LEARNSCORE__LAKE__ROOT": config.lake.root,
            "LEARNSCORE__LAKE__CHECKPOINTS": config.lake.checkpoints,
            "LEARNSCORE__MLFLOW__TRACKING_URI": config.mlflow.tracking_uri,
            "LEARNSCORE__MLFLOW__ARTIFACT_ROOT": config.mlflow.artifact_root,
            "LEARNSCORE__MLFLOW__MODEL_NAME": config.mlflow.model_name,
            "LEARNSCORE__SPARK__DRIVER_MEMORY": "1g",
            "LEARNSCORE__STREAMING__TRIGGER_SECONDS": "0.5",
            "LEARNSCORE__DRIFT__ENABLED": "false",
            Secrets.KAFKA_PASSWORD: ROLE_PASSWORDS[role], Secrets.API_KEY: API_KEY,
            Secrets.PSEUDONYM_KEY: PSEUDONYM_KEY, **extra}


class ConnectionWatch:
    """Samples the TCP connections of processes (and their children) while they run."""

    def __init__(self):
        self.roots: list[int] = []
        self.remote_ports: set[int] = set()
        self.command_lines: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in list(self.roots):
                try:
                    root = psutil.Process(pid)
                    for process in [root, *root.children(recursive=True)]:
                        self.command_lines.add(" ".join(process.cmdline()))
                        for connection in process.net_connections(kind="tcp"):
                            if connection.raddr:
                                self.remote_ports.add(connection.raddr.port)
                except psutil.Error:
                    continue
            time.sleep(0.1)


def run_cli(args: list[str], env: dict[str, str], log: Path, watch: ConnectionWatch | None = None,
            timeout_s: float = 600) -> subprocess.CompletedProcess:
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "learnscore", *args], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if watch is not None:
            watch.roots.append(process.pid)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"`learnscore {' '.join(args)}` did not finish in {timeout_s:.0f}s:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}") from None
    return subprocess.CompletedProcess(args, code, log.read_text(errors="replace"), "")


def test_the_secure_profile_scores_over_sasl_ssl_with_a_user_and_acls_per_process(sasl_broker, logged_model_uri,
                                                                                     rel, tmp_path):
    config, broker_pid = sasl_broker
    rel.register_production(config, logged_model_uri)
    logs = tmp_path / "logs"
    logs.mkdir()

    # A user without an ACL for a topic is refused: the endpoint's user may not send submissions.
    from kafka.errors import TopicAuthorizationFailedError

    endpoint, endpoint_secrets = as_role(config, "endpoint")
    stranger = kafka_io.producer(endpoint, endpoint_secrets, max_block_ms=10_000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            stranger.send(config.topic(topics.SUBMISSIONS), key=b"k", value=b"{}").get(timeout=30)
    finally:
        stranger.close()

    with ConnectionWatch() as watch:
        watch.roots.append(broker_pid)
        simulated = run_cli(["simulate", "stream", "--rate", "40", "--duration", "3s", "--invalid-ratio", "0.1",
                             "--outcome-delay", "1s", "--seed", "5", "--report", str(tmp_path / "sim.json")],
                            by_role(process_env(config, "producer"), "producer"), logs / "simulator.log", watch)
        assert simulated.returncode == 0, simulated.stdout[-3000:]
        # Everything is in Kafka already: one micro-batch lands, scores and quarantines it all.
        scored = run_cli(["stream", "start", "--max-batches", "1"], by_role(process_env(config, "scorer"), "scorer"),
                         logs / "scorer.log", watch)
        assert scored.returncode == 0, scored.stdout[-3000:]

        request = {"event_id": str(uuid.uuid4()), "schema_version": 1, "trigger": "manual",
                   "event_time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                   "detected_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}
        writer = kafka_io.producer(*as_role(config, "retrain_worker"))
        writer.send(config.topic(topics.RETRAIN_REQUESTS), key=b"manual", value=orjson.dumps(request)).get(30)
        writer.close()
        worker_env = process_env(config, "retrain_worker",
                                 LEARNSCORE__MLFLOW__MODEL_NAME=f"{config.mlflow.model_name}-worker",
                                 LEARNSCORE__RETRAIN__DEBOUNCE_SECONDS="1")
        worked = run_cli(["retrain-worker", "--trainer", "test_retrain_worker:tiny_train", "--promoter",
                          "test_retrain_worker:tiny_promote", "--max-runs", "1", "--idle-exit", "60",
                          "--no-guard", "--no-estimate"], worker_env, logs / "worker.log", watch)
        assert worked.returncode == 0, worked.stdout[-3000:]
        assert "succeeded" in worked.stdout

    # Every connection went to the SASL_SSL listener (or MLflow/Spark's own local ports): there is
    # no other; and no password was on any command line, the broker's and its tools' included.
    assert config.broker.sasl_ssl_port in watch.remote_ports
    assert port_is_free(config.broker.host, config.broker.port)
    assert any("learnscore" in line and "stream" in line for line in watch.command_lines)
    on_command_lines = [secret for secret in SECRETS if any(secret in line for line in watch.command_lines)]
    assert not on_command_lines

    # What went through: exactly what the simulator sent, scored once, refusals with their reasons.
    summary = orjson.loads((tmp_path / "sim.json").read_bytes())
    admin, admin_secrets = super_user_client(config)
    reader = kafka_io.consumer(admin, admin.topic(topics.SCORES), secrets=admin_secrets,
                               auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        scores = list(reader)
    finally:
        reader.close()
    silver, gold = read_table(config, "silver.submissions"), read_table(config, "gold.predictions")
    assert len(silver) == len(gold) == len(scores) == summary["submissions"] > 0
    expected = Counter()
    for reasons in summary["expected_quarantine"].values():
        expected.update(reasons)
    assert Counter(read_table(config, "silver.quarantine")["reason_code"]) == expected
    runs = read_table(config, "ops.retrain_runs")
    assert [s for s in runs["status"] if s != "started"] == ["succeeded"]

    # A wrong password: a clear error in seconds, from the simulator and from the worker.
    for name, role, args in (("simulator-wrong", "producer", ["simulate", "stream", "--duration", "1s"]),
                             ("worker-wrong", "retrain_worker", ["retrain-worker", "--idle-exit", "5"])):
        wrong = {**process_env(config, role), Secrets.KAFKA_PASSWORD: "wrong-password-123"}
        started = time.monotonic()
        refused = run_cli(args, wrong, logs / f"{name}.log", timeout_s=120)
        assert refused.returncode != 0
        user = getattr(config.kafka.principals, role)
        assert f"the SASL login of user '{user}'" in refused.stdout, refused.stdout[-2000:]
        assert "LEARNSCORE_KAFKA_PASSWORD" in refused.stdout
        assert "Traceback" not in refused.stdout and "wrong-password-123" not in refused.stdout
        assert time.monotonic() - started < 60

    # No secret in any log: the three processes, the refused ones, the broker.
    texts = {p.name: p.read_bytes() for p in logs.iterdir()}
    texts["broker.log"] = (config.state_dir / "kafka" / "broker.log").read_bytes()
    leaks = [(name, secret) for name, text in texts.items() for secret in SECRETS if secret.encode() in text]
    assert not leaks, leaks
