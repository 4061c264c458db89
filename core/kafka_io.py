"""kafka-python clients built from config: one place for bootstrap, security and timeouts."""

from __future__ import annotations

import logging
from typing import Any

from learnscore.core.config import Config, Secrets

log = logging.getLogger(__name__)


class BrokerUnreachable(RuntimeError):
    pass


def unreachable_message(bootstrap_servers: str) -> str:
    return (
        f"Kafka broker not reachable at {bootstrap_servers} — start it with "
        f'"learnscore stack up" or set kafka.bootstrap_servers '
        f"(LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS)"
    )


def client_options(config: Config, secrets: Secrets | None = None) -> dict[str, Any]:
    """Connection options shared by producers, consumers and admin clients."""
    kafka = config.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": int(kafka.request_timeout_s * 1000),
        "bootstrap_timeout_ms": int(min(kafka.request_timeout_s, 10) * 1000),
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        if kafka.ssl_cafile:
            options["ssl_cafile"] = str(kafka.ssl_cafile)
        options["ssl_check_hostname"] = True
    if kafka.security_protocol.startswith("SASL"):
        password = (secrets or Secrets(config)).kafka_password
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def spark_kafka_options(config: Config, secrets: Secrets | None = None) -> dict[str, str]:
    """The same connection as ``kafka.*`` options for Spark's Kafka source and sink."""
    kafka = config.kafka
    options = {
        "kafka.bootstrap.servers": kafka.bootstrap_servers,
        "kafka.security.protocol": kafka.security_protocol,
        "kafka.request.timeout.ms": str(int(kafka.request_timeout_s * 1000)),
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL") and kafka.ssl_cafile:
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = str(kafka.ssl_cafile)
    if kafka.security_protocol.startswith("SASL"):
        password = (secrets or Secrets(config)).kafka_password
        secret = password.get_secret_value() if password else ""
        module = ("org.apache.kafka.common.security.scram.ScramLoginModule"
                  if "SCRAM" in (kafka.sasl_mechanism or "")
                  else "org.apache.kafka.common.security.plain.PlainLoginModule")
        options["kafka.sasl.mechanism"] = kafka.sasl_mechanism or "PLAIN"
        options["kafka.sasl.jaas.config"] = (
            f'{module} required username="{kafka.sasl_username}" password="{secret}";'
        )
    return options


def broker_answers(bootstrap_servers: str, timeout_s: float = 2.0, **options: Any) -> bool:
    """True when a broker at ``bootstrap_servers`` answers a metadata request in time."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers.split(","),
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            **options,
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


class BrokerAuthenticationFailed(BrokerUnreachable):
    pass


class _AuthFailureTrap(logging.Handler):
    """kafka-python retries a refused SASL login until its bootstrap timeout and then reports
    only "Unable to bootstrap"; the refusal itself is logged, so we listen for it there."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.refused = False

    def emit(self, record: logging.LogRecord) -> None:
        if "SaslAuthenticationFailed" in record.getMessage():
            self.refused = True


def _connect(client_class, config: Config, *args: Any, **options: Any):
    """Build a kafka-python client, turning bootstrap failures into one clear error."""
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailedError

    refused = BrokerAuthenticationFailed(
        f"Kafka at {config.kafka.bootstrap_servers} refused the SASL login of user "
        f"{config.kafka.sasl_username!r} ({config.kafka.sasl_mechanism}); check "
        f"kafka.sasl_username and the password in ${Secrets.KAFKA_PASSWORD}"
    )
    trap, kafka_log = _AuthFailureTrap(), logging.getLogger("kafka")
    saved_level, saved_propagate = kafka_log.level, kafka_log.propagate
    kafka_log.addHandler(trap)
    if kafka_log.getEffectiveLevel() > logging.ERROR:  # quiet CLI: listen without printing
        kafka_log.setLevel(logging.ERROR)
        kafka_log.propagate = False
    try:
        return client_class(*args, **options)
    except SaslAuthenticationFailedError:
        raise refused from None
    except (KafkaTimeoutError, KafkaConnectionError):
        if trap.refused:
            raise refused from None
        if config.kafka.security_protocol.startswith("SASL") and _accepts_connections(config.kafka.bootstrap_servers):
            # Under load the refusal may never reach the log before the bootstrap timeout (the
            # broker drops the socket first); a broker that is there but lets no login through
            # is a credentials problem, not a missing broker.
            raise BrokerAuthenticationFailed(
                f"Kafka at {config.kafka.bootstrap_servers} accepts connections but did not complete "
                f"the SASL login of user {config.kafka.sasl_username!r} ({config.kafka.sasl_mechanism} "
                f"over {config.kafka.security_protocol}); check kafka.sasl_username, the password in "
                f"${Secrets.KAFKA_PASSWORD} and kafka.ssl_cafile") from None
        raise BrokerUnreachable(unreachable_message(config.kafka.bootstrap_servers)) from None
    finally:
        kafka_log.removeHandler(trap)
        kafka_log.setLevel(saved_level)
        kafka_log.propagate = saved_propagate


def _accepts_connections(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """True when a TCP connection to one of the bootstrap servers opens (nothing is sent)."""
    import socket

    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def admin_client(config: Config, secrets: Secrets | None = None):
    from kafka import KafkaAdminClient

    return _connect(KafkaAdminClient, config, **client_options(config, secrets))


def create_topics(config: Config, base_names: list[str], partitions: int | None = None,
                  secrets: Secrets | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the ones created.

    Each gets ``kafka.replication_factor`` replicas and ``kafka.min_insync_replicas`` as its
    ``min.insync.replicas``. Every process that writes a topic calls this first, so a broker
    with ``auto.create.topics.enable=false`` works as well as one that creates on first use.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    kafka = config.kafka
    admin = admin_client(config, secrets)

    def new(name: str) -> NewTopic:
        return NewTopic(name, partitions or kafka.partitions, kafka.replication_factor,
                        topic_configs={"min.insync.replicas": str(kafka.min_insync_replicas)})

    try:
        existing = set(admin.list_topics())
        wanted = [config.topic(name) for name in base_names]
        missing = [name for name in wanted if name not in existing]
        if missing:
            try:
                admin.create_topics([new(name) for name in missing])
            except TopicAlreadyExistsError:
                # Another process (e.g. the other half of a split scorer) created one meanwhile:
                # one at a time, so that each of ours that is still missing gets made.
                created = []
                for name in missing:
                    try:
                        admin.create_topics([new(name)])
                        created.append(name)
                    except TopicAlreadyExistsError:
                        pass
                missing = created
            if missing:
                log.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        admin.close()


def producer(config: Config, secrets: Secrets | None = None, **overrides: Any):
    """An idempotent producer (acks=all): a retried send is written once per partition."""
    from kafka import KafkaProducer

    options = {
        **client_options(config, secrets),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "retries": 2147483647,
        **overrides,
    }
    return _connect(KafkaProducer, config, **options)


def consumer(config: Config, *topics: str, secrets: Secrets | None = None, **overrides: Any):
    from kafka import KafkaConsumer

    return _connect(KafkaConsumer, config, *topics, **{**client_options(config, secrets), **overrides})


def end_offsets(client, topic: str) -> dict[int, int]:
    """Each partition's end offset of ``topic``, asked through the kafka-python consumer ``client``."""
    from kafka import TopicPartition

    partitions = client.partitions_for_topic(topic) or set()
    ends = client.end_offsets([TopicPartition(topic, partition) for partition in partitions])
    return {tp.partition: offset for tp, offset in ends.items()}
