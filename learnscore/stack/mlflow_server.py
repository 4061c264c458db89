"""The embedded MLflow store (SQLite + local artifacts) and, on demand, its UI server."""

from __future__ import annotations

import logging
import sys

from learnscore.core.config import Config
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
                "store": self.config.mlflow.tracking_uri}

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
        record = start_background("mlflow-ui", command, self.log_file, self.url,
                                  env={"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
                                       "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
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

    def down(self) -> bool:
        record = ProcessRecord.load(self.record_file)
        stopped = bool(record) and stop_process(record)
        self.record_file.unlink(missing_ok=True)
        return stopped
