"""The local broker's SASL_SSL listener: TLS with a keytool certificate, SCRAM login."""

import uuid

import pytest

from learnscore.core import kafka_io
from learnscore.core.config import Secrets
from learnscore.core.kafka_io import BrokerAuthenticationFailed
from learnscore.core.ports import free_port
from learnscore.stack.kafka_broker import KafkaBroker
from learnscore.stack.kafka_security import sasl_ssl_client_config

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
