"""The Kafka broker (a real process of the test's own) stops for 30 s in the middle of a stream
and starts again: the scorer (``run_scorer``, the loop of `learnscore stream start`) and the
endpoint's request log recover by themselves, and every table holds each event, every request
log record, exactly once."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from learnscore.core import kafka_io
from learnscore.core.config import Secrets
from learnscore.core.jars import resolve_jars
from learnscore.schemas import topics
from learnscore.stack.kafka_broker import KafkaBroker
from learnscore.streaming.runtime import ScorerTopics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 30


def test_a_30s_broker_outage_loses_and_doubles_nothing(spark, fault_config, kit, mlflow_store,
                                                      fitted_model, small_history_events, tmp_path):
    from learnscore.model.features import model_input_from_events

    config = kit.with_own_broker(fault_config, tmp_path / "own-broker")
    submissions, outcomes = small_history_events
    # Unseen by the model; three waves: before, during and after the outage.
    waves = [submissions[2000:2080], submissions[2080:2160], submissions[2160:2240]]
    # The outcomes of the first wave arrive with the last one.
    late_outcomes = outcomes[2000:2040]
    kit.register_production(config, fitted_model, model_input_from_events(submissions[:20]))
    resolve_jars(config)
    broker = KafkaBroker(config)
    broker.up()
    scorer = kit.ScorerThread(config)
    api_key = Secrets(config).api_key.get_secret_value()
    request_ids: list[str] = []
    try:
        kafka_io.create_topics(config, [*ScorerTopics.BASE_NAMES])
        # A producer that outlives the outage: sends buffer while the broker is away.
        producer = kafka_io.producer(config, max_block_ms=120_000, delivery_timeout_ms=180_000)
        scorer.start()
        with kit.running_endpoint(config) as base:
            def call_endpoint(count: int, first: int) -> None:
                for index in range(first, first + count):
                    answer = httpx.post(f"{base}/v1/score", json=submissions[2500 + index],
                                        headers={"X-API-Key": api_key}, timeout=30)
                    assert answer.status_code == 200, answer.text
                    request_ids.append(answer.json()["request_id"])

            kit.wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 60, "the endpoint's model")
            send(producer, config, topics.SUBMISSIONS, kit.messages(waves[0]))
            call_endpoint(10, 0)
            kit.wait_for(lambda: scorer.check() and kit.table_count(config, "gold.predictions")
                         >= len(waves[0]), 600, "the first wave scored")

            broker.down()
            outage_started = time.monotonic()
            # During the outage: the endpoint serves (its log queues) and producers buffer.
            during = threading.Thread(target=send, daemon=True,
                                      args=(producer, config, topics.SUBMISSIONS, kit.messages(waves[1])))
            during.start()
            call_endpoint(10, 10)
            waiting = metric(httpx.get(f"{base}/metrics", headers={"X-API-Key": api_key}).text, "learnscore_serving_request_log_queued")
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
            assert scorer.alive(), f"the scorer died while the broker was away: {scorer.error}"
            broker.up()

            during.join(timeout=180)
            assert not during.is_alive(), "the buffered submissions were never delivered"
            send(producer, config, topics.SUBMISSIONS, kit.messages(waves[2]))
            send(producer, config, topics.OUTCOMES, kit.messages(late_outcomes))
            call_endpoint(10, 20)
            everything = sum(len(wave) for wave in waves)
            kit.wait_for(lambda: (scorer.check()
                                  and kit.table_count(config, "gold.predictions") >= everything
                                  and kit.table_count(config, "gold.prediction_outcomes")
                                  >= len(late_outcomes)
                                  and kit.table_count(config, "ops.endpoint_requests")
                                  >= len(request_ids)),
                         600, "every submission, outcome and request log record after the outage")
        producer.close(timeout=10)
        assert scorer.alive(), f"the scorer died: {scorer.error}"
    finally:
        scorer.stop()
        broker.down()
    assert scorer.error is None and scorer.summary.stopped_because == "signal"
    assert waiting >= 10  # the records of the requests served during the outage waited in memory

    sent = [event for wave in waves for event in wave]
    assert kit.id_counts(spark, config, "silver.submissions") == {e["event_id"]: 1 for e in sent}
    assert kit.id_counts(spark, config, "gold.predictions") == {e["event_id"]: 1 for e in sent}
    assert kit.id_counts(spark, config, "silver.outcomes") == {o["event_id"]: 1 for o in late_outcomes}
    assert kit.id_counts(spark, config, "gold.prediction_outcomes") == {
        o["submission_event_id"]: 1 for o in late_outcomes}
    assert kit.id_counts(spark, config, "ops.endpoint_requests", "request_id") == {
        request_id: 1 for request_id in request_ids}
    assert kit.table_count(config, "silver.quarantine") == 0


def send(producer, config, base_topic: str, pairs: list[tuple[bytes, bytes]]) -> None:
    for key, value in pairs:
        producer.send(config.topic(base_topic), key=key, value=value)
    producer.flush(timeout=180)



def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
