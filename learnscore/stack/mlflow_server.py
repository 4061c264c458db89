"""The embedded MLflow store (SQLite + local artifacts) and, on demand, its UI server.

With ``Config.mlflow_ui_login`` (every profile but ``local``, unless ``mlflow.ui_login`` says
otherwise) the server runs MLflow's basic-auth app: every request but ``/health`` needs a user,
new users get no permission until an admin grants one, and the admin's password comes from
``$LEARNSCORE_MLFLOW_ADMIN_PASSWORD`` through the environment, never the command line.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

from learnscore.core.config import Config, Secrets
from learnscore.core.ports import port_is_free, port_owner
from learnscore.core.tracking import prepare_store
from learnscore.stack.processes import (
    ProcessRecord,
    StackError,
    start_background,
    stop_process,
    tail,
    wait_http,
)

log = logging.getLogger(__name__)


class MlflowUi:
    """``mlflow server`` over the embedded store, for people to browse runs and the registry."""

    def __init__(self, config: Config):
        self.config = config
        self.home = config.state_dir / "mlflow"
        self.record_file = self.home / "ui.json"
        self.log_file = self.home / "ui.log"

    @property
    def url(self) -> str:
        return f"http://{self.config.mlflow.ui_host}:{self.config.mlflow.ui_port}"

    def record(self) -> ProcessRecord | None:
        record = ProcessRecord.load(self.record_file)
        return record if record and record.is_running() else None

    def status(self) -> dict:
        record = self.record()
        return {"service": "mlflow-ui", "running": record is not None,
                "pid": record.pid if record else None,
                "listens": record.endpoint if record else None, "log": str(self.log_file),
                "store": self.config.mlflow.tracking_uri, "login": self.config.mlflow_ui_login}

    def up(self, timeout_s: float = 90) -> ProcessRecord:
        running = self.record()
        if running:
            return running
        prepare_store(self.config)
        host, port = self.config.mlflow.ui_host, self.config.mlflow.ui_port
        if not port_is_free(host, port):
            raise StackError(
                f"cannot start the MLflow UI: port {port} on {host} is already taken by "
                f"{port_owner(port)}; stop it or set LEARNSCORE__MLFLOW__UI_PORT"
            )
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.config.mlflow.tracking_uri,
            "--default-artifact-root", self.config.mlflow.artifact_root,
            "--host", host, "--port", str(port), "--workers", "1",
        ]
        # The UI only browses: no job runner (it would start seven worker processes).
        env = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if self.config.mlflow_ui_login:
            command += ["--app-name", "basic-auth"]
            env.update(self._login_environment())
        record = start_background("mlflow-ui", command, self.log_file, self.url, env=env)
        record.save(self.record_file)

        def check():
            if not record.is_running():
                raise StackError(f"the MLflow UI exited during start-up:\n{tail(self.log_file)}")

        if wait_http(f"{self.url}/health", timeout_s, ready=lambda status: status == 200, check=check,
                     interval_s=0.5):
            log.info("mlflow ui ready at %s", self.url)
            return record
        raise StackError(f"the MLflow UI did not answer at {self.url} within {timeout_s:.0f}s:\n"
                         f"{tail(self.log_file)}")

    def _login_environment(self) -> dict[str, str]:
        """MLflow's basic-auth settings: a config file (users in ``auth.db`` beside the store, no
        permission by default) and the secrets, passed by environment so ``ps`` never shows them."""
        folder = self.home / "auth"
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        settings = folder / "basic_auth.ini"
        _write_private(settings, "[mlflow]\n"
                                 "default_permission = NO_PERMISSIONS\n"
                                 f"database_uri = sqlite:///{folder / 'auth.db'}\n"
                                 f"admin_username = {self.config.mlflow.ui_admin_user}\n"
                                 "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        csrf_key = folder / "flask-secret-key"  # signs the UI's CSRF tokens; the server's own, made once
        if not csrf_key.exists():
            _write_private(csrf_key, secrets.token_urlsafe(32))
        return {"MLFLOW_AUTH_CONFIG_PATH": str(settings),
                # Read once, when the user store is empty; later changes go through MLflow's
                # update-password API (docs/security.md).
                "MLFLOW_AUTH_ADMIN_PASSWORD": Secrets(self.config).mlflow_admin_password.get_secret_value(),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": csrf_key.read_text().strip()}

    def down(self) -> bool:
        record = ProcessRecord.load(self.record_file)
        stopped = bool(record) and stop_process(record)
        self.record_file.unlink(missing_ok=True)
        return stopped


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (created 0600, never wider)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)
