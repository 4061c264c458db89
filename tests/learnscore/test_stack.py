"""The local stack against the real broker: produce/consume, clear errors, clean stops."""

import socket
import subprocess
import sys
import time
import uuid

import pytest

from learnscore.core import kafka_io
from learnscore.core.kafka_io import BrokerUnreachable
from learnscore.core.ports import free_port
from learnscore.stack.kafka_broker import KafkaBroker, new_cluster_id
from learnscore.stack.processes import StackError

pytestmark = pytest.mark.integration


def test_produce_and_consume_on_the_real_broker(config):
    topic = config.topic("roundtrip")
    kafka_io.create_topics(config, ["roundtrip"], partitions=1)
    producer = kafka_io.producer(config)
    for index in range(20):
        producer.send(topic, key=b"learner-1", value=f"message-{index}".encode())
    producer.flush()
    producer.close()
    consumer = kafka_io.consumer(config, topic, group_id=f"g-{uuid.uuid4().hex}",
                                 auto_offset_reset="earliest", consumer_timeout_ms=15000)
    values = []
    for message in consumer:
        values.append(message.value.decode())
        if len(values) == 20:
            break
    consumer.close()
    assert values == [f"message-{index}" for index in range(20)]


def test_unreachable_broker_is_a_clear_error_not_a_hang(config):
    dead = config.model_copy(update={"kafka": config.kafka.model_copy(update={
        "bootstrap_servers": f"127.0.0.1:{free_port()}", "request_timeout_s": 3})})
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as info:
        kafka_io.producer(dead)
    assert time.monotonic() - started < 15
    assert "learnscore stack up" in str(info.value) and dead.kafka.bootstrap_servers in str(info.value)


def test_a_taken_port_gives_a_clear_error(config, tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        blocked = config.model_copy(update={"state_dir": tmp_path / "blocked", "broker": config.broker.model_copy(
            update={"port": taken, "controller_port": free_port()})})
        with pytest.raises(StackError) as info:
            KafkaBroker(blocked).up()
    assert f"port {taken}" in str(info.value) and "LEARNSCORE__BROKER__PORT" in str(info.value)


@pytest.mark.slow
def test_stack_cli_up_status_down_leaves_nothing_running(tmp_path):
    """`learnscore stack up` twice, `status`, `down`: the second up is harmless, down stops it."""
    env = {"LEARNSCORE__STATE_DIR": str(tmp_path / "state"),
           "LEARNSCORE__BROKER__PORT": str(free_port()),
           "LEARNSCORE__BROKER__CONTROLLER_PORT": str(free_port())}
    env["LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{env['LEARNSCORE__BROKER__PORT']}"
    import os

    run_env = {**os.environ, **env}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "learnscore", "stack", *args], env=run_env,
                              capture_output=True, text=True, timeout=180)

    started = time.monotonic()
    first = cli("up")
    assert first.returncode == 0, first.stderr
    assert time.monotonic() - started < 60 + 30  # ready in well under a minute (+ interpreter start)
    assert "ready at 127.0.0.1:" + env["LEARNSCORE__BROKER__PORT"] in first.stdout
    second = cli("up")
    assert second.returncode == 0, second.stderr
    status = cli("status")
    assert "kafka" in status.stdout and "running" in status.stdout
    from learnscore.core.config import load_config

    broker = KafkaBroker(load_config(environ=run_env))
    pid = broker.record().pid
    down = cli("down")
    assert "kafka: stopped" in down.stdout
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "stopped" in cli("status").stdout


def test_cluster_ids_never_look_like_an_option():
    # Kafka's storage tool took an id starting with "-" for an option (one format in 64 failed).
    import base64

    ids = [new_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert {len(base64.urlsafe_b64decode(i + "==")) for i in ids} == {16}
