"""Topics on a broker that does not auto-create them: learnscore creates each, with its settings."""

import uuid

import pytest
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaTimeoutError

from learnscore.core import kafka_io
from learnscore.core.ports import free_port
from learnscore.stack.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def strict_broker(base_config, tmp_path):
    """A plaintext broker of its own, auto-creation off."""
    config = base_config.model_copy(update={
        "state_dir": tmp_path / "strict-state",
        "broker": base_config.broker.model_copy(update={
            "port": free_port(), "controller_port": free_port(), "auto_create_topics": False}),
    })
    broker = KafkaBroker(config)
    broker.up()
    yield config.model_copy(update={"kafka": config.kafka.model_copy(update={
        "bootstrap_servers": broker.bootstrap_servers, "topic_prefix": f"t{uuid.uuid4().hex[:6]}."})})
    broker.down()


def test_created_topics_carry_min_insync_replicas_and_unknown_ones_are_not_made(strict_broker):
    config = strict_broker
    assert kafka_io.create_topics(config, ["diagnostic.submissions"]) == [config.topic("diagnostic.submissions")]
    admin = kafka_io.admin_client(config)
    try:
        topic = admin.describe_topics([config.topic("diagnostic.submissions")])[0]
        assert len(topic["partitions"]) == config.kafka.partitions
        assert {len(p["replica_nodes"]) for p in topic["partitions"]} == {config.kafka.replication_factor}
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                           config.topic("diagnostic.submissions"))])
        (settings,) = [entries for by_name in described.values() for entries in by_name.values()]
        assert settings["min.insync.replicas"]["value"] == str(config.kafka.min_insync_replicas)
    finally:
        admin.close()

    producer = kafka_io.producer(config, max_block_ms=3000)
    try:
        with pytest.raises(KafkaTimeoutError):  # the broker does not make a topic on first use
            producer.send(config.topic("diagnostic.typo"), value=b"lost").get(timeout=10)
    finally:
        producer.close()
    assert config.topic("diagnostic.typo") not in kafka_io.admin_client(config).list_topics()
