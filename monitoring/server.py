"""``learnscore dashboard``: the dashboard under uvicorn."""

from __future__ import annotations

import logging

from learnscore.config import Config

log = logging.getLogger(__name__)


def run_dashboard(config: Config, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    from monitoring.app import create_dashboard_app

    host = host or config.dashboard.host
    port = port or config.dashboard.port
    log.info("dashboard on http://%s:%d (tables under %s)", host, port, config.lake.root)
    uvicorn.run(create_dashboard_app(config), host=host, port=port, log_level="warning",
                access_log=False)
