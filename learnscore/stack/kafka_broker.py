"""A single-node Apache Kafka broker in KRaft mode, run from the jars Maven resolved.

Apache Kafka's own scripts are thin wrappers around two main classes, so we call those
directly: ``kafka.tools.StorageTool format`` once, then ``kafka.Kafka server.properties``.
"""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import uuid

from learnscore.core.config import Config
from learnscore.core.jars import jar_files
from learnscore.core.ports import port_is_free, port_owner
from learnscore.core.waiting import WaitTimedOut, wait_until
from learnscore.stack.processes import (
    ProcessRecord,
    StackError,
    start_background,
    stop_process,
    tail,
)

log = logging.getLogger(__name__)

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, as Kafka's Uuid.

    Like ``Uuid.randomUuid`` it never starts with "-": the storage tool's argument parser would
    take such an id for an option (1 start in 64 did, and failed the format).

    >>> len(new_cluster_id()), new_cluster_id()[0] != "-"
    (22, True)
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker:
    """The local broker of one state folder: ``up``, ``down``, ``status``."""

    def __init__(self, config: Config):
        self.config = config
        self.home = config.state_dir / "kafka"
        self.record_file = self.home / "broker.json"
        self.log_file = self.home / "broker.log"
        self.properties_file = self.home / "server.properties"
        self.data_dir = self.home / "data"

    @property
    def bootstrap_servers(self) -> str:
        broker = self.config.broker
        return f"{broker.host}:{broker.port if broker.plaintext_listener else broker.sasl_ssl_port}"

    # -- state -------------------------------------------------------------------------------
    def record(self) -> ProcessRecord | None:
        record = ProcessRecord.load(self.record_file)
        return record if record and record.is_running() else None

    def status(self) -> dict:
        record = self.record()
        return {
            "service": "kafka",
            "running": record is not None,
            "pid": record.pid if record else None,
            "listens": record.endpoint if record else None,
            "log": str(self.log_file),
            "ready": bool(record) and self.answers_metadata(timeout_s=3),
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self) -> ProcessRecord:
        """Start the broker unless it already runs; return once it answers metadata requests."""
        running = self.record()
        if running:
            self.wait_ready(running)
            log.info("kafka broker already running (pid %s) at %s", running.pid, running.endpoint)
            return running
        self._check_java()
        broker = self.config.broker
        for port, role in self._ports():
            if not port_is_free(broker.host, port):
                raise StackError(
                    f"cannot start the Kafka broker: port {port} ({role}) on {broker.host} is "
                    f"already taken by {port_owner(port)}. Stop that process, or choose other "
                    f"ports with LEARNSCORE__BROKER__PORT / LEARNSCORE__BROKER__CONTROLLER_PORT "
                    f"(and point LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS at the new port)."
                )
        self._write_properties()
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage()
        command = self._java_command("kafka.Kafka", str(self.properties_file))
        record = start_background("kafka", command, self.log_file, self.bootstrap_servers)
        record.save(self.record_file)
        self.wait_ready(record)
        log.info("kafka broker ready at %s (pid %s)", record.endpoint, record.pid)
        return record

    def down(self) -> bool:
        record = ProcessRecord.load(self.record_file)
        stopped = bool(record) and stop_process(record)
        self.record_file.unlink(missing_ok=True)
        return stopped

    def wait_ready(self, record: ProcessRecord) -> None:
        def alive() -> None:
            if not record.is_running():
                raise StackError(f"the Kafka broker exited during start-up; last lines of {self.log_file}:\n"
                                 f"{tail(self.log_file)}")

        try:
            wait_until(lambda: self.answers_metadata(timeout_s=2), self.config.broker.start_timeout_s,
                       f"the Kafka broker at {self.bootstrap_servers}", interval_s=0.5, check=alive)
        except WaitTimedOut as exc:
            raise StackError(f"{exc}; see {self.log_file}:\n{tail(self.log_file)}") from None

    def answers_metadata(self, timeout_s: float = 2.0) -> bool:
        from learnscore.core.kafka_io import broker_answers, client_options

        if self.config.broker.plaintext_listener:
            return broker_answers(self.bootstrap_servers, timeout_s=timeout_s)
        from learnscore.stack.kafka_security import super_user_client

        client, secrets = super_user_client(self.config)
        options = {key: value for key, value in client_options(client, secrets).items()
                   if key not in ("bootstrap_servers", "request_timeout_ms", "bootstrap_timeout_ms")}
        return broker_answers(self.bootstrap_servers, timeout_s=timeout_s, **options)

    # -- helpers -----------------------------------------------------------------------------
    def _ports(self) -> list[tuple[int, str]]:
        broker = self.config.broker
        ports = [(broker.controller_port, "KRaft controller")]
        if broker.plaintext_listener:
            ports.append((broker.port, "client listener"))
        if broker.sasl_ssl_port:
            ports.append((broker.sasl_ssl_port, "SASL_SSL listener"))
        return ports

    @staticmethod
    def _check_java() -> None:
        if shutil.which("java") is None:
            raise StackError("java is not on PATH; the Kafka broker needs Java 17 or newer")

    def _java_command(self, main_class: str, *args: str) -> list[str]:
        classpath = ":".join(str(path) for path in jar_files(self.config.broker.jars_dir, "kafka"))
        log4j = self.home / "log4j2.properties"
        log4j.write_text(LOG4J2)
        heap = self.config.broker.heap
        return [
            "java", f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp", classpath, main_class, *args,
        ]

    def _write_properties(self) -> None:
        broker = self.config.broker
        listeners = [f"CONTROLLER://{broker.host}:{broker.controller_port}"]
        advertised: list[str] = []
        # Without a PLAINTEXT listener the controller speaks mutual TLS (kafka_security.py says why).
        protocol_map = [f"CONTROLLER:{'PLAINTEXT' if broker.plaintext_listener else 'SSL'}"]
        inter_broker = "PLAINTEXT" if broker.plaintext_listener else "SASL_SSL"
        if broker.plaintext_listener:
            listeners.append(f"PLAINTEXT://{broker.host}:{broker.port}")
            advertised.append(f"PLAINTEXT://{broker.host}:{broker.port}")
            protocol_map.append("PLAINTEXT:PLAINTEXT")
        extra: list[str] = []
        if broker.sasl_ssl_port:
            from learnscore.stack.kafka_security import sasl_ssl_properties

            listeners.append(f"SASL_SSL://{broker.host}:{broker.sasl_ssl_port}")
            advertised.append(f"SASL_SSL://{broker.host}:{broker.sasl_ssl_port}")
            protocol_map.append("SASL_SSL:SASL_SSL")
            extra = sasl_ssl_properties(self.config, self.home)
        if broker.acls:
            from learnscore.stack.kafka_security import controller_principal

            extra += [
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "allow.everyone.if.no.acl.found=false",
                f"super.users=User:{broker.super_user};{controller_principal(self.config)}",
            ]
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={broker.host}:{broker.controller_port}",
            f"listeners={','.join(listeners)}",
            f"advertised.listeners={','.join(advertised)}",
            "controller.listener.names=CONTROLLER",
            f"inter.broker.listener.name={inter_broker}",
            f"listener.security.protocol.map={','.join(protocol_map)}",
            f"log.dirs={self.data_dir}",
            f"num.partitions={self.config.kafka.partitions}",
            # A single node: every internal topic has one replica.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            f"auto.create.topics.enable={str(self.config.broker.auto_create_topics).lower()}",
            "log.retention.hours=168",
            "log.segment.bytes=104857600",
            *extra,
        ]
        self.home.mkdir(parents=True, exist_ok=True)
        self.properties_file.touch(mode=0o600)  # may hold the keystore password
        self.properties_file.write_text("\n".join(lines) + "\n")

    def _format_storage(self) -> None:
        cluster_id = new_cluster_id()
        command = self._java_command("kafka.tools.StorageTool", "format", "--standalone",
                                     "-t", cluster_id, "-c", str(self.properties_file),
                                     *self._format_extra_args())
        # The SCRAM arguments hold passwords: the launcher reads them from a file, so they never
        # appear in the process's command line.
        from learnscore.stack.kafka_security import write_argument_file

        arguments = write_argument_file(self.home / "format.args", command[1:])
        try:
            result = subprocess.run([command[0], f"@{arguments}"], capture_output=True, text=True, timeout=120)
        finally:
            arguments.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(f"formatting the Kafka storage in {self.data_dir} failed:\n"
                             f"{(result.stdout + result.stderr)[-2000:]}")
        log.info("formatted kafka storage (cluster id %s)", cluster_id)

    def _format_extra_args(self) -> list[str]:
        if not self.config.broker.sasl_ssl_port:
            return []
        from learnscore.stack.kafka_security import scram_format_args

        return scram_format_args(self.config)
