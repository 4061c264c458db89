"""``learnscore dashboard``: the dashboard under uvicorn."""

from __future__ import annotations

import logging

from learnscore.core.config import Config
from learnscore.core.ports import require_free_port

log = logging.getLogger(__name__)


def run_dashboard(config: Config, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    from learnscore.monitoring.app import create_dashboard_app

    host = host or config.dashboard.host
    port = port or config.dashboard.port
    require_free_port(host, port, "the dashboard", "choose another port with --port or LEARNSCORE__DASHBOARD__PORT")
    log.info("dashboard on http://%s:%d (tables under %s)", host, port, config.lake.root)
    uvicorn.run(create_dashboard_app(config), host=host, port=port, log_level="warning",
                access_log=False)
