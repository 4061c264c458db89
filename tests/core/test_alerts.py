"""Alerts against a real local HTTP receiver: once per incident, and a dead webhook never
disturbs the caller."""

from __future__ import annotations

import time

import pytest

from learnscore.core.alerts import AlertDispatcher, configure_alerts, current_dispatcher
from learnscore.core.config import AlertKindConfig, AlertsConfig, Config, ConfigError, load_config
from learnscore.core.ports import free_port
from tests.support import WebhookReceiver as Receiver


def settings(**changes) -> AlertsConfig:
    return AlertsConfig(**{"retry_backoff_seconds": 0.01, "timeout_s": 2, **changes})


def test_an_incident_reaches_the_webhook_exactly_once():
    with Receiver() as receiver:
        alerts = AlertDispatcher(settings(), webhook_url=receiver.url, env="test")
        for _ in range(5):  # the same rollback, reported by five checks
            alerts.alert("model_rolled_back", "version 7 rolled back to 6", key="7",
                         version="7", live_mae=34.91234, n=500)
        alerts.alert("model_rolled_back", "version 9 rolled back to 8", key="9", version="9")
        alerts.alert("stream_lag", "scoring lags 300 s", key="score", lag_s=300.0)
        assert alerts.flush(10)
        alerts.close()
    assert [(b["kind"], b["key"]) for b in receiver.bodies] == [
        ("model_rolled_back", "7"), ("model_rolled_back", "9"), ("stream_lag", "score")]
    first = receiver.bodies[0]
    assert first["text"] == "[learnscore test] version 7 rolled back to 6"
    assert first["fields"] == {"version": "7", "live_mae": 34.9123, "n": 500}
    assert first["attachments"][0]["fields"][1] == {"title": "live_mae", "value": "34.9123", "short": True}
    assert (alerts.counts.accepted, alerts.counts.suppressed, alerts.counts.delivered) == (3, 4, 3)


def test_a_dead_webhook_does_not_disturb_the_caller(caplog):
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    alerts = AlertDispatcher(settings(retry_attempts=3, timeout_s=0.5), webhook_url=dead)
    began = time.monotonic()
    for n in range(20):
        assert alerts.alert("retrain_failed", f"run {n} failed", key=str(n)) is True
    took = time.monotonic() - began
    assert took < 0.5, f"the caller waited {took:.2f} s for a dead webhook"
    assert alerts.flush(30)
    assert (alerts.counts.delivered, alerts.counts.failed) == (0, 20)
    assert "not delivered to the webhook after 3 attempts" in caplog.text


def test_a_failing_receiver_is_retried_then_given_up():
    with Receiver(status=500) as receiver:
        alerts = AlertDispatcher(settings(retry_attempts=3), webhook_url=receiver.url)
        alerts.alert("model_promoted", "version 3 is production", key="3")
        assert alerts.flush(10)
    assert len(receiver.bodies) == 3 and alerts.counts.failed == 1


def test_rate_limit_per_kind_and_overrides():
    now = [0.0]
    alerts = AlertDispatcher(settings(max_per_hour=2, kinds={"drift_detected": AlertKindConfig(max_per_hour=4),
                                                             "stream_lag": AlertKindConfig(enabled=False)}),
                             clock=lambda: now[0])
    sent = [alerts.alert("retrain_requested", f"run {n}", key=str(n)) for n in range(4)]
    drift = [alerts.alert("drift_detected", f"segment {n}", key=str(n)) for n in range(6)]
    assert sent == [True, True, False, False] and drift == [True] * 4 + [False] * 2
    assert alerts.alert("stream_lag", "lag") is False
    now[0] = 3600.0
    assert alerts.alert("retrain_requested", "run 9", key="9") is True


def test_unknown_kinds_are_refused_in_code_and_in_config():
    with pytest.raises(ValueError, match="unknown alert kind 'dirft'"):
        AlertDispatcher(settings()).alert("dirft", "typo")
    with pytest.raises(ValueError, match="alerts.kinds has unknown kinds"):
        AlertsConfig(kinds={"dirft": AlertKindConfig()})


def test_a_webhook_url_with_a_token_comes_from_the_environment(tmp_path):
    environ = {"LEARNSCORE__ALERTS__WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/secret"}
    with pytest.raises(ConfigError, match="LEARNSCORE_ALERT_WEBHOOK_URL"):
        load_config(environ=environ, base_dir=tmp_path)
    with Receiver() as receiver:
        config = Config(env="test")
        dispatcher = configure_alerts(config, environ={"LEARNSCORE_ALERT_WEBHOOK_URL": receiver.url})
        try:
            assert current_dispatcher() is dispatcher and dispatcher.webhook_url == receiver.url
            from learnscore.core.alerts import alert

            assert alert("performance_below_floor", "estimated macro-F1 0.31 < 0.40", key="5/all")
            assert dispatcher.flush(10)
        finally:
            configure_alerts(Config(), environ={})
    assert [b["kind"] for b in receiver.bodies] == ["performance_below_floor"]
