"""The REST endpoint: ``POST /v1/score`` plus model, health, readiness and metrics routes.

:func:`create_app` wires the parts together; every request-path step is a plain function
in its own module (rate limits, auth, body, validation, scoring) so each can be read and tested
alone. Everything but the probes needs the API key: ``/v1/score``, ``/v1/model`` and
``/metrics`` (which name versions and the registry). ``/healthz`` and ``/readyz`` answer
anyone, and say no more than alive / ready (docs/security.md).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import random
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from learnscore.core.alerts import alert
from learnscore.core.config import Config, Secrets
from learnscore.core.tracking import apply_pickle_setting
from learnscore.registry.access import PRODUCTION, STAGING
from learnscore.serving.auth import api_key_matches, presented_api_key, redact_json, redact_text
from learnscore.serving.body import BodyTooLarge, declared_length, read_limited
from learnscore.serving.error_rate import ErrorRate, ErrorRateWatch
from learnscore.serving.metrics import ServingMetrics
from learnscore.serving.models import ModelWatcher, Registry, ServedModels
from learnscore.serving.ratelimit import Limited, RateLimitMiddleware
from learnscore.serving.request_log import RefusalSampler, RequestLog, request_record
from learnscore.serving.scoring import ScoreBatcher, UnusableOutput
from learnscore.serving.validation import parse_submissions

log = logging.getLogger(__name__)

JSON = "application/json"


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON, headers=headers)


def _error(status: int, request_id: str, code: str, message: str, secret: str = "",
           **extra: Any) -> Response:
    """A JSON error; ``secret`` (the API key) is blanked out of the messages that quote input."""
    body = orjson.dumps({"request_id": request_id, "error": code, "message": message, **extra})
    return Response(redact_json(body, secret), status_code=status, media_type=JSON,
                    headers={"X-Request-ID": request_id})


class ScoringService:
    """Everything a scoring request needs, owned by one app instance."""

    def __init__(self, config: Config, api_key: str, request_log: RequestLog | None):
        self.config = config
        self.api_key = api_key
        self.registry = Registry(config)
        self.watcher = ModelWatcher(self.registry, config.serving.alias_check_seconds,
                                    canary=config.serving.canary_fraction > 0,
                                    on_change=self._log_change)
        self.request_log = request_log
        self.metrics = ServingMetrics(self.watcher, request_log)
        self.errors = ErrorRateWatch.from_config(config.alerts)
        self.batcher = ScoreBatcher(config.serving.score_batch_items)
        self.refusals = RefusalSampler(config.serving.refusal_log_share)
        self.started_at = datetime.now(timezone.utc)

    @staticmethod
    def _log_change(served: ServedModels) -> None:
        production = served.production.version if served.production else None
        staging = served.staging.version if served.staging else None
        log.info("now serving production=%s staging=%s", production, staging)
        # A loaded model, MLflow and the libraries are ~400k long-lived objects: a full garbage
        # collection walked them all and stalled requests for 50–270 ms (measured). Frozen, the
        # collector only visits what requests allocate; the old model is still freed by reference
        # counting (only reference cycles in it stay, once per swap).
        gc.freeze()

    def choose(self, served: ServedModels):
        """The model for one request: the canary share goes to ``staging`` when it differs."""
        canary = self.config.serving.canary_fraction
        staging = served.staging
        if (canary > 0 and staging is not None and served.production is not None
                and staging.version != served.production.version and random.random() < canary):
            return staging
        return served.production

    def finish(self, request_id: str, received_at: datetime, started: float, status: int,
               model=None, items: int = 0, error_code: str | None = None,
               error: str | None = None) -> None:
        """Count the request in /metrics and queue its request-log record (never blocks)."""
        latency_s = time.perf_counter() - started
        version = model.version if model is not None else None
        route = model.alias if model is not None else None
        if error is not None:  # the request log lands in ops.endpoint_requests: no secrets there
            error = redact_text(error, self.api_key)
        self.metrics.observe(status, version, route, latency_s, items)
        self._watch_errors(status)
        if status in (401, 429) and not self.refusals.keep(status):
            self.metrics.refusals_not_logged.labels(str(status)).inc()
            return
        if self.request_log is not None:
            self.request_log.record(request_record(
                request_id, received_at, status, latency_s * 1000,
                model_name=model.name if model is not None else self.config.mlflow.model_name,
                model_version=version, route=route, items=items, error_code=error_code,
                error=error))

    def _watch_errors(self, status: int) -> None:
        """Count the response in the error-rate window; alert when the 5xx share is too high."""
        try:
            reading = self.errors.observe(status)
            if reading is not None:
                _alert_error_rate(reading, self.config.alerts.endpoint_error_rate)
        except Exception as exc:  # noqa: BLE001 - an alert must never fail a request
            log.error("the endpoint's error-rate alert failed: %s", exc)

    def limited(self, limited: Limited) -> None:
        """A request the rate limiter refused: counted, and logged like a 401 (sampled)."""
        self.metrics.rate_limited.labels(str(limited.authenticated).lower()).inc()
        if limited.path == "/v1/score":
            self.finish(limited.request_id, datetime.now(timezone.utc), time.perf_counter(), 429,
                        error_code="rate_limited", error=f"rate limited (authenticated: {limited.authenticated})")

    def authorised(self, request: Request) -> bool:
        headers = request.headers
        if api_key_matches(presented_api_key(headers.get("x-api-key"), headers.get("authorization")),
                           self.api_key):
            return True
        self.metrics.unauthorised.labels(request.url.path).inc()
        return False

    def start(self) -> None:
        if self.request_log is not None:
            self.request_log.start()
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()
        self.batcher.close()
        if self.request_log is not None:
            self.request_log.stop()


def _alert_error_rate(reading: ErrorRate, threshold: float) -> None:
    alert("endpoint_error_rate",
          f"scoring endpoint: {reading.errors} of {reading.requests} requests failed with a server error "
          f"(5xx) in the last {reading.window_s:g} s: {reading.share:.0%} > {threshold:.0%} "
          f"(alerts.endpoint_error_rate); see the endpoint's log and /metrics",
          key="/v1/score", errors=reading.errors, requests=reading.requests,
          share=reading.share, threshold=threshold, window_s=reading.window_s)


def _unauthorised(request_id: str) -> Response:
    response = _error(401, request_id, "unauthorised",
                      "send the API key in the X-API-Key header or as Authorization: Bearer <key>")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def create_app(config: Config, secrets: Secrets | None = None, request_log: bool = True) -> FastAPI:
    """The endpoint for ``config``; background work starts with the app's lifespan.

    Raises :class:`~learnscore.core.config.ConfigError` when the API key is missing (outside
    the local default) or shorter than 32 characters.
    """
    import mlflow

    # models:/ URIs resolve through the global registry URI.
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    mlflow.set_registry_uri(config.registry_uri)
    apply_pickle_setting(config)
    api_key = (secrets or Secrets(config)).api_key.get_secret_value()
    service = ScoringService(config, api_key, RequestLog(config) if request_log else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="learnscore scoring endpoint", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    limits = config.serving
    app.add_middleware(RateLimitMiddleware, api_key=api_key, rate=limits.rate_limit_per_second,
                       burst=limits.rate_limit_burst, unauthenticated_rate=limits.unauthenticated_rate_per_second,
                       unauthenticated_burst=limits.unauthenticated_burst, on_limited=service.limited)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        request_id = uuid.uuid4().hex
        log.exception("request %s to %s failed", request_id, request.url.path)
        return _error(500, request_id, "internal", "internal error; quote the request id when you report it")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _json(exc.status_code, {"error": "http_error", "message": str(exc.detail)})

    @app.post("/v1/score")
    async def score(request: Request) -> Response:
        started = time.perf_counter()
        received_at = datetime.now(timezone.utc)
        request_id = uuid.uuid4().hex
        try:
            return await _score(request, request_id, received_at, started)
        except Exception:
            log.exception("scoring request %s failed", request_id)
            service.finish(request_id, received_at, started, 500, error_code="internal",
                           error="internal error (see the endpoint's log)")
            return _error(500, request_id, "internal",
                          "internal error; quote the request id when you report it")

    async def _score(request: Request, request_id: str, received_at: datetime, started: float) -> Response:
        headers = request.headers
        if not service.authorised(request):
            service.finish(request_id, received_at, started, 401, error_code="unauthorised",
                           error="missing or wrong API key")
            return _unauthorised(request_id)

        limit = config.serving.max_body_bytes
        declared = declared_length(headers.get("content-length"))
        try:
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit, declared)
            raw = await read_limited(request.stream(), limit)
        except BodyTooLarge as exc:
            service.finish(request_id, received_at, started, 413, error_code="body_too_large", error=str(exc))
            return _error(413, request_id, "body_too_large", str(exc), secret=service.api_key)

        parsed = parse_submissions(raw, config.serving.max_batch)
        if not parsed.ok:
            items = [problem.as_json() for problem in parsed.problems]
            message = (f"{len(items)} submission(s) refused by the DiagnosticSubmitted contract; "
                       f"nothing was scored" if parsed.error_code == "invalid_event" else items[0]["reason"])
            service.finish(request_id, received_at, started, 422, error_code=parsed.error_code,
                           error="; ".join(p["reason"] for p in items[:3]))
            return _error(422, request_id, parsed.error_code or "invalid", message,
                          secret=service.api_key, items=items)

        served = service.watcher.served  # one snapshot for the whole request
        model = service.choose(served)
        if model is None:
            message = (f"no production model yet: give a version of {config.mlflow.model_name!r} "
                       f"the alias '{PRODUCTION}' in the registry; the endpoint picks it up within "
                       f"{config.serving.alias_check_seconds:g}s (see /readyz)")
            service.finish(request_id, received_at, started, 503, items=len(parsed.events),
                           error_code="no_model", error=message)
            return _error(503, request_id, "no_model", message)

        try:
            predictions = await service.batcher.score(model, parsed.events)
        except UnusableOutput as exc:
            # NaN would go out as null: a client must not take that for a score.
            service.metrics.unusable_outputs.labels(model.version).inc()
            service.finish(request_id, received_at, started, 503, model=model, items=len(parsed.events),
                           error_code="unusable_output", error=str(exc))
            return _error(503, request_id, "unusable_output",
                          f"model version {model.version} returned no usable prediction (not a finite "
                          f"number); nothing was scored. Try again later; the operators are alerted by "
                          f"the learnscore_serving_unusable_outputs metric")
        service.finish(request_id, received_at, started, 200, model=model, items=len(predictions))
        return _json(200, {"request_id": request_id, "model_name": model.name,
                           "model_version": model.version, "route": model.alias,
                           "predictions": predictions}, headers={"X-Request-ID": request_id})

    @app.get("/v1/model")
    async def model_info(request: Request) -> Response:
        if not service.authorised(request):
            return _unauthorised(uuid.uuid4().hex)
        served = service.watcher.served
        return _json(200, {
            "model_name": config.mlflow.model_name,
            PRODUCTION: served.production.describe() if served.production else None,
            STAGING: served.staging.describe() if served.staging else None,
            "canary_fraction": config.serving.canary_fraction,
            "registry": _registry_status(service),
            "refused": dict(service.watcher.refused),  # version → why the trust checks refused it
        })

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json(200, {"status": "alive", "since": service.started_at.isoformat()})

    @app.get("/readyz")
    async def readyz() -> Response:
        # Open to anyone (load balancers): ready or not, and why, but no model name, version
        # or registry location; /v1/model tells those to holders of the key.
        served = service.watcher.served
        status_now = service.watcher.status
        reachable = status_now.reachable
        loaded = served.production is not None
        if not loaded:
            status, reason = "not_ready", ("no production model loaded yet"
                                           + ("" if reachable else "; the registry is unreachable"))
        elif not reachable:
            status, reason = "degraded", "serving the loaded model; the registry is unreachable"
        else:
            status, reason = "ready", "serving"
        return _json(200 if loaded else 503, {
            "status": status, "reason": reason, "model_loaded": loaded,
            "registry": {"reachable": reachable,
                         "checked_at": status_now.checked_at.isoformat() if status_now.checked_at else None},
        })

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if not service.authorised(request):
            return _unauthorised(uuid.uuid4().hex)
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def _registry_status(service: ScoringService) -> dict[str, Any]:
    status = service.watcher.status
    return {"reachable": status.reachable, "uri": service.registry.where,
            "checked_at": status.checked_at.isoformat() if status.checked_at else None,
            "error": status.error}
