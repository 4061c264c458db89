"""The secured local broker (conf/secure.yaml's broker settings): SASL_SSL only, ACLs per process."""

import uuid

import pytest
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from learnscore.core import kafka_io
from learnscore.core.config import Secrets
from learnscore.core.kafka_io import BrokerAuthenticationFailed
from learnscore.core.ports import free_port, port_is_free
from learnscore.schemas import topics
from learnscore.stack.kafka_acls import ensure_principals
from learnscore.stack.kafka_broker import KafkaBroker
from learnscore.stack.kafka_security import (
    principal_variable,
    sasl_ssl_client_config,
    stack_password,
    super_user_client,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def secure_broker(base_config, tmp_path_factory):
    """A broker of its own with the secure profile's listeners, ACLs and no auto-creation; its
    users and topics made as `stack up` makes them."""
    config = base_config.model_copy(update={
        "state_dir": tmp_path_factory.mktemp("secure-state"),
        "broker": base_config.broker.model_copy(update={
            "port": free_port(), "controller_port": free_port(), "sasl_ssl_port": free_port(),
            "plaintext_listener": False, "acls": True, "auto_create_topics": False}),
        "kafka": base_config.kafka.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:6]}."}),
    })
    broker = KafkaBroker(config)
    broker.up()
    admin_config, admin_secrets = super_user_client(config)
    kafka_io.create_topics(admin_config, topics.ALL_TOPICS, secrets=admin_secrets)
    ensure_principals(config)
    yield config
    broker.down()


def _as(config, user: str, password: str):
    client = sasl_ssl_client_config(config)
    client = client.model_copy(update={"kafka": client.kafka.model_copy(update={"sasl_username": user})})
    return client, Secrets(client, environ={Secrets.KAFKA_PASSWORD: password})


def _as_role(config, role: str):
    return _as(config, getattr(config.kafka.principals, role), stack_password(config, principal_variable(role)))


def test_no_plaintext_listener_is_open(secure_broker):
    assert port_is_free(secure_broker.broker.host, secure_broker.broker.port)


def test_a_producer_writes_submissions_but_may_neither_read_nor_write_scores(secure_broker):
    config, secrets = _as_role(secure_broker, "producer")
    producer = kafka_io.producer(config, secrets, max_block_ms=10_000)
    try:
        producer.send(config.topic(topics.SUBMISSIONS), key=b"k", value=b"{}").get(timeout=30)
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(config.topic(topics.SCORES), key=b"k", value=b"{}").get(timeout=30)
    finally:
        producer.close()

    admin_config, admin_secrets = super_user_client(secure_broker)
    writer = kafka_io.producer(admin_config, admin_secrets)
    writer.send(config.topic(topics.SCORES), partition=0, key=b"k", value=b"a learner's score").get(timeout=30)
    writer.close()
    consumer = kafka_io.consumer(config, secrets=secrets)
    try:
        visible = consumer.topics()
        assert config.topic(topics.SUBMISSIONS) in visible
        assert config.topic(topics.SCORES) not in visible  # not even described
        from kafka import TopicPartition

        consumer.assign([TopicPartition(config.topic(topics.SCORES), 0)])
        consumer.seek_to_beginning()
        fetched = [consumer.poll(timeout_ms=1000) for _ in range(5)]
        assert not any(fetched)  # the record is there (written above); the producer gets nothing
    finally:
        consumer.close()


def test_the_scorer_writes_scores_and_reads_them_in_a_spark_style_group(secure_broker):
    config, secrets = _as_role(secure_broker, "scorer")
    producer = kafka_io.producer(config, secrets, max_block_ms=10_000)
    producer.send(config.topic(topics.SCORES), key=b"k", value=b"score").get(timeout=30)
    producer.close()
    consumer = kafka_io.consumer(config, config.topic(topics.SCORES), secrets=secrets,
                                 group_id="spark-kafka-source-test", auto_offset_reset="earliest",
                                 consumer_timeout_ms=8_000)
    try:
        assert b"score" in {message.value for message in consumer}  # (the producer test wrote another)
    finally:
        consumer.close()


def test_an_unknown_user_is_refused(secure_broker):
    config, secrets = _as(secure_broker, "mallory", "not-a-user-" + uuid.uuid4().hex)
    with pytest.raises(BrokerAuthenticationFailed):
        kafka_io.producer(config, secrets)


def test_a_topic_is_not_created_on_first_use_even_by_the_super_user(secure_broker):
    config, secrets = super_user_client(secure_broker)
    producer = kafka_io.producer(config, secrets, max_block_ms=3000)
    try:
        with pytest.raises(KafkaError):
            producer.send(config.topic("diagnostic.typo"), value=b"lost").get(timeout=10)
    finally:
        producer.close()
    admin = kafka_io.admin_client(config, secrets)
    try:
        assert config.topic("diagnostic.typo") not in admin.list_topics()
    finally:
        admin.close()
