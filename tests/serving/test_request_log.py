"""The request log reaches Kafka, waits for a broker that is away, and never blocks requests."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from learnscore.core.config import Secrets
from learnscore.core.kafka_io import consumer
from learnscore.core.ports import free_port
from learnscore.schemas.topics import ENDPOINT_REQUESTS
from learnscore.serving.request_log import RECORD_FIELDS

pytestmark = pytest.mark.integration


def _read_records(config, expected: int, timeout_s: float = 30) -> list[dict]:
    reader = consumer(config, config.topic(ENDPOINT_REQUESTS), auto_offset_reset="earliest",
                      consumer_timeout_ms=1000, group_id=None)
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for message in reader:
                records.append(orjson.loads(message.value))
    finally:
        reader.close()
    return records


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_every_request_is_logged_to_kafka_with_the_table_fields(serving_config, mlflow_store, api_key, helpers):
    version = helpers.register_version(serving_config)
    helpers.set_alias(serving_config, "production", version)
    with helpers.running_endpoint(serving_config) as base:
        helpers.wait_for(lambda: helpers.ready_version(base), what="a loaded model")
        ok = httpx.post(f"{base}/v1/score", json=[helpers.submission(1), helpers.submission(2)],
                        headers={"X-API-Key": api_key})
        unauthorised = httpx.post(f"{base}/v1/score", json=helpers.submission(1))
        invalid = httpx.post(f"{base}/v1/score", json={"subject": "art"}, headers={"X-API-Key": api_key})
        helpers.wait_for(lambda: _metric(httpx.get(f"{base}/metrics", headers={"X-API-Key": api_key}).text,
                                         "learnscore_serving_request_log_sent_total") == 3,
                         what="three records confirmed by the broker")

    records = {record["request_id"]: record for record in _read_records(serving_config, 3)}
    assert len(records) == 3
    for record in records.values():
        assert tuple(record) == RECORD_FIELDS
        assert record["received_at"].endswith("Z") and record["latency_ms"] > 0
    scored = records[ok.json()["request_id"]]
    assert (scored["status_code"], scored["items"], scored["model_version"], scored["route"],
            scored["error_code"]) == (200, 2, version, "production", None)
    refused = records[unauthorised.json()["request_id"]]
    assert (refused["status_code"], refused["error_code"], refused["model_version"]) == (401, "unauthorised", None)
    bad = records[invalid.json()["request_id"]]
    assert (bad["status_code"], bad["error_code"]) == (422, "invalid_event")
    assert "missing_field" in bad["error"]


@pytest.mark.slow
def test_records_wait_for_an_absent_broker_and_a_full_queue_drops_and_counts(
        serving_config, mlflow_store, api_key, helpers, tmp_path):
    """A broker that starts only after the requests: the queued records arrive, the overflow is counted."""
    from learnscore.stack.kafka_broker import KafkaBroker

    port = free_port()
    config = serving_config.model_copy(update={
        "state_dir": tmp_path / "own-broker",
        "broker": serving_config.broker.model_copy(update={"port": port, "controller_port": free_port()}),
        "kafka": serving_config.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"}),
        "serving": serving_config.serving.model_copy(update={"request_log_capacity": 5}),
    })
    helpers.set_alias(config, "production", helpers.register_version(config))
    api_key = Secrets(config).api_key.get_secret_value()  # its own state dir, its own key
    broker = KafkaBroker(config)
    try:
        with helpers.running_endpoint(config) as base:
            helpers.wait_for(lambda: helpers.ready_version(base, api_key), what="a loaded model")
            answers = [httpx.post(f"{base}/v1/score", json=helpers.submission(seed),
                                  headers={"X-API-Key": api_key}, timeout=10) for seed in range(8)]
            assert [answer.status_code for answer in answers] == [200] * 8  # served with Kafka away
            before = httpx.get(f"{base}/metrics", headers={"X-API-Key": api_key}).text
            broker.up()
            helpers.wait_for(lambda: _metric(httpx.get(f"{base}/metrics", headers={"X-API-Key": api_key}).text,
                                             "learnscore_serving_request_log_sent_total") == 5,
                             timeout_s=90, what="the queued records delivered")
            after = httpx.get(f"{base}/metrics", headers={"X-API-Key": api_key}).text
        records = _read_records(config, 5)
    finally:
        broker.down()

    assert _metric(before, "learnscore_serving_request_log_queued") == 5
    assert _metric(before, "learnscore_serving_request_log_dropped_total") == 3
    assert _metric(before, "learnscore_serving_request_log_broker_connected") == 0
    assert _metric(after, "learnscore_serving_request_log_queued") == 0
    assert _metric(after, "learnscore_serving_request_log_broker_connected") == 1
    # The first five were queued, the last three dropped (order holds per partition only).
    assert sorted(record["request_id"] for record in records) == sorted(
        answer.json()["request_id"] for answer in answers[:5])
