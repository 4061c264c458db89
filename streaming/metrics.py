"""Prometheus ``/metrics`` of a running scorer: what each query did, how late, with which models.

Read at scrape time from the queries' runtimes (a collector, not counters updated inside the
batch handlers), so the stream's code path stays as it is and a scrape costs nothing between
scrapes. Served by ``learnscore stream start`` on ``streaming.metrics_port`` (0: off).

``learnscore_stream_batches_total{query}``, ``learnscore_stream_rows_total{query,kind}`` (read,
scored, quarantined, duplicates, failed, outcomes, endpoint_requests),
``learnscore_stream_last_batch_seconds{query}``, ``learnscore_stream_latency_seconds{query,quantile}``
(score: event → published score; gold: event → gold row; of the last batch that had rows),
``learnscore_stream_pending_unscored``, ``learnscore_stream_model_info{alias,version,status}``,
``learnscore_stream_up{query}``, ``learnscore_stream_drift_events_total{kind}`` (rows written to
``ops.drift_events`` by this run: model, covariate, concept, effort, item, …).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from learnscore.streaming.runtime import COUNTED

log = logging.getLogger(__name__)


class ScorerCollector:
    """Reads a :class:`learnscore.streaming.job.Scorer` on every scrape."""

    def __init__(self, scorer):
        self.scorer = scorer

    def collect(self):
        scorer = self.scorer
        batches = CounterMetricFamily("learnscore_stream_batches", "Micro-batches finished in this run",
                                      labels=["query"])
        rows = CounterMetricFamily("learnscore_stream_rows", "Rows per query and kind in this run",
                                   labels=["query", "kind"])
        duration = GaugeMetricFamily("learnscore_stream_last_batch_seconds", "Duration of the last micro-batch",
                                     labels=["query"])
        latency = GaugeMetricFamily("learnscore_stream_latency_seconds",
                                    "Event time to published score (score) or to the gold row (gold), last batch",
                                    labels=["query", "quantile"])
        up = GaugeMetricFamily("learnscore_stream_up", "1 while the query runs", labels=["query"])
        for name, runtime in scorer.runtimes.items():
            batches.add_metric([name], runtime.batches)
            for kind in COUNTED:
                rows.add_metric([name, kind.replace("rows_read", "read")], runtime.totals.get(kind, 0))
            report = runtime.last_report
            if report is not None:
                duration.add_metric([name], report.duration_s)
                for quantile, value in (("0.5", report.latency_p50_s), ("0.95", report.latency_p95_s),
                                        ("0.99", report.latency_p99_s)):
                    if value is not None:
                        latency.add_metric([name, quantile], value)
            query = scorer.queries.get(name)
            up.add_metric([name], 1.0 if query is not None and query.isActive else 0.0)
        yield from (batches, rows, duration, latency, up)
        pending = GaugeMetricFamily("learnscore_stream_pending_unscored",
                                    "Valid submissions waiting on the retries topic for a version that scores them")
        waiting = scorer.pending_unscored()
        pending.add_metric([], float("nan") if waiting is None else waiting)  # NaN: the broker could not say
        yield pending
        models = GaugeMetricFamily("learnscore_stream_model_info", "The versions the stream scores with",
                                   labels=["alias", "version", "status"])
        for cache in scorer.model_caches():
            state = cache.state
            models.add_metric([cache.alias, state.model.version if state.model else "", state.status], 1.0)
        yield models
        from learnscore.streaming.drift.hook import drift_events_written

        drift = CounterMetricFamily("learnscore_stream_drift_events", "Drift events written to ops.drift_events "
                                    "in this run", labels=["kind"])
        for kind, count in sorted(drift_events_written().items()):
            drift.add_metric([kind], count)
        yield drift


def serve_metrics(scorer, host: str, port: int):
    """Start ``/metrics`` for ``scorer`` on ``host:port``; returns the server (``shutdown()`` it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScorerCollector(scorer))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("scorer metrics on http://%s:%d/metrics", host, server.server_port)
    return server


__all__ = ["ScorerCollector", "serve_metrics"]
