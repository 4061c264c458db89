"""``drift_detected`` alerts from the drift hook, at a real local webhook receiver: raised only
once a finding's ``ops.drift_events`` rows are written, once per incident, not again on a replay.

The real hook, detectors and state file; its two outputs are plain functions here (the Delta and
Kafka writers are tested in test_drift_hook.py), so the test needs no Spark and can make the
first write fail.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from learnscore.core.alerts import configure_alerts
from learnscore.core.config import Config
from learnscore.streaming.drift.hook import DriftHook, drift_events_written
from learnscore.streaming.drift.monitor import DriftSettings
from tests.support import WebhookReceiver

NOW = datetime(2025, 3, 1, tzinfo=timezone.utc)


def _batch(b: int, shifted_from: int = 6) -> pd.DataFrame:
    """200 scored math submissions of grade 6; their accuracy drops from batch ``shifted_from``."""
    rng = np.random.default_rng(b)
    n = 200
    return pd.DataFrame({
        "event_id": [f"e{b}-{i}" for i in range(n)],
        "event_time": pd.date_range(NOW + timedelta(seconds=200 * b), periods=n, freq="s", tz="UTC"),
        "subject": "math", "grade_level": 6, "model_version": "1",
        "accuracy": np.clip(rng.normal(0.7 if b < shifted_from else 0.45, 0.15, n), 0, 1),
        "ability": rng.normal(0, 1, n), "mean_log_time": rng.normal(9, 0.3, n),
        "progress_score": rng.normal(60, 12, n)})


class _Outputs:
    """Where the hook writes: rows kept in memory; ``fail_next`` makes the next write fail."""

    def __init__(self):
        self.events: list[tuple[str, int, list[dict]]] = []
        self.requests: list[dict] = []
        self.fail_next = False

    def write_events(self, rows, app_id, batch_id):
        if self.fail_next:
            self.fail_next = False
            raise OSError("the lake is away")
        self.events.append((app_id, batch_id, rows))

    def send_requests(self, events):
        self.requests += events


def _hook(state_path: str, outputs: _Outputs) -> DriftHook:
    drift = Config().drift.model_copy(update={"min_segment_size": 300, "cooldown_seconds": 3600})
    return DriftHook(DriftSettings.from_config(drift), state_path, outputs.write_events, outputs.send_requests)


def test_a_drift_is_alerted_once_after_its_events_are_written(tmp_path):
    state = str(tmp_path / "drift" / "state.json")
    outputs = _Outputs()
    with WebhookReceiver() as receiver:
        config = Config()
        config = config.model_copy(update={"alerts": config.alerts.model_copy(update={
            "webhook_url": receiver.url, "retry_backoff_seconds": 0.01})})
        dispatcher = configure_alerts(config, environ={})
        try:
            hook = _hook(state, outputs)
            written_before = sum(drift_events_written().values())
            for b in range(6):
                assert hook(b, _batch(b), None, now=NOW + timedelta(seconds=b)) == []
            outputs.fail_next = True
            with pytest.raises(OSError, match="the lake is away"):  # the stream logs it and goes on
                hook(6, _batch(6), None, now=NOW + timedelta(seconds=6))
            assert dispatcher.flush(10) and receiver.bodies == []  # found, not written: no alert yet
            assert sum(drift_events_written().values()) == written_before  # nor counted on /metrics
            hook(7, _batch(7), None, now=NOW + timedelta(seconds=7))  # the outbox is written now
            assert sum(drift_events_written().values()) == written_before + 1
            assert dispatcher.flush(10)
            alerted_after_write = len(receiver.bodies)
            assert hook(7, _batch(7), None) == []  # a replay: nothing left unwritten, no alert

            # Stopped and restarted (a new process: a new dispatcher, no memory of what it sent):
            # the written outbox was forgotten by the saved state, so nothing is written or
            # alerted again, even before the next batch of this query comes.
            dispatcher = configure_alerts(config, environ={})
            restarted = _hook(state, outputs)
            assert restarted(7, _batch(7), None) == []
            assert dispatcher.flush(10)
        finally:
            configure_alerts(Config(), environ={})

    assert alerted_after_write == 1
    assert [(batch_id, [r["segment"] for r in rows]) for _, batch_id, rows in outputs.events] == [
        (6, ["math/5-8"])]
    row = outputs.events[0][2][0]
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert (body["kind"], body["key"]) == ("drift_detected", f"{row['kind']}/accuracy/math/5-8")
    assert body["fields"]["request_id"] == row["request_id"] == outputs.requests[0]["event_id"]
    assert body["fields"]["drift_kind"] == row["kind"] and body["fields"]["batch_id"] == 6
    assert body["fields"]["statistic"] < -1
    assert body["text"].startswith(f"[learnscore local] drift: {row['kind']}/accuracy in math/5-8, -")
    assert (dispatcher.counts.accepted, dispatcher.counts.suppressed) == (0, 0)  # the restart announced nothing
