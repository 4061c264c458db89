"""The retrain worker's /metrics: served on retrain.metrics_port over real HTTP, counted per run
status, announced for `learnscore stack status` while it runs and withdrawn when it closes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from learnscore.batch.retrain_metrics import WorkerMetrics
from learnscore.batch.retrain_runs import RetrainRun
from learnscore.core.config import Config
from learnscore.core.endpoints import announced_endpoints
from learnscore.core.ports import PortTaken, free_port


def _config(tmp_path, port: int) -> Config:
    config = Config(state_dir=str(tmp_path))
    return config.model_copy(update={"retrain": config.retrain.model_copy(update={"metrics_port": port})})


def _run(status: str, seconds: float) -> RetrainRun:
    started = datetime(2026, 12, 3, 12, tzinfo=timezone.utc)
    return RetrainRun("r", "drift", ("q",), status, started, finished_at=started + timedelta(seconds=seconds))


def _sample(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.rsplit(" ", 1)[1])


def test_metrics_answer_on_the_port_and_move_with_the_runs(tmp_path):
    config = _config(tmp_path, free_port())
    metrics = WorkerMetrics()
    url = metrics.serve(config)
    try:
        assert url == f"http://127.0.0.1:{config.retrain.metrics_port}/metrics"
        assert [(e["name"], e["url"]) for e in announced_endpoints(config)] == [("retrain-worker", url)]
        before = httpx.get(url, timeout=10)
        assert before.status_code == 200
        assert 'learnscore_retrain_runs_total{status="succeeded"}' not in before.text

        metrics.observe_run(_run("succeeded", 42.0))
        metrics.observe_run(_run("deferred", 3.0))
        metrics.observe_run(_run("succeeded", 7.5))
        text = httpx.get(url, timeout=10).text
        assert _sample(text, 'learnscore_retrain_runs_total{status="succeeded"}') == 2
        assert _sample(text, 'learnscore_retrain_runs_total{status="deferred"}') == 1
        assert _sample(text, "learnscore_retrain_deferred_attempts_total") == 1
        assert _sample(text, "learnscore_retrain_last_run_duration_seconds") == 7.5
    finally:
        metrics.close()
    assert announced_endpoints(config) == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=2)


def test_port_zero_serves_nothing_and_a_taken_port_says_which_setting(tmp_path):
    assert WorkerMetrics().serve(_config(tmp_path, 0)) is None
    config = _config(tmp_path, free_port())
    first = WorkerMetrics()
    first.serve(config)
    try:
        with pytest.raises(PortTaken, match="retrain.metrics_port"):
            WorkerMetrics().serve(config)
    finally:
        first.close()
