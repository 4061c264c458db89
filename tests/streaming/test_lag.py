"""The stream-lag decision (``streaming/lag.py``) fed as the run loop feeds it — the scoring
query's batch reports through ``Scorer.check_lag`` — and its alert at a real local webhook
receiver: one per incident. No Spark: the decision reads the reports, never a query."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from learnscore.core.alerts import configure_alerts
from learnscore.core.config import Config
from learnscore.streaming.job import Scorer
from learnscore.streaming.lag import SCORE_LATENCY, UNSCORED_WAIT, LagWatch, alert_stream_lag
from learnscore.streaming.progress import BatchReport
from learnscore.streaming.runtime import QueryRuntime
from tests.support import WebhookReceiver

T0 = datetime(2026, 12, 3, 14, 0, tzinfo=timezone.utc)


def _config(**alerts) -> Config:
    config = Config()
    return config.model_copy(update={"alerts": config.alerts.model_copy(update={
        "stream_lag_seconds": 120, "retry_backoff_seconds": 0.01, **alerts})})


def _scorer(config: Config, tmp_path) -> Scorer:
    """The scorer as the run loop sees it, reduced to what the lag check reads: the scoring
    query's runtime (its last batch report)."""
    runtime = QueryRuntime("score", config, str(tmp_path / "score"))
    return Scorer(spark=None, config=config, queries={}, runtimes={"score": runtime}, models=None,
                  catch_up=None, lease=None, progress=None)


def _batch(scorer: Scorer, batch_id: int, *, latency_s: float | None, pending: int) -> None:
    """What the scoring handler leaves behind after a batch."""
    scorer.runtimes["score"].last_report = BatchReport(
        "score", batch_id, T0 + timedelta(seconds=10 * batch_id), rows_read=50, scored=50,
        latency_p50_s=latency_s, latency_p95_s=None if latency_s is None else latency_s * 1.5,
        pending_unscored=pending)


def test_slow_scoring_and_a_long_unscored_wait_are_each_one_alert(tmp_path):
    with WebhookReceiver() as receiver:
        config = _config(webhook_url=receiver.url)
        dispatcher = configure_alerts(config, environ={})
        try:
            scorer = _scorer(config, tmp_path)
            found = []
            # Batches score in seconds, then the stream falls behind: 3 batches with a median of 5 min.
            for batch_id, latency_s in enumerate([2.0, 3.0, 300.0, 320.0, 340.0]):
                _batch(scorer, batch_id, latency_s=latency_s, pending=0)
                lags = scorer.check_lag(now=T0 + timedelta(seconds=10 * batch_id))
                assert scorer.check_lag(now=T0 + timedelta(seconds=10 * batch_id + 5)) == []  # same report: read once
                found += lags
            # Then no model can score: submissions wait on the retries topic, batch after batch.
            for batch_id in range(5, 25):
                _batch(scorer, batch_id, latency_s=None, pending=40 * (batch_id - 4))
                found += scorer.check_lag(now=T0 + timedelta(seconds=10 * batch_id))
            for lag in found:
                alert_stream_lag(lag)
            assert dispatcher.flush(10)
        finally:
            configure_alerts(Config(), environ={})

    assert [lag.measure for lag in found] == [SCORE_LATENCY] * 3 + [UNSCORED_WAIT] * 7
    waited = [lag for lag in found if lag.measure == UNSCORED_WAIT]
    # Waiting since batch 5 (t = 50 s); over 120 s from batch 18 (t = 180 s: 130 s) on.
    assert (waited[0].seconds, waited[0].pending_unscored) == (130.0, 560)
    assert [(body["kind"], body["key"]) for body in receiver.bodies] == [
        ("stream_lag", SCORE_LATENCY), ("stream_lag", UNSCORED_WAIT)]
    latency, wait = receiver.bodies
    assert latency["text"] == ("[learnscore local] stream: event → score takes 300 s (median of scoring "
                               "batch 2; > 120 s): the stream is behind its input")
    assert latency["fields"] == {"measure": SCORE_LATENCY, "seconds": 300.0, "limit_s": 120.0, "batch_id": 2}
    assert wait["fields"]["pending_unscored"] == 560
    assert dispatcher.counts.suppressed == 8  # the same two incidents, reported again


def test_the_wait_clock_survives_an_unknown_count_and_stops_when_rows_are_scored():
    watch = LagWatch(limit_s=60)
    assert watch.observe(T0, latency_s=None, pending=5) == []
    assert watch.waiting
    # The broker did not answer the count: the wait goes on being measured from T0.
    late = watch.observe(T0 + timedelta(seconds=90), latency_s=None, pending=None)
    assert [(lag.measure, lag.seconds, lag.pending_unscored) for lag in late] == [(UNSCORED_WAIT, 90.0, 5)]
    # A version caught them up: the next wait is a new one.
    assert watch.observe(T0 + timedelta(seconds=100), latency_s=None, pending=0) == []
    assert not watch.waiting
    assert watch.observe(T0 + timedelta(seconds=150), latency_s=None, pending=3) == []
    # A median exactly at the limit is not above it; a batch that scored nothing has no latency.
    assert watch.observe(T0 + timedelta(seconds=160), latency_s=60.0, pending=3) == []
    assert watch.observe(T0 + timedelta(seconds=170), latency_s=None, pending=3) == []
