"""The MLflow server learnscore starts asks for a login (MLflow's basic-auth app), on a real server."""

from __future__ import annotations

import os
import stat

import httpx
import psutil
import pytest

from learnscore.core.config import Secrets, load_config
from learnscore.core.ports import free_port
from learnscore.stack.mlflow_server import MlflowUi

pytestmark = pytest.mark.slow

MODEL = "learnscore-diagnostic"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("mlflow-login")
    config = load_config(environ={"LEARNSCORE__STATE_DIR": str(state), "LEARNSCORE__MLFLOW__UI_LOGIN": "true",
                                  "LEARNSCORE__MLFLOW__UI_PORT": str(free_port())})
    ui = MlflowUi(config)
    record = ui.up(timeout_s=120)
    try:
        yield config, ui, record
    finally:
        ui.down()


def _api(ui: MlflowUi, method: str, path: str, auth=None, version: str = "2.0", **body):
    call = httpx.get if method == "GET" else httpx.post
    options = {"params": body} if method == "GET" else {"json": body}
    return call(f"{ui.url}/api/{version}/mlflow/{path}", auth=auth, timeout=30, **options)


def test_every_call_but_health_needs_a_login_and_a_permission(server):
    config, ui, _record = server
    admin = (config.mlflow.ui_admin_user, Secrets(config).mlflow_admin_password.get_secret_value())
    assert httpx.get(f"{ui.url}/health", timeout=10).status_code == 200
    assert _api(ui, "GET", "registered-models/search").status_code == 401
    assert _api(ui, "GET", "registered-models/search", auth=(admin[0], "not-the-password")).status_code == 401
    assert _api(ui, "POST", "registered-models/create", auth=admin, name=MODEL).status_code == 200

    # What docs/security.md grants each process: the scorer and the endpoint READ, the retrain
    # worker EDIT. A new user has no permission at all (default_permission NO_PERMISSIONS).
    for user, permission in (("scorer", "READ"), ("retrain-worker", "EDIT"), ("nobody", None)):
        assert _api(ui, "POST", "users/create", auth=admin, username=user,
                    password=f"{user}-password-0123456789").status_code == 200
        if permission:
            assert _api(ui, "POST", "users/permissions/grant", auth=admin, version="3.0", username=user,
                        resource_type="registered_model", resource_id=MODEL,
                        permission=permission).status_code == 200

    def login(user):
        return user, f"{user}-password-0123456789"

    assert _api(ui, "GET", "registered-models/get", auth=login("scorer"), name=MODEL).status_code == 200
    assert _api(ui, "GET", "registered-models/get", auth=login("nobody"), name=MODEL).status_code == 403
    tag = {"name": MODEL, "key": "owner", "value": "data-team"}
    assert _api(ui, "POST", "registered-models/set-tag", auth=login("scorer"), **tag).status_code == 403
    assert _api(ui, "POST", "registered-models/set-tag", auth=login("retrain-worker"), **tag).status_code == 200
    assert _api(ui, "POST", "registered-models/delete", auth=login("retrain-worker"), name=MODEL).status_code == 403


def test_the_secrets_stay_off_command_lines_and_in_owner_only_files(server):
    config, ui, record = server
    password = Secrets(config).mlflow_admin_password.get_secret_value()
    leader = psutil.Process(record.pid)
    for process in [leader, *leader.children(recursive=True)]:
        assert password not in " ".join(process.cmdline())
        assert "--app-name" not in process.cmdline() or "basic-auth" in process.cmdline()
    auth = ui.home / "auth"
    assert stat.S_IMODE(os.stat(auth).st_mode) == 0o700
    for name in ("basic_auth.ini", "flask-secret-key"):
        assert stat.S_IMODE(os.stat(auth / name).st_mode) == 0o600
    assert password not in (auth / "basic_auth.ini").read_text()
    assert ui.status()["login"] is True
