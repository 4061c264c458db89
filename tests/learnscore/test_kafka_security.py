"""The local broker's SASL_SSL listener: TLS with a keytool certificate, SCRAM login."""

import threading
import uuid

import psutil
import pytest

from learnscore.core import kafka_io
from learnscore.core.config import Secrets
from learnscore.core.kafka_io import BrokerAuthenticationFailed
from learnscore.core.ports import free_port
from learnscore.stack.kafka_broker import KafkaBroker
from learnscore.stack.kafka_security import sasl_ssl_client_config, tls_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def sasl_broker(stack_config, tmp_path, monkeypatch):
    monkeypatch.setenv(Secrets.KAFKA_PASSWORD, "correct-horse-battery")
    config = stack_config.model_copy(update={
        "state_dir": tmp_path / "sasl-state",
        "broker": stack_config.broker.model_copy(update={
            "port": free_port(), "controller_port": free_port(), "sasl_ssl_port": free_port()}),
        "kafka": stack_config.kafka.model_copy(update={"sasl_username": "learnscore"}),
    })
    broker = KafkaBroker(config)
    broker.up()
    yield sasl_ssl_client_config(config)
    broker.down()


def test_clients_talk_over_sasl_ssl_and_a_wrong_password_is_a_clear_error(sasl_broker, monkeypatch):
    topic = f"secure-{uuid.uuid4().hex[:6]}"
    producer = kafka_io.producer(sasl_broker)
    producer.send(topic, key=b"k", value=b"over TLS").get(timeout=30)
    producer.close()
    consumer = kafka_io.consumer(sasl_broker, topic, auto_offset_reset="earliest",
                                 consumer_timeout_ms=20000, group_id="secure")
    assert next(iter(consumer)).value == b"over TLS"
    consumer.close()

    monkeypatch.setenv(Secrets.KAFKA_PASSWORD, "wrong-password")
    with pytest.raises(BrokerAuthenticationFailed) as info:
        kafka_io.producer(sasl_broker)
    assert "the SASL login of user 'learnscore'" in str(info.value)
    assert "wrong-password" not in str(info.value)


class _CommandLineWatch:
    """Every command line of every process, sampled until stopped (short-lived ones included:
    keytool and the storage tool run for a second or more)."""

    def __init__(self):
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for process in psutil.process_iter(["cmdline"]):
                self.seen.add(" ".join(process.info["cmdline"] or []))
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_no_secret_appears_on_a_command_line_while_the_broker_is_made_and_runs(stack_config, tmp_path, monkeypatch):
    password = "staple-" + uuid.uuid4().hex
    monkeypatch.setenv(Secrets.KAFKA_PASSWORD, password)
    config = stack_config.model_copy(update={
        "state_dir": tmp_path / "cmdline-state",
        "broker": stack_config.broker.model_copy(update={
            "port": free_port(), "controller_port": free_port(), "sasl_ssl_port": free_port()}),
        "kafka": stack_config.kafka.model_copy(update={"sasl_username": "learnscore"}),
    })
    broker = KafkaBroker(config)
    try:
        with _CommandLineWatch() as watch:
            broker.up()
        keystore_password = (tls_dir(config) / "keystore.password").read_text().strip()
        broker_lines = [line for line in watch.seen if str(config.state_dir) in line]
        assert any("keytool" in line for line in broker_lines)      # the watch saw the short-lived tools
        assert any("StorageTool" in line or "format.args" in line for line in broker_lines)
        assert [line for line in watch.seen if password in line] == []
        assert [line for line in watch.seen if keystore_password in line] == []
        for process in psutil.process_iter(["cmdline"]):
            line = " ".join(process.info["cmdline"] or [])
            assert password not in line and keystore_password not in line
        assert not (config.state_dir / "kafka" / "format.args").exists()
        producer = kafka_io.producer(sasl_ssl_client_config(config))  # the user the file created logs in
        producer.close()
    finally:
        broker.down()
