"""Prometheus metrics of the endpoint, in a registry of its own (one per app instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from learnscore.serving.models import ModelWatcher
from learnscore.serving.request_log import RequestLog

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _LiveState:
    """Reads the watcher and the request log at scrape time, so the numbers are never stale."""

    def __init__(self, watcher: ModelWatcher, request_log: RequestLog | None):
        self.watcher = watcher
        self.request_log = request_log

    def collect(self):
        status = self.watcher.status
        yield GaugeMetricFamily("learnscore_serving_registry_reachable",
                                "1 when the last registry check answered, 0 when it failed",
                                value=1 if status.reachable else 0)
        served = self.watcher.served
        loaded = GaugeMetricFamily("learnscore_serving_model_loaded",
                                   "Loaded model version per alias (value 1)",
                                   labels=["model_name", "model_version", "alias"])
        for model in (served.production, served.staging):
            if model is not None:
                loaded.add_metric([model.name, model.version, model.alias], 1)
        yield loaded
        yield GaugeMetricFamily("learnscore_serving_ready",
                                "1 when a production model is loaded", value=1 if served.production else 0)
        yield CounterMetricFamily("learnscore_serving_model_swaps", "Model swaps since start",
                                  value=self.watcher.swaps)
        if self.request_log is not None:
            counters = self.request_log.counters
            yield GaugeMetricFamily("learnscore_serving_request_log_queued",
                                    "Request-log records waiting for Kafka", value=self.request_log.queued)
            yield CounterMetricFamily("learnscore_serving_request_log_sent",
                                      "Request-log records the broker confirmed", value=counters.sent)
            yield CounterMetricFamily("learnscore_serving_request_log_dropped",
                                      "Request-log records dropped because the queue was full",
                                      value=counters.dropped)
            yield CounterMetricFamily("learnscore_serving_request_log_send_failures",
                                      "Sends that failed and were queued again",
                                      value=counters.send_failures)
            yield GaugeMetricFamily("learnscore_serving_request_log_broker_connected",
                                    "1 while the request log reaches Kafka",
                                    value=1 if counters.broker_connected else 0)


class ServingMetrics:
    def __init__(self, watcher: ModelWatcher, request_log: RequestLog | None):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("learnscore_serving_requests", "Scoring requests by outcome",
                                ["status", "model_version", "route"], registry=self.registry)
        self.latency = Histogram("learnscore_serving_request_latency_seconds",
                                 "Scoring request latency (received to response)",
                                 ["model_version"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.items = Counter("learnscore_serving_scored_items", "Submissions scored",
                             ["model_version", "route"], registry=self.registry)
        self.unauthorised = Counter("learnscore_serving_unauthorised",
                                    "Requests refused for a missing or wrong API key, by path",
                                    ["path"], registry=self.registry)
        self.rate_limited = Counter("learnscore_serving_rate_limited",
                                    "Requests refused with 429 (authenticated: with the right API key)",
                                    ["authenticated"], registry=self.registry)
        self.unusable_outputs = Counter("learnscore_serving_unusable_outputs",
                                        "Requests answered 503 because the model returned non-finite values",
                                        ["model_version"], registry=self.registry)
        self.refusals_not_logged = Counter("learnscore_serving_refusals_not_logged",
                                           "Refused requests (401, 429) counted here but left out of the "
                                           "request log (serving.refusal_log_share)", ["status"],
                                           registry=self.registry)
        self.registry.register(_LiveState(watcher, request_log))

    def observe(self, status: int, model_version: str | None, route: str | None,
                latency_s: float, items: int) -> None:
        version = model_version or "none"
        self.requests.labels(str(status), version, route or "none").inc()
        self.latency.labels(version).observe(latency_s)
        if status == 200:
            self.items.labels(version, route or "none").inc(items)

    def render(self) -> bytes:
        return generate_latest(self.registry)
