"""The retrain worker with the real broker, Delta ledger and MLflow registry.

The training job itself is exercised end to end in tests/test_drift_loop.py; here a tiny
trainer (a real MLflow run and registered version, just a small model) keeps each run fast so
that the worker's own promises are tested: one run per burst, redeliveries train nothing, the
manual policy leaves production alone, a worker killed at random points of a burst that grows
meanwhile makes exactly one version, two workers on one burst make one version, failed runs are
retried with a back-off and then failed for good, refused gates and registry errors are recorded.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from learnscore.batch.retrain_runs import request_statuses, runs
from learnscore.batch.retrain_worker import RetrainWorker, run_id_for
from learnscore.core.kafka_io import create_topics, producer
from learnscore.registry.access import GateRefused
from learnscore.schemas import topics
from tests.support import process_env

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


# -- a tiny trainer and promoter (also loaded by the worker subprocess: module test_retrain_worker)
class _Refusal:
    """What a gate report looks like to GateRefused: the version and its failed gates."""

    def __init__(self, version: str, message: str):
        self.version = version
        self.failures = [type("Failure", (), {"name": "vs_production_mae", "message": message})()]

    def summary(self) -> str:
        return self.failures[0].message


def tiny_train(spark, config, *, since, until, trigger, request_id, before_register=None):
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient
    from sklearn.linear_model import LinearRegression

    from learnscore.core.tracking import use_mlflow

    if os.environ.get("RETRAIN_TEST_SLOW") == "train":
        _announce_and_wait()
    pause = float(os.environ.get("RETRAIN_TEST_TRAIN_SECONDS", "0")) / 2
    use_mlflow(config)
    model = LinearRegression().fit(np.arange(6.0).reshape(-1, 1), np.arange(6.0))
    time.sleep(pause)  # "training"
    with mlflow.start_run() as run:
        mlflow.log_params({"since": since.isoformat(), "until": until.isoformat(),
                           "trigger": trigger})
        info = mlflow.sklearn.log_model(model, name="model",
                                        # explicit: inferring them runs a slow subprocess
                                        pip_requirements=["scikit-learn==1.9.1"])
    if before_register is not None:  # as learnscore.batch.train.train_model: the lease fence
        before_register()
    # The trainer's contract: the version carries the request id from the moment it exists.
    version = str(mlflow.register_model(info.model_uri, config.mlflow.model_name,
                                        tags={"request_id": request_id}).version)
    MlflowClient().set_registered_model_alias(config.mlflow.model_name, "staging", version)
    time.sleep(pause)  # registered, not yet returned: a kill here leaves an untagged version
    return {"version": version, "run_id": run.info.run_id}


def tiny_promote(config, version, actor, reason):
    from mlflow.tracking import MlflowClient

    if os.environ.get("RETRAIN_TEST_SLOW") == "promote":
        _announce_and_wait()
    time.sleep(float(os.environ.get("RETRAIN_TEST_PROMOTE_SECONDS", "0")))
    if os.environ.get("RETRAIN_TEST_REFUSE"):
        raise GateRefused(_Refusal(version, f"version {version}: MAE 9.1 is worse than production's 7.0 "
                                            f"by 30% (tolerance 5%)"))
    MlflowClient(config.mlflow.tracking_uri, config.registry_uri).set_registered_model_alias(
        config.mlflow.model_name, "production", version)
    return {"promoted": True, "report": "all gates passed"}


def _announce_and_wait():
    Path(os.environ["RETRAIN_TEST_MARKER"]).write_text("busy")
    time.sleep(300)


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture
def worker_config(config, mlflow_store):
    config = config.model_copy(update={"retrain": config.retrain.model_copy(update={
        "debounce_seconds": 1.0, "max_wait_seconds": 20.0, "retry_backoff_seconds": 0.0,
        "failed_attempts": 2, "failed_backoff_seconds": 0.0, "lease_ttl_seconds": 20.0,
        # The tiny trainer needs no data: no waiting for post-onset outcomes (tested on its own).
        "concept_max_wait_seconds": 0.0, "consumer_group": f"retrain-{uuid.uuid4().hex[:6]}"})})
    create_topics(config, [topics.RETRAIN_REQUESTS])
    return config


def _request(segment: str, statistic: str = "concept/abs_error", event_id: str | None = None,
             began_s_ago: float = 0.0):
    """A drift request made now, about a change that began ``began_s_ago`` seconds ago."""
    now = datetime.now(timezone.utc)
    stamp = now.isoformat().replace("+00:00", "Z")
    return {"event_id": event_id or str(uuid.uuid4()), "schema_version": 1, "event_time": stamp,
            "trigger": "drift", "detector": "ADWIN", "segment": segment, "statistic": statistic,
            "evidence": {"effect_sigma": 1.3, "n_after": 250.0},
            "evidence_window_start": (now - timedelta(seconds=began_s_ago)).isoformat().replace("+00:00", "Z"),
            "evidence_window_end": stamp, "detected_at": stamp}


def _send(config, *events, raw: list[bytes] = (), partition: int | None = None):
    writer = producer(config)
    try:
        for event in events:
            writer.send(config.topic(topics.RETRAIN_REQUESTS), key=event["segment"].encode(),
                        value=orjson.dumps(event), partition=partition)
        for value in raw:
            writer.send(config.topic(topics.RETRAIN_REQUESTS), key=b"x", value=value)
        writer.flush()
    finally:
        writer.close()


def _versions(config):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(config.mlflow.tracking_uri, config.registry_uri)
    return sorted(int(v.version) for v in client.search_model_versions(
        f"name = '{config.mlflow.model_name}'"))


def _alias(config, alias):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(config.mlflow.tracking_uri, config.registry_uri).get_model_version_by_alias(
            config.mlflow.model_name, alias).version.__str__()
    except MlflowException:
        return None


def _worker(config, **options):
    return RetrainWorker(config, trainer=tiny_train, promoter=tiny_promote,
                         spark_factory=lambda: None, **options)


def _ledger(config):
    frame = runs(config)
    return [(row.run_id, row.status) for row in frame.itertuples()]


# -- tests -----------------------------------------------------------------------------------------
def test_a_burst_is_one_run_and_a_redelivery_trains_nothing(worker_config):
    config = worker_config
    burst = [_request(f"math/{band}") for band in ("1-4", "5-8", "9-12")] + [
        _request("reading/5-8", "covariate/accuracy")]
    _send(config, *burst[:2])
    _send(config, *burst[2:], burst[0])  # the first one twice: a duplicate in the burst
    worker = _worker(config)
    made = worker.serve(max_runs=1, idle_exit_seconds=60)
    assert len(made) == 1
    assert 'learnscore_retrain_runs_total{status="succeeded"} 1.0' in worker.metrics.render().decode()
    run = made[0]
    first = burst[0]["event_id"]  # the earliest request names the run, then the others in order
    ids = [first, *sorted(r["event_id"] for r in burst[1:])]
    assert (run.status, run.trigger, run.request_ids, run.promoted) == (
        "succeeded", "drift", tuple(ids), True)
    assert _ledger(config) == [(run_id_for(first), "started"), (run_id_for(first), "succeeded")]
    assert _versions(config) == [1] and _alias(config, "production") == "1"
    assert run.window_start == min(
        datetime.fromisoformat(r["evidence_window_start"].replace("Z", "+00:00")) for r in burst[:3])

    from mlflow.tracking import MlflowClient
    tags = MlflowClient(config.mlflow.tracking_uri).get_model_version(
        config.mlflow.model_name, "1").tags
    assert tags["retrain_run_id"] == run.run_id and tags["retrain_request_ids"] == ",".join(ids)
    assert tags["request_id"] == first

    # Redelivery: the same request again, and a new group that reads the topic from the start.
    _send(config, burst[1])
    again = config.model_copy(update={"retrain": config.retrain.model_copy(
        update={"consumer_group": config.retrain.consumer_group + "-replay"})})
    assert _worker(config).serve(idle_exit_seconds=6) == []
    assert _worker(again).serve(idle_exit_seconds=6) == []
    assert _versions(config) == [1] and len(_ledger(config)) == 2


def test_a_drift_that_began_before_a_promoted_version_s_data_ended_is_covered_by_it(worker_config):
    """Segments detect one shift at different moments (a minute apart on a busy machine): a
    request that comes after the run whose version learned from the changed data is answered
    by that version, not trained again; a change that began after its data ended is trained."""
    config = worker_config
    worker = _worker(config)
    first = worker.handle_burst([_request("science/1-12", began_s_ago=120)])
    assert (first.status, first.promoted, first.model_version) == ("succeeded", True, "1")
    late = _request("math/1-12", began_s_ago=118)  # the same shift, seen later in another segment
    covered = worker.handle_burst([late])
    assert (covered.status, covered.run_id, covered.model_version) == ("covered", first.run_id, "1")
    assert request_statuses(config)[late["event_id"]] == "covered"
    time.sleep(1.5)
    fresh = worker.handle_burst([_request("reading/1-12", began_s_ago=0.5)])  # began after v1's data
    assert (fresh.status, fresh.model_version) == ("succeeded", "2")
    assert _versions(config) == [1, 2]


def test_a_concept_drift_run_waits_for_post_onset_outcomes_then_trains(worker_config):
    """Pre-onset rows teach the relation that changed: the run records nothing and trains nothing
    while the lake has too few outcomes after the onset, until retrain.concept_max_wait_seconds
    after the detection have passed; then it trains on what there is."""
    config = worker_config.model_copy(update={"retrain": worker_config.retrain.model_copy(
        update={"concept_max_wait_seconds": 600.0})})
    request = _request("math/5-8", began_s_ago=60)
    waiting = _worker(config).handle_burst([request])
    assert waiting.status == "waiting" and 0 < waiting.retry_in_s <= 15
    assert _ledger(config) == [] and _versions(config) == []
    detected_long_ago = (datetime.now(timezone.utc) - timedelta(seconds=601)).isoformat()
    ran = _worker(config).handle_burst([{**request, "detected_at": detected_long_ago}])
    assert (ran.status, ran.model_version) == ("succeeded", "1")


def test_manual_policy_registers_staging_and_leaves_production_alone(worker_config):
    config = worker_config
    _worker(config).handle_burst([_request("math/1-4")])
    assert _alias(config, "production") == "1"
    run = _worker(config, policy="manual").handle_burst([_request("math/5-8")])
    assert (run.status, run.promoted, run.model_version) == ("succeeded", False, "2")
    assert "learnscore promote --version 2" in run.message
    assert _alias(config, "staging") == "2" and _alias(config, "production") == "1"


def test_refused_gates_and_lasting_registry_errors_are_recorded_not_raised(worker_config,
                                                                        monkeypatch):
    from mlflow.exceptions import MlflowException

    config = worker_config
    monkeypatch.setenv("RETRAIN_TEST_REFUSE", "1")
    refused = _worker(config).handle_burst([_request("math/1-4")])
    assert (refused.status, refused.promoted) == ("refused", False)
    assert "worse than production" in refused.gate_report
    assert _alias(config, "production") is None
    monkeypatch.delenv("RETRAIN_TEST_REFUSE")

    calls = []

    def flaky_train(spark, config, **window):
        calls.append(window["trigger"])
        if len(calls) < 3:
            raise MlflowException("database is locked")
        return tiny_train(spark, config, **window)

    pauses = []
    worker = RetrainWorker(config, trainer=flaky_train, promoter=tiny_promote,
                           spark_factory=lambda: None, sleep=pauses.append)
    ok = worker.handle_burst([_request("math/5-8")])
    assert (ok.status, ok.model_version, len(calls)) == ("succeeded", "2", 3)

    def down(spark, config, **window):
        raise MlflowException("tracking server unreachable")

    away = _request("math/9-12")
    deferred = RetrainWorker(config, trainer=down, promoter=tiny_promote, spark_factory=lambda: None,
                             sleep=pauses.append).handle_burst([away])
    assert deferred.status == "deferred"  # not final: the request is run again
    assert ("MLflow unreachable while training: training failed 4 times; last error: "
            "MlflowException: tracking server unreachable") in deferred.message
    assert request_statuses(config)[away["event_id"]] == "deferred"
    again = worker.handle_burst([away])  # MLflow answers again
    assert (again.status, again.run_id) == ("succeeded", deferred.run_id)
    assert [s for _, s in _ledger(config)] == ["started", "refused", "started", "succeeded",
                                               "started", "deferred", "started", "succeeded"]

    def broken(spark, config, **window):
        raise ValueError("no usable rows")  # not an MLflow error: retrying at once would not mend it

    alerts = []
    broken_worker = RetrainWorker(config, trainer=broken, promoter=tiny_promote, spark_factory=lambda: None,
                                  sleep=pauses.append, on_final_failure=alerts.append)
    doomed = _request("reading/1-4")
    first = broken_worker.handle_burst([doomed])  # attempt 1 of 2: tried again after the back-off
    assert (first.status, first.retry_in_s) == ("attempt_failed", 0.0) and not alerts
    assert "attempt 1 of 2: training failed: no usable rows" in first.message
    assert request_statuses(config)[doomed["event_id"]] == "attempt_failed"
    failed = broken_worker.handle_burst([doomed])
    assert (failed.status, failed.run_id) == ("failed", first.run_id)
    assert "training failed: no usable rows; failed 2 of 2 attempts" in failed.message
    assert alerts == [failed]  # the hook for alerts, once
    assert request_statuses(config)[doomed["event_id"]] == "failed"
    assert broken_worker.handle_burst([doomed]) is None  # failed for good: a redelivery trains nothing


def test_a_worker_that_lost_its_lease_writes_nothing_more_and_the_holder_resumes(worker_config):
    """A worker stalled past its ttl while training (simulated: another worker takes the lease
    over meanwhile) registers, tags, promotes and records nothing; the holder resumes the run."""
    from dataclasses import replace

    from learnscore.batch.retrain_lease import LeaseLost, RetrainLease

    config = worker_config
    burst = [_request("math/1-4"), _request("math/5-8")]
    thief = RetrainLease(config)

    def stalled_train(spark, config, **window):
        table, row = thief._read()  # the ttl ran out while this worker was "paused"
        assert thief._swap(table, replace(row, holder=thief.holder, token=row.token + 1))
        return tiny_train(spark, config, **window)

    stalled = RetrainWorker(config, trainer=stalled_train, promoter=tiny_promote, spark_factory=lambda: None)
    with pytest.raises(LeaseLost, match="not registering the version of run"):
        stalled.handle_burst(burst)
    assert stalled.lease.lost and stalled.lease.token == 1
    run_id = run_id_for(burst[0]["event_id"])
    assert _ledger(config) == [(run_id, "started")]  # no final row from the fenced worker
    assert _versions(config) == [] and _alias(config, "production") is None
    _, row = thief._read()
    assert (row.holder, row.token, row.released) == (thief.holder, 2, False)  # its lease untouched

    thief.release()
    resumed = _worker(config).handle_burst(burst)
    assert (resumed.run_id, resumed.status, resumed.model_version) == (run_id, "succeeded", "1")
    assert _versions(config) == [1] and _alias(config, "production") == "1"
    assert _ledger(config) == [(run_id, "started"), (run_id, "started"), (run_id, "succeeded")]
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(config.mlflow.tracking_uri).get_model_version(config.mlflow.model_name, "1").tags
    assert tags["retrain_lease_token"] == "3"  # the resuming worker's claim


def test_an_invalid_request_is_recorded_and_skipped(worker_config):
    config = worker_config
    _send(config, raw=[b'{"trigger": "drift"}'])
    assert _worker(config).serve(idle_exit_seconds=6) == []
    frame = runs(config)
    assert frame["status"].tolist() == ["invalid"]
    assert "missing" in frame["message"][0] or "required" in frame["message"][0]


def test_the_schedule_asks_once_for_its_period(worker_config):
    config = worker_config
    made = _worker(config, every=timedelta(hours=24)).serve(max_runs=1, idle_exit_seconds=60)
    assert [(r.trigger, r.status) for r in made] == [("schedule", "succeeded")]
    # A new version exists now: the schedule is not due again for 24 hours.
    assert _worker(config, every=timedelta(hours=24)).serve(idle_exit_seconds=6) == []


def _env(config, marker: Path, slow: str) -> dict[str, str]:
    return process_env(config, [HERE], LEARNSCORE__RETRAIN__CONSUMER_GROUP=config.retrain.consumer_group,
                       LEARNSCORE__RETRAIN__DEBOUNCE_SECONDS="1",
                       LEARNSCORE__RETRAIN__LEASE_TTL_SECONDS=str(config.retrain.lease_ttl_seconds),
                       LEARNSCORE__RETRAIN__CONCEPT_MAX_WAIT_SECONDS=str(config.retrain.concept_max_wait_seconds),
                       RETRAIN_TEST_MARKER=str(marker), RETRAIN_TEST_SLOW=slow)


def _start_worker(config, marker: Path, slow: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "learnscore", "retrain-worker", "--trainer",
         "test_retrain_worker:tiny_train", "--promoter", "test_retrain_worker:tiny_promote", *extra],
        env={**_env(config, marker, slow), **(env or {})}, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)


@pytest.mark.parametrize("killed_while", [pytest.param("train", marks=pytest.mark.slow), "promote"])
def test_a_worker_killed_mid_run_finishes_the_request_exactly_once(worker_config, tmp_path,
                                                                  killed_while):
    config = worker_config
    marker = tmp_path / "busy"
    request = _request("science/5-8")
    _send(config, request)
    first = _start_worker(config, marker, killed_while)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert first.poll() is None, first.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the worker never started the run"
            time.sleep(0.5)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    run_id = run_id_for(request["event_id"])
    assert _ledger(config) == [(run_id, "started")]
    assert request_statuses(config) == {request["event_id"]: "started"}

    second = _start_worker(config, marker, "", "--max-runs", "1", "--idle-exit", "60")
    output = second.communicate(timeout=240)[0].decode()
    assert second.returncode == 0, output[-3000:]
    assert _ledger(config) == [(run_id, "started"), (run_id, "started"), (run_id, "succeeded")]
    # Killed while training, the restart trains once; killed after registering, it promotes the
    # version the first attempt registered instead of training another.
    assert _versions(config) == [1] and _alias(config, "production") == "1"

    assert _committed_offsets(config) == _end_offsets(config)  # after the run was recorded


def _committed_offsets(config) -> dict[int, int]:
    from kafka import TopicPartition

    from learnscore.core.kafka_io import consumer

    reader = consumer(config, group_id=config.retrain.consumer_group, enable_auto_commit=False)
    try:
        topic = config.topic(topics.RETRAIN_REQUESTS)
        committed = {p: reader.committed(TopicPartition(topic, p))
                     for p in sorted(reader.partitions_for_topic(topic))}
    finally:
        reader.close(autocommit=False)
    return {p: offset for p, offset in committed.items() if offset}


def _end_offsets(config) -> dict[int, int]:
    from kafka import TopicPartition

    from learnscore.core.kafka_io import consumer

    reader = consumer(config, group_id=None)
    try:
        topic = config.topic(topics.RETRAIN_REQUESTS)
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic))]
        ends = reader.end_offsets(partitions)
    finally:
        reader.close()
    return {tp.partition: offset for tp, offset in ends.items() if offset > 0}


# -- kills at random points, and two workers -------------------------------------------------------
def _phase(config) -> str:
    """Where the burst's run stands, read from the ledger and the registry (for the test's log)."""
    statuses = [status for _, status in _ledger(config)]
    if any(status in ("succeeded", "refused", "failed") for status in statuses):
        return "final row recorded"
    if _alias(config, "production"):
        return "promoted, final row not recorded"
    if _versions(config):
        return "version registered, run not finished"
    return "run started, nothing registered" if statuses else "before the run started"


@pytest.mark.slow
def test_random_kills_during_a_growing_burst_make_exactly_one_version(worker_config, tmp_path):
    config = worker_config
    seed = int(os.environ.get("RETRAIN_KILL_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nkill seed {seed} (RETRAIN_KILL_SEED={seed} repeats the kill times)")
    rng = random.Random(seed)
    burst = [_request("math/1-4"), _request("math/5-8")]
    _send(config, *burst)
    # Each step takes long enough for a kill to land inside it: training, the gap between
    # registering and tagging, promoting.
    slow = {"RETRAIN_TEST_TRAIN_SECONDS": "3", "RETRAIN_TEST_PROMOTE_SECONDS": "1"}
    kills = []
    for attempt in range(4):
        worker = _start_worker(config, tmp_path / "unused", "", env=slow)
        delay = rng.uniform(4, 16)
        time.sleep(delay)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills.append((round(delay, 1), _phase(config)))
        if attempt == 0 and "final" not in kills[-1][1]:
            late = _request("math/9-12")  # the burst grows while its run is unfinished
            _send(config, late)
            burst.append(late)
    print("kills (seconds after start, where the run stood):", kills)

    last = _start_worker(config, tmp_path / "unused", "", "--idle-exit", "20", env=slow)
    output = last.communicate(timeout=300)[0].decode()
    assert last.returncode == 0, output[-3000:]

    run_id = run_id_for(burst[0]["event_id"])
    assert _versions(config) == [1], (kills, _ledger(config))  # one version for the one burst
    assert _alias(config, "production") == "1"
    assert request_statuses(config) == {r["event_id"]: "succeeded" for r in burst}
    ledger = _ledger(config)
    assert {row_run for row_run, _ in ledger} == {run_id}, ledger  # named after its first request
    assert [status for _, status in ledger].count("succeeded") == 1, ledger
    assert _committed_offsets(config) == _end_offsets(config)


def _group_members(config) -> list[dict]:
    from learnscore.core.kafka_io import admin_client

    admin = admin_client(config)
    try:
        described = admin.describe_groups([config.retrain.consumer_group])
    finally:
        admin.close()
    group = described[config.retrain.consumer_group] if isinstance(described, dict) else described[0]
    group = group if isinstance(group, dict) else group._asdict()
    return [m if isinstance(m, dict) else m._asdict() for m in group.get("members") or []]


def test_two_workers_on_one_burst_make_one_version(worker_config, tmp_path):
    """Two workers of one consumer group each get a partition, so each sees part of the burst:
    one takes the lease and trains, the other waits, then finds its requests covered."""
    config = worker_config
    slow = {"RETRAIN_TEST_TRAIN_SECONDS": "4"}
    workers = [_start_worker(config, tmp_path / "unused", "", "--idle-exit", "25", env=slow) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while len(_group_members(config)) < 2:
            assert time.monotonic() < deadline, "the two workers never both joined the group"
            time.sleep(1)
        time.sleep(5)  # the rebalance that gives each its partition
        burst = [_request("math/1-4"), _request("math/5-8"), _request("reading/1-4"), _request("reading/5-8")]
        _send(config, *burst[:2], partition=0)
        _send(config, *burst[2:], partition=1)
        outputs = [worker.communicate(timeout=300)[0].decode() for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert [worker.returncode for worker in workers] == [0, 0], [o[-2000:] for o in outputs]
    assert _versions(config) == [1]
    statuses = [status for _, status in _ledger(config)]
    assert sorted(statuses) == ["covered", "started", "succeeded"], statuses
    assert set(request_statuses(config).values()) == {"succeeded", "covered"}
    assert sorted(request_statuses(config)) == sorted(r["event_id"] for r in burst)
    assert any("another retrain worker trains now" in output for output in outputs), outputs
    assert _committed_offsets(config) == _end_offsets(config)
