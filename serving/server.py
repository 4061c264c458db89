"""``learnscore serve``: the endpoint under uvicorn, one process, one worker; HTTPS when configured.

With ``serving.tls_certfile`` and ``serving.tls_keyfile`` set the endpoint speaks TLS 1.2 or later
only (plain HTTP is refused); the key's password, if it is encrypted, comes from
``LEARNSCORE_TLS_KEY_PASSWORD`` and never from a command line. An address other machines can
reach is refused without TLS: the API key would cross the network in clear text.
"""

from __future__ import annotations

import importlib.util
import logging
import ssl
from typing import Any

from learnscore.core.config import Config, ConfigError, Secrets, is_loopback
from learnscore.core.ports import require_free_port

log = logging.getLogger(__name__)


def fastest_loop_and_parser() -> tuple[str, str]:
    """uvloop and httptools when installed (measurably faster), asyncio and h11 otherwise."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


def tls12_or_later(config, default_factory) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: its context, with TLS 1.0 and 1.1 refused."""
    context = default_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def tls_options(config: Config, secrets: Secrets, host: str) -> dict[str, Any]:
    """The uvicorn settings for TLS (empty without it), checked now so that a wrong path or key
    password is a clear error at start rather than a stack trace from the server."""
    serving = config.serving
    if not serving.tls:
        if not is_loopback(host):
            raise ConfigError(
                f"refusing to serve plain HTTP on {host}, which other machines can reach: the API key "
                f"would cross the network in clear text. Set serving.tls_certfile and serving.tls_keyfile, "
                f"or serve on 127.0.0.1")
        return {}
    for name, path in (("tls_certfile", serving.tls_certfile), ("tls_keyfile", serving.tls_keyfile)):
        if not path.is_file():
            raise ConfigError(f"serving.{name} is {path}, which is not a readable file; point it at the PEM file")
    password = secrets.tls_key_password
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            serving.tls_certfile, serving.tls_keyfile, password)
    except (ssl.SSLError, OSError) as exc:
        hint = (f"is {Secrets.TLS_KEY_PASSWORD} right?" if password else
                f"if the key is encrypted, export its password as {Secrets.TLS_KEY_PASSWORD}")
        raise ConfigError(f"cannot use the TLS certificate {serving.tls_certfile} with the key "
                          f"{serving.tls_keyfile}: {exc}; do they belong together? {hint}") from None
    return {"ssl_certfile": str(serving.tls_certfile), "ssl_keyfile": str(serving.tls_keyfile),
            "ssl_keyfile_password": password, "ssl_context_factory": tls12_or_later}


def server_config(config: Config, app, *, host: str, port: int, secrets: Secrets | None = None, **overrides):
    """The ``uvicorn.Config`` the endpoint runs with (TLS included); ``overrides`` for tests."""
    import uvicorn

    loop, http = fastest_loop_and_parser()
    settings = dict(host=host, port=port, workers=1, loop=loop, http=http, access_log=False,
                    log_level="warning", server_header=False, date_header=False, timeout_keep_alive=30,
                    **tls_options(config, secrets or Secrets(config), host))
    settings.update(overrides)
    return uvicorn.Config(app, **settings)


def run_server(config: Config, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop it cleanly, flushing the request log)."""
    import uvicorn

    from learnscore.serving.app import create_app

    host = host or config.serving.host
    port = port or config.serving.port
    require_free_port(host, port, "the scoring endpoint",
                      "choose another port with --port or LEARNSCORE__SERVING__PORT")
    settings = server_config(config, create_app(config), host=host, port=port)
    scheme = "https" if config.serving.tls else "http"
    log.info("scoring endpoint on %s://%s:%d (loop %s, http %s, model %s)", scheme, host, port, settings.loop,
             settings.http, config.mlflow.model_name)
    uvicorn.Server(settings).run()
