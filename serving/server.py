"""``learnscore serve``: the endpoint under uvicorn, one process, one worker."""

from __future__ import annotations

import importlib.util
import logging

from learnscore.core.config import Config
from learnscore.core.ports import require_free_port

log = logging.getLogger(__name__)


def fastest_loop_and_parser() -> tuple[str, str]:
    """uvloop and httptools when installed (measurably faster), asyncio and h11 otherwise."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


def run_server(config: Config, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop it cleanly, flushing the request log)."""
    import uvicorn

    from learnscore.serving.app import create_app

    loop, http = fastest_loop_and_parser()
    host = host or config.serving.host
    port = port or config.serving.port
    require_free_port(host, port, "the scoring endpoint",
                      "choose another port with --port or LEARNSCORE__SERVING__PORT")
    log.info("scoring endpoint on http://%s:%d (loop %s, http %s, model %s)", host, port, loop,
             http, config.mlflow.model_name)
    server = uvicorn.Server(uvicorn.Config(
        create_app(config), host=host, port=port, workers=1, loop=loop, http=http,
        access_log=False, log_level="warning", server_header=False, date_header=False,
        timeout_keep_alive=30,
    ))
    server.run()
