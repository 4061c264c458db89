"""The monitoring dashboard: one self-refreshing HTML page and the JSON it draws from, for holders
of the endpoint's API key (``monitoring/access.py``)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import datetime, timezone
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from learnscore.core.config import Config, ConfigError, Secrets
from learnscore.monitoring import access, panels
from learnscore.monitoring.tables import TableReader

log = logging.getLogger(__name__)

PANEL_IDS = ("requests", "endpoint", "versions", "stream", "drift_events", "drift_metrics",
             "lifecycle", "live_error", "model_versions", "scores", "psychometrics")


def endpoint_base(config: Config) -> tuple[str, Any]:
    """The scoring endpoint's base URL as this machine reaches it, and the ``verify`` to use:
    with TLS, its own certificate is trusted too (a self-signed one included)."""
    serving = config.serving
    host = "127.0.0.1" if serving.host in ("0.0.0.0", "::") else serving.host
    if not serving.tls:
        return f"http://{host}:{serving.port}", True
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(serving.tls_certfile))
    return f"https://{host}:{serving.port}", context


def probe_endpoint(config: Config, timeout_s: float = 1.0) -> dict[str, Any]:
    """Ask the scoring endpoint's /readyz (up: ready or degraded; not ready; down) and, with the
    API key, /v1/model for the version it serves (the open /readyz does not name it)."""
    base, verify = endpoint_base(config)
    url = f"{base}/readyz"
    try:
        answer = httpx.get(url, timeout=timeout_s, verify=verify)
        body = answer.json()
    except (httpx.HTTPError, ValueError):
        return {"up": False, "status": "down", "url": url}
    registry = body.get("registry") or {}
    return {"up": answer.status_code == 200, "status": body.get("status", "unknown"), "url": url,
            "version": _served_version(config, base, verify, timeout_s),
            "registry": "reachable" if registry.get("reachable") else "unreachable"}


def _served_version(config: Config, base: str, verify: Any, timeout_s: float) -> str | None:
    try:
        answer = httpx.get(f"{base}/v1/model", timeout=timeout_s, verify=verify,
                           headers={"X-API-Key": Secrets(config).api_key.get_secret_value()})
        production = answer.json().get("production") if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError, ConfigError):
        return None
    return (production or {}).get("version")


def build_panels(config: Config, reader: TableReader, probe: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, in page order, from the current table versions."""
    minutes, bucket = config.dashboard.window_minutes, config.dashboard.bucket_seconds
    requests = reader.read("ops.endpoint_requests")
    predictions = reader.read("gold.predictions")
    outcomes = reader.read("gold.prediction_outcomes")
    shadow = reader.read("gold.shadow_prediction_outcomes")
    events = reader.read("ops.model_events")
    return [
        panels.requests_panel(requests, minutes, bucket),
        panels.endpoint_panel(requests, probe, minutes, bucket),
        panels.versions_panel(requests, minutes),
        panels.stream_panel(reader.read("ops.stream_progress"), reader.read("silver.quarantine"), minutes),
        panels.drift_events_panel(reader.read("ops.drift_events")),
        panels.drift_metrics_panel(reader.read("ops.drift_metrics")),
        panels.lifecycle_panel(events),
        panels.live_error_panel(outcomes, minutes, bucket, shadow=shadow),
        panels.model_versions_panel(predictions, reader.read("ops.estimated_performance"), events, outcomes, shadow,
                                    minutes, bucket, config.estimation.interval_seconds),
        panels.scores_panel(predictions),
        panels.psychometrics_panel(predictions, reader.read("ops.item_flags"), minutes, bucket,
                                   config.drift.grade_bands),
    ]


def _asset(name: str) -> str:
    return resources.files("learnscore.monitoring").joinpath("static", name).read_text(encoding="utf-8")


_MAX_LOGIN_BODY = 4096
_WRONG_KEY_PAUSE_S = 0.5  # a wrong key costs the guesser time; keys are 32+ random characters anyway


def create_dashboard_app(config: Config) -> FastAPI:
    """The dashboard app. Raises ``ConfigError`` when there is no usable API key (it guards the panels)."""
    reader = TableReader(config)
    api_key = Secrets(config).api_key.get_secret_value()
    app = FastAPI(title="learnscore dashboard", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def require_key(request: Request, call_next):
        if request.url.path in access.OPEN_PATHS or access.allowed(request.headers, request.cookies, api_key):
            return await call_next(request)
        if request.method == "GET" and request.url.path == "/":
            return RedirectResponse("/login", status_code=303)
        return Response(orjson.dumps({"error": "unauthorised", "message": "log in on /login with the scoring "
                                      "endpoint's API key, or send it as X-API-Key"}),
                        status_code=401, media_type="application/json")

    @app.get("/login", response_class=HTMLResponse)
    def login_form() -> HTMLResponse:
        return HTMLResponse(access.login_page())

    @app.post("/login")
    async def login(request: Request) -> Response:
        body = await request.body()
        key = (parse_qs(body[:_MAX_LOGIN_BODY].decode("utf-8", "replace")).get("key") or [None])[0]
        if not access.same_secret(key, api_key):
            await asyncio.sleep(_WRONG_KEY_PAUSE_S)
            return HTMLResponse(access.login_page("That is not the API key."), status_code=401)
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(access.SESSION_COOKIE, access.session_token(api_key), httponly=True,
                          samesite="strict", secure=config.dashboard.tls)
        return answer

    @app.get("/logout")
    def logout() -> Response:
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(access.SESSION_COOKIE)
        return answer
    page = (_asset("dashboard.html")
            .replace("{{refresh_ms}}", str(int(config.dashboard.refresh_seconds * 1000)))
            .replace("{{panel_ids}}", orjson.dumps(PANEL_IDS).decode()))
    charts_js = _asset("charts.js")

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/static/charts.js")
    def charts() -> Response:
        return Response(charts_js, media_type="text/javascript")

    @app.get("/api/panels")
    def all_panels() -> Response:
        try:
            built = build_panels(config, reader, probe_endpoint(config))
        except Exception:
            log.exception("building the dashboard panels failed")
            return Response(orjson.dumps({"error": "could not build the panels; see the dashboard log"}),
                            status_code=500, media_type="application/json")
        return Response(orjson.dumps({"generated_at": datetime.now(timezone.utc).isoformat(),
                                      "refresh_seconds": config.dashboard.refresh_seconds,
                                      "panels": built}, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"alive"}', media_type="application/json")

    return app
