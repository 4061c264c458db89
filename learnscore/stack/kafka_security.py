"""A SASL_SSL listener for the local broker: a self-signed certificate and SCRAM credentials.

The certificate is made with the JDK's ``keytool``; clients trust it through the PEM file
``<state>/kafka/tls/ca.pem`` (set ``kafka.ssl_cafile`` to it). SCRAM credentials are created
when the storage is formatted (KRaft keeps them in the metadata log), so a broker that should
accept SASL logins must be formatted with the listener enabled: the user is
``kafka.sasl_username`` and the password comes from ``$LEARNSCORE_KAFKA_PASSWORD`` only.

No secret is ever an argument of a process (``/proc/<pid>/cmdline`` is readable by every local
user): keytool reads its store password from its environment (``-storepass:env``), and the
storage tool gets its SCRAM arguments from a Java argument file (``java @file``, mode 0600,
deleted once the format is done).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from learnscore.core.config import Config, Secrets
from learnscore.stack.processes import StackError

MECHANISM = "SCRAM-SHA-512"
# keytool reads the keystore password from this variable of its own environment.
_KEYTOOL_PASSWORD_VARIABLE = "LEARNSCORE_KEYSTORE_PASSWORD"


def tls_dir(config: Config) -> Path:
    return config.state_dir / "kafka" / "tls"


def ca_file(config: Config) -> Path:
    return tls_dir(config) / "ca.pem"


def _ensure_certificate(config: Config) -> tuple[Path, str]:
    """Create (once) a PKCS12 keystore with a self-signed certificate for the broker's host."""
    folder = tls_dir(config)
    keystore, password_file = folder / "broker.p12", folder / "keystore.password"
    if keystore.exists() and password_file.exists() and ca_file(config).exists():
        return keystore, password_file.read_text().strip()
    if shutil.which("keytool") is None:
        raise StackError("keytool (from the JDK) is not on PATH; it makes the broker's TLS certificate")
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    password_file.touch(mode=0o600)
    password_file.write_text(password)
    keystore.unlink(missing_ok=True)
    host = config.broker.host
    san = f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}"
    steps = [
        ["keytool", "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
         "-validity", "825", "-dname", f"CN={host}", "-ext", f"SAN={san},DNS:localhost",
         "-keystore", str(keystore), "-storetype", "PKCS12",
         "-storepass:env", _KEYTOOL_PASSWORD_VARIABLE, "-keypass:env", _KEYTOOL_PASSWORD_VARIABLE],
        ["keytool", "-exportcert", "-rfc", "-alias", "broker", "-keystore", str(keystore),
         "-storepass:env", _KEYTOOL_PASSWORD_VARIABLE, "-file", str(ca_file(config))],
    ]
    environment = {**os.environ, _KEYTOOL_PASSWORD_VARIABLE: password}
    for command in steps:
        result = subprocess.run(command, capture_output=True, text=True, env=environment)
        if result.returncode != 0:
            raise StackError(f"keytool failed making the broker certificate: {result.stderr[-500:]}")
    return keystore, password


def sasl_ssl_properties(config: Config, home: Path) -> list[str]:
    """server.properties lines for the SASL_SSL listener (SCRAM-SHA-512 over TLS).

    Without a PLAINTEXT listener (``broker.plaintext_listener: false``) the broker also talks to
    itself over SASL_SSL as ``broker.super_user``, and to its KRaft controller over mutual TLS:
    the controller accepts only a client holding the broker's own key (principal ``User:CN=<host>``).
    """
    keystore, password = _ensure_certificate(config)
    login = "org.apache.kafka.common.security.scram.ScramLoginModule required"
    if not config.broker.plaintext_listener:
        user, secret = config.broker.super_user, broker_password(config)
        login += f' username="{user}" password="{secret}"'
    lines = [
        f"sasl.enabled.mechanisms={MECHANISM}",
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config={login};",
        *_tls_lines("sasl_ssl", keystore, password, ca_file(config)),
    ]
    if not config.broker.plaintext_listener:
        lines += [
            f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
            *_tls_lines("controller", keystore, password, ca_file(config)),
            "listener.name.controller.ssl.client.auth=required",
        ]
    return lines


def _tls_lines(listener: str, keystore: Path, password: str, ca: Path) -> list[str]:
    return [
        f"listener.name.{listener}.ssl.keystore.type=PKCS12",
        f"listener.name.{listener}.ssl.keystore.location={keystore}",
        f"listener.name.{listener}.ssl.keystore.password={password}",
        f"listener.name.{listener}.ssl.key.password={password}",
        f"listener.name.{listener}.ssl.truststore.type=PEM",
        f"listener.name.{listener}.ssl.truststore.location={ca}",
    ]


def controller_principal(config: Config) -> str:
    """The principal the controller sees when the broker connects with its certificate."""
    return f"User:CN={config.broker.host}"


BROKER_PASSWORD = "LEARNSCORE_KAFKA_BROKER_PASSWORD"


def principal_variable(role: str) -> str:
    """``scorer`` -> ``LEARNSCORE_KAFKA_PASSWORD_SCORER``: where a process's password comes from."""
    return f"LEARNSCORE_KAFKA_PASSWORD_{role.upper()}"


def stack_password(config: Config, variable: str) -> str:
    """A password of the local broker's users: ``$variable``, else made once under
    ``<state_dir>/secrets`` (0600), as the local profile makes its keys. The stack owns this
    broker, so it owns its users' passwords; a process reads the same file or the variable."""
    value = os.environ.get(variable)
    if value:
        return value
    path = config.state_dir / "secrets" / variable.lower()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def broker_password(config: Config) -> str:
    return stack_password(config, BROKER_PASSWORD)


def super_user_client(config: Config) -> tuple[Config, Secrets]:
    """Client settings and secrets to administer the local broker as ``broker.super_user``."""
    client = sasl_ssl_client_config(config)
    client = client.model_copy(update={"kafka": client.kafka.model_copy(
        update={"sasl_username": config.broker.super_user})})
    return client, Secrets(client, environ={Secrets.KAFKA_PASSWORD: broker_password(config)})


def scram_format_args(config: Config) -> list[str]:
    """``kafka-storage format`` arguments that create the SCRAM user of ``kafka.sasl_username``.

    They hold the password: pass them through :func:`write_argument_file`, never on a command line.
    """
    if not config.broker.plaintext_listener:  # the broker's own user; the others come through the admin API
        return ["--add-scram", scram_credential(config.broker.super_user, broker_password(config), BROKER_PASSWORD)]
    user = config.kafka.sasl_username
    if not user:
        raise StackError("broker.sasl_ssl_port is set but kafka.sasl_username is empty; "
                         "set LEARNSCORE__KAFKA__SASL_USERNAME")
    return ["--add-scram", scram_credential(user, Secrets(config).kafka_password_required(), Secrets.KAFKA_PASSWORD)]


def scram_credential(user: str, password: str, source: str) -> str:
    """The value of one ``--add-scram``; ``source`` names where the password came from, for errors."""
    if any(ch in password for ch in ",[]=\"'") or any(ch.isspace() for ch in password):
        raise StackError(f"{source} may not contain , [ ] = quotes, backslashes or spaces "
                         f"(Kafka's --add-scram syntax); choose another password")
    return f"{MECHANISM}=[name={user},password={password}]"


def write_argument_file(path: Path, arguments: list[str]) -> Path:
    """Write a Java argument file (``java @path``): one argument a line, readable by us alone.

    The launcher expands it before the JVM starts, so the arguments, secrets among them, never
    appear in the process's command line.
    """
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text("".join(f'"{argument}"\n' for argument in arguments))
    return path


def sasl_ssl_client_config(config: Config) -> Config:
    """``config`` with clients pointed at the local broker's SASL_SSL listener only.

    Bootstrap at ``broker.sasl_ssl_port``, SCRAM-SHA-512 over TLS, trusting the broker's own
    certificate; the password still comes from ``$LEARNSCORE_KAFKA_PASSWORD``.
    """
    if not config.broker.sasl_ssl_port:
        raise StackError("broker.sasl_ssl_port is not set: the local broker has no SASL_SSL listener")
    return config.model_copy(update={"kafka": config.kafka.model_copy(update={
        "bootstrap_servers": f"{config.broker.host}:{config.broker.sasl_ssl_port}",
        "security_protocol": "SASL_SSL", "sasl_mechanism": MECHANISM, "ssl_cafile": ca_file(config)})})
