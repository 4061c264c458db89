"""Shadow scoring: a challenger scores the same live submissions as production, and nobody sees it."""

from __future__ import annotations

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from learnscore.core import kafka_io
from learnscore.schemas import topics

pytestmark = pytest.mark.integration


def _issued(config, base_topic: str) -> list[dict]:
    consumer = kafka_io.consumer(config, config.topic(base_topic), auto_offset_reset="earliest",
                                 consumer_timeout_ms=4000)
    try:
        return [orjson.loads(message.value) for message in consumer]
    finally:
        consumer.close()


def _scrape(port: int) -> dict[tuple, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_challenger_is_scored_on_the_same_submissions_and_never_served(kit, models):
    from learnscore.streaming.job import start_scorer
    from learnscore.streaming.metrics import serve_metrics

    live = models.register()
    challenger = models.register(alias="staging")
    first = [kit.events.submission(i) for i in range(30)]
    kit.produce(topics.SUBMISSIONS, kit.as_messages(first))
    kit.produce(topics.OUTCOMES, kit.as_messages([kit.events.outcome(s, i) for i, s in enumerate(first[:12])]))
    scorer = start_scorer(kit.spark, kit.config, drift=False)
    metrics = serve_metrics(scorer, "127.0.0.1", 0)
    index = 100
    scored = ("learnscore_stream_rows_total", (("kind", "scored"), ("query", "score")))
    try:
        kit.wait_for(lambda: (kit.table("gold.shadow_predictions").count() >= 30
                              and kit.table("gold.shadow_prediction_outcomes").count() >= 12
                              and kit.table("gold.prediction_outcomes").count() >= 12),
                     300, "production and challenger scored and paired", scorer=scorer)
        before = _scrape(metrics.server_port)
        assert before[scored] >= 30
        assert before[("learnscore_stream_model_info", (("alias", "staging"), ("status", "ok"),
                                                        ("version", challenger)))] == 1
        # Once the challenger is production, staging points to the same version: no shadow.
        models.promote(challenger)

        def swapped() -> bool:
            nonlocal index
            kit.produce(topics.SUBMISSIONS, kit.as_messages([kit.events.submission(index)]))
            index += 1
            return bool(kit.table("gold.predictions").where(f"model_version = '{challenger}'").count())

        kit.wait_for(swapped, 300, "a submission scored by the promoted version", interval_s=2, scorer=scorer)
        last = [kit.events.submission(1000 + i) for i in range(10)]
        kit.produce(topics.SUBMISSIONS, kit.as_messages(last))
        total = len(first) + (index - 100) + len(last)
        kit.wait_for(lambda: kit.table("gold.predictions").count() >= total, 300, "the last submissions",
                     scorer=scorer)
        kit.wait_for(lambda: scorer.runtimes["shadow"].idle_for() > 3, 120, "the shadow query idle")
        after = _scrape(metrics.server_port)
        assert after[scored] >= before[scored] + len(last), "the stream's /metrics move while events flow"
        assert after[("learnscore_stream_up", (("query", "shadow"),))] == 1
    finally:
        metrics.shutdown()
        scorer.stop()

    ids = {s["event_id"] for s in first}
    gold = kit.table("gold.predictions").collect()
    assert sorted(r.event_id for r in gold if r.event_id in ids) == sorted(ids)
    assert {r.model_version for r in gold if r.event_id in ids} == {live}
    shadow = kit.table("gold.shadow_predictions").collect()
    shadowed = [r.event_id for r in shadow]
    assert len(shadowed) == len(set(shadowed)) and ids <= set(shadowed), "each submission once"
    assert not set(shadowed) & {s["event_id"] for s in last}, "no shadow while staging is production"
    assert {(r.model_alias, r.model_version) for r in shadow} == {("staging", challenger)}
    assert all(r.learner_key and not r.learner_key.startswith("learner") for r in shadow)
    pairs = kit.table("gold.prediction_outcomes").collect()
    shadow_pairs = kit.table("gold.shadow_prediction_outcomes").collect()
    assert {r.event_id for r in shadow_pairs} == {r.event_id for r in pairs}, "the same learners on both sides"
    assert {(r.model_alias, r.model_version) for r in shadow_pairs} == {("staging", challenger)}
    assert {r.model_version for r in pairs} == {live}
    # The application's topic carries production's scores only, one per submission.
    served = _issued(kit.config, topics.SCORES)
    assert {s["model_alias"] for s in served} == {"production"}
    assert len(served) == len({s["submission_event_id"] for s in served}) == total
