"""The drift hook with the real parts: state file, Delta ops.drift_events, Kafka requests."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pandas as pd
import pytest

from learnscore.core.kafka_io import consumer, create_topics
from learnscore.core.lake import ensure_spark_tables
from learnscore.schemas import topics
from learnscore.schemas.events import RETRAIN_REQUESTED, validate_bytes
from learnscore.schemas.tables import DRIFT_EVENTS
from learnscore.streaming.drift.hook import DriftHook, make_drift_hook
from learnscore.streaming.drift.state import DriftStateError, DriftStateStore
from learnscore.streaming.model_cache import RETRY_FAILED_LOAD_S

pytestmark = pytest.mark.integration
NOW = datetime(2025, 3, 1, tzinfo=timezone.utc)


def _small(config):
    return config.model_copy(update={"drift": config.drift.model_copy(
        update={"min_segment_size": 300, "cooldown_seconds": 3600})})


def _batch(b: int, shifted_from: int = 6):
    rng = np.random.default_rng(b)
    n = 200
    start = NOW + timedelta(seconds=200 * b)
    predictions = pd.DataFrame({
        "event_id": [f"e{b}-{i}" for i in range(n)],
        "event_time": pd.date_range(start, periods=n, freq="s", tz="UTC"),
        "subject": "math", "grade_level": 6, "model_version": "1",
        "accuracy": np.clip(rng.normal(0.7 if b < shifted_from else 0.45, 0.15, n), 0, 1),
        "ability": rng.normal(0, 1, n), "mean_log_time": rng.normal(9, 0.3, n),
        "progress_score": rng.normal(60, 12, n)})
    return predictions


def _requests(config) -> list[dict]:
    reader = consumer(config, config.topic(topics.RETRAIN_REQUESTS), auto_offset_reset="earliest",
                      consumer_timeout_ms=3000, group_id=None)
    try:
        messages = list(reader)
    finally:
        reader.close()
    verdicts = [validate_bytes(RETRAIN_REQUESTED, m.value) for m in messages]
    assert all(v.ok for v in verdicts), [v.reason for v in verdicts]
    return [dict(v.event, _key=m.key.decode()) for v, m in zip(verdicts, messages)]


def test_findings_land_once_in_delta_and_kafka_and_a_replay_is_not_fed_twice(config, spark,
                                                                            tmp_path):
    config = _small(config)
    create_topics(config, [topics.RETRAIN_REQUESTS])
    checkpoint = str(tmp_path / "checkpoints" / "scorer")
    hook = make_drift_hook(config, checkpoint, spark=spark)
    rows = []
    for b in range(9):
        rows += hook(b, _batch(b), None, now=NOW + timedelta(seconds=b))
    assert [(r["batch_id"], r["signal"], r["segment"]) for r in rows] == [(6, "accuracy", "math/5-8")]
    request_id = rows[0]["request_id"]
    assert request_id and rows[0]["n_after"] >= 100 and rows[0]["statistic"] < -1

    n_seen = hook.monitor.detector("accuracy", "math/5-8").n_seen
    replayed = make_drift_hook(config, checkpoint, spark=spark)  # a restarted stream
    assert replayed.last_batch_id == 8
    assert replayed(8, _batch(8), None) == []  # the last batch again: no findings, not fed
    assert replayed(6, _batch(6), None) == []  # an older batch: skipped
    assert replayed.monitor.detector("accuracy", "math/5-8").n_seen == n_seen

    table = spark.read.format("delta").load(config.table_path(DRIFT_EVENTS.name))
    assert table.count() == 1
    assert table.first()["request_id"] == request_id
    requests = _requests(config)
    assert [(r["event_id"], r["_key"], r["trigger"], r["statistic"]) for r in requests] == [
        (request_id, "math/5-8", "drift", "covariate/accuracy")]
    assert requests[0]["evidence"]["n_after"] == rows[0]["n_after"]


def test_a_crash_after_the_state_is_saved_rewrites_the_outbox_on_replay(config, spark, tmp_path):
    config = _small(config)
    create_topics(config, [topics.RETRAIN_REQUESTS])
    checkpoint = str(tmp_path / "checkpoints" / "scorer")
    working = make_drift_hook(config, checkpoint, spark=spark)

    def broken_write(rows, app_id, batch_id):
        raise ConnectionError("Delta commit lost")

    crashing = DriftHook(working.settings, working.store.path, broken_write, working.send_requests)
    for b in range(6):
        assert crashing(b, _batch(b), None, now=NOW) == []
    with pytest.raises(ConnectionError):
        crashing(6, _batch(6), None, now=NOW)

    restarted = make_drift_hook(config, checkpoint, spark=spark)
    n_seen = restarted.monitor.detector("accuracy", "math/5-8").n_seen
    rows = restarted(6, _batch(6), None, now=NOW)  # the stream replays batch 6
    assert [(r["batch_id"], r["signal"]) for r in rows] == [(6, "accuracy")]
    assert restarted.monitor.detector("accuracy", "math/5-8").n_seen == n_seen == 1400
    restarted(6, _batch(6), None, now=NOW)  # and once more: Delta skips the second commit
    table = spark.read.format("delta").load(config.table_path(DRIFT_EVENTS.name))
    assert table.count() == 1


def test_a_failed_write_that_does_not_stop_the_stream_is_written_with_the_next_batch_once(
        config, spark, tmp_path):
    config = _small(config)
    create_topics(config, [topics.RETRAIN_REQUESTS])
    working = make_drift_hook(config, str(tmp_path / "checkpoints" / "scorer"), spark=spark)
    failures = iter([ConnectionError("Delta commit lost")])

    def flaky_write(rows, app_id, batch_id):
        failure = next(failures, None)
        if failure:
            raise failure
        working.write_events(rows, app_id, batch_id)

    hook = DriftHook(working.settings, working.store.path, flaky_write, working.send_requests)
    for b in range(6):
        hook(b, _batch(b), None, now=NOW)
    with pytest.raises(ConnectionError):  # the runtime logs it and the stream goes on
        hook(6, _batch(6), None, now=NOW)
    ensure_spark_tables(spark, config, [DRIFT_EVENTS.name])
    table = spark.read.format("delta").load(config.table_path(DRIFT_EVENTS.name))
    assert table.count() == 0 and _requests(config) == []
    assert hook(7, _batch(7), None, now=NOW) == []  # batch 7 finds nothing but writes batch 6's
    assert hook(8, _batch(8), None, now=NOW) == []  # and nothing is written twice
    assert make_drift_hook(config, str(tmp_path / "checkpoints" / "scorer"), spark=spark)(8, None, None) == []
    events = spark.read.format("delta").load(config.table_path(DRIFT_EVENTS.name)).collect()
    assert [(e["batch_id"], e["signal"]) for e in events] == [(6, "accuracy")]
    assert [r["event_id"] for r in _requests(config)] == [events[0]["request_id"]]


def _pairs(n: int, start: datetime, version: str) -> pd.DataFrame:
    return pd.DataFrame({
        "event_id": [f"{version}-{start:%H%M%S}-{i}" for i in range(n)],
        "event_time": pd.date_range(start, periods=n, freq="s", tz="UTC"),
        "subject": "math", "grade_level": 6, "model_version": version,
        "abs_error": 5.0, "level_correct": True})


def test_outcomes_of_the_models_own_training_rows_are_not_fed_to_the_concept_detectors(
        config, tmp_path):
    hook = make_drift_hook(_small(config), str(tmp_path / "checkpoints" / "scorer"))
    cutoff = NOW + timedelta(seconds=99)
    asked = []

    def training_cutoff(version):
        asked.append(version)
        if version == "3":
            raise ConnectionError("registry down")
        return {"1": cutoff}.get(version)

    hook.training_cutoff = training_cutoff
    pairs = pd.concat([_pairs(250, NOW, "1"),  # 100 trained on (≤ cutoff), 150 after it
                       _pairs(40, NOW, "2"),  # a version without a recorded cutoff: all fed
                       _pairs(30, NOW, "3")])  # the registry does not answer: fed, and told
    hook(0, None, pairs, now=NOW)
    fed = hook.monitor.detector("abs_error", "math/5-8").n_seen
    assert fed == 150 + 40 + 30
    hook(1, None, _pairs(10, NOW + timedelta(seconds=50), "1"), now=NOW)  # all in-sample
    assert hook.monitor.detector("abs_error", "math/5-8").n_seen == fed
    hook(2, None, _pairs(5, NOW + timedelta(seconds=500), "3"), now=NOW)
    assert hook.monitor.detector("abs_error", "math/5-8").n_seen == fed + 5
    # A known cutoff is asked once; a failed lookup is not repeated by every batch (each would
    # wait for MLflow's timeout), only after RETRY_FAILED_LOAD_S.
    assert asked == ["1", "2", "3"]
    hook._clock = lambda: time.monotonic() + RETRY_FAILED_LOAD_S + 1
    hook(3, None, _pairs(5, NOW + timedelta(seconds=600), "3"), now=NOW)
    assert asked == ["1", "2", "3", "3"]


def test_a_damaged_state_file_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "drift" / "state.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(DriftStateError, match="not valid JSON.*delete it"):
        DriftStateStore(path).load()
    path.write_bytes(orjson.dumps({"format": "something-else"}))
    with pytest.raises(DriftStateError, match="format 'something-else'"):
        DriftStateStore(path).load()
    with pytest.raises(DriftStateError, match="local \\(POSIX\\) filesystem"):
        DriftStateStore("s3a://bucket/checkpoints/drift/state.json")
