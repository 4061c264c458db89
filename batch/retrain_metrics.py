"""Prometheus metrics of the retrain worker, in a registry of its own, on ``retrain.metrics_port``.

``learnscore_retrain_runs_total{status}`` (final statuses and ``deferred``),
``learnscore_retrain_last_run_duration_seconds``, ``learnscore_retrain_deferred_attempts_total``,
``learnscore_retrain_waits_total`` (concept-drift runs waiting for post-onset outcomes) and
``learnscore_guard_decisions_total{action}`` (the rollback guard's checks in this worker).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

log = logging.getLogger(__name__)


class WorkerMetrics:
    """The worker's counters; ``serve(config)`` opens ``/metrics`` when ``retrain.metrics_port`` > 0."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter("learnscore_retrain_runs", "Retrain run attempts by the status they ended with",
                            ["status"], registry=self.registry)
        self.last_duration = Gauge("learnscore_retrain_last_run_duration_seconds",
                                   "Seconds the last run attempt took (started → final or deferred row)",
                                   registry=self.registry)
        self.deferred = Counter("learnscore_retrain_deferred_attempts",
                                "Run attempts deferred because MLflow or the registry stayed away",
                                registry=self.registry)
        self.waits = Counter("learnscore_retrain_waits",
                             "Checks at which a concept-drift run waited for post-onset outcomes",
                             registry=self.registry)
        self.guard = Counter("learnscore_guard_decisions", "Rollback guard decisions by action",
                             ["action"], registry=self.registry)
        self._server = None
        self._announcement: Path | None = None

    def observe_run(self, run) -> None:
        """Count a run attempt's end row (a ``RetrainRun``)."""
        self.runs.labels(run.status).inc()
        if run.status == "deferred":
            self.deferred.inc()
        if run.finished_at is not None and run.started_at is not None:
            self.last_duration.set((run.finished_at - run.started_at).total_seconds())

    def observe_guard(self, decision) -> None:
        self.guard.labels(decision.action).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, config) -> str | None:
        """Start ``/metrics`` on ``retrain.metrics_port`` (all interfaces of ``serving.host``'s
        kind: loopback by default); returns its URL, None when the port is 0."""
        from prometheus_client import start_http_server

        from learnscore.core.endpoints import announce_endpoint
        from learnscore.core.ports import require_free_port

        port = config.retrain.metrics_port
        if not port:
            return None
        host = config.serving.host
        require_free_port(host, port, "the retrain worker's /metrics", "set retrain.metrics_port (0: off)")
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        url = f"http://{host}:{port}/metrics"
        self._announcement = announce_endpoint(config, "retrain-worker", url)
        log.info("retrain worker metrics at %s", url)
        return url

    def close(self) -> None:
        from learnscore.core.endpoints import withdraw_endpoint

        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._announcement is not None:
            withdraw_endpoint(self._announcement)
            self._announcement = None
