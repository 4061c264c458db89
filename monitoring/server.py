"""``learnscore dashboard``: the dashboard under uvicorn."""

from __future__ import annotations

import logging

from learnscore.config import Config
from learnscore.stack.processes import StackError, port_is_free, port_owner

log = logging.getLogger(__name__)


def run_dashboard(config: Config, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    from monitoring.app import create_dashboard_app

    host = host or config.dashboard.host
    port = port or config.dashboard.port
    if not port_is_free(host, port):
        raise StackError(f"cannot start the dashboard: port {port} on {host} is already taken by "
                         f"{port_owner(port)}. Stop that process, or choose another port with --port "
                         f"or LEARNSCORE__DASHBOARD__PORT.")
    log.info("dashboard on http://%s:%d (tables under %s)", host, port, config.lake.root)
    uvicorn.run(create_dashboard_app(config), host=host, port=port, log_level="warning",
                access_log=False)
