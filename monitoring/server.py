"""``learnscore dashboard``: the dashboard under uvicorn."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from learnscore.core.config import Config, ConfigError, Secrets, is_loopback
from learnscore.core.ports import require_free_port

log = logging.getLogger(__name__)


def run_dashboard(config: Config, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    from learnscore.monitoring.app import create_dashboard_app

    host = host or config.dashboard.host
    port = port or config.dashboard.port
    tls = _tls_options(config, host)
    app = create_dashboard_app(config)  # ConfigError first when there is no API key to log in with
    require_free_port(host, port, "the dashboard", "choose another port with --port or LEARNSCORE__DASHBOARD__PORT")
    log.info("dashboard on %s://%s:%d (tables under %s); log in with the endpoint's API key",
             "https" if tls else "http", host, port, config.lake.root)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False, **tls)


def _tls_options(config: Config, host: str) -> dict[str, Any]:
    """uvicorn's TLS settings from ``dashboard.tls_*`` (TLS 1.2 or later); plain HTTP only on loopback."""
    dashboard = config.dashboard
    if not dashboard.tls:
        if not is_loopback(host):
            raise ConfigError(f"refusing to serve the dashboard over plain HTTP on {host}, which other machines "
                              f"can reach: the API key people log in with would cross the network in clear "
                              f"text. Set dashboard.tls_certfile and dashboard.tls_keyfile, or use 127.0.0.1")
        return {}
    for name, path in (("tls_certfile", dashboard.tls_certfile), ("tls_keyfile", dashboard.tls_keyfile)):
        if not path.is_file():
            raise ConfigError(f"dashboard.{name} is {path}, which is not a readable file; point it at the PEM file")

    def tls12_or_later(config, default_factory) -> ssl.SSLContext:
        context = default_factory()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    return {"ssl_certfile": str(dashboard.tls_certfile), "ssl_keyfile": str(dashboard.tls_keyfile),
            "ssl_keyfile_password": Secrets(config).tls_key_password, "ssl_context_factory": tls12_or_later}
