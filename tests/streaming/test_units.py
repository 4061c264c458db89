"""Small pure pieces of the scorer, checked against their reference implementations."""

from __future__ import annotations

import os
import uuid

import pytest
from pyspark.sql import functions as F

from learnscore.core.privacy import pseudonymise
from learnscore.streaming.score import pseudonym_column, score_event_id, score_event_id_column


@pytest.mark.integration
def test_score_event_ids_in_spark_equal_the_python_uuid5(spark):
    rows = [(str(uuid.UUID(int=i * 7919 + 13, version=4)),) for i in range(300)]
    frame = spark.createDataFrame(rows, "submission string")
    got = frame.select("submission", score_event_id_column(F.col("submission")).alias("id")).collect()
    assert all(row.id == score_event_id(row.submission) for row in got)
    assert {uuid.UUID(row.id).version for row in got} == {5}
    assert len({row.id for row in got}) == 300


@pytest.mark.integration
def test_pseudonyms_in_spark_are_the_python_ones(spark):
    key = "k" * 40
    frame = spark.createDataFrame([("learner-1",), ("learner-2",), (None,)], "learner_id string")
    got = frame.select("learner_id", pseudonym_column(F.col("learner_id"), key).alias("key")).collect()
    assert {row.learner_id: row.key for row in got} == {
        "learner-1": pseudonymise("learner-1", key), "learner-2": pseudonymise("learner-2", key), None: None}


def test_pseudonymise_refuses_what_is_not_a_string():
    with pytest.raises(TypeError, match="learner_id must be a string"):
        pseudonymise(42, "k" * 32)


def test_a_failed_query_is_summarised_by_the_exception_its_handler_raised():
    from learnscore.streaming.job import failure_summary

    proxy = ("An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):\n"
             '  File "/x/scoring.py", line 265, in handle\n    progress.send(report)\n'
             "kafka.errors.KafkaTimeoutError: KafkaTimeoutError: Timeout after waiting for 15 secs.\n\n"
             "\tat py4j.Protocol.getReturnValue(Protocol.java:476)\n\tat jdk.proxy3.$Proxy44.call(Unknown Source)\n")
    assert failure_summary(proxy, "Py4JJavaError") == (
        "An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last): … "
        "kafka.errors.KafkaTimeoutError: KafkaTimeoutError: Timeout after waiting for 15 secs.")
    assert failure_summary("Job aborted.\nCaused by: x", "E") == "Job aborted."
    assert failure_summary("  ", "StreamingQueryException") == "StreamingQueryException"


def test_a_progress_record_the_broker_cannot_take_does_not_fail_the_batch(caplog):
    """The scores are published before the progress record: a broker away must not fail the batch
    (and the query with it) over its report."""
    from datetime import datetime, timezone

    from learnscore.core.config import Config
    from learnscore.core.ports import free_port
    from learnscore.streaming.progress import BatchReport, ProgressPublisher
    from learnscore.streaming.runtime import ScorerTopics
    from learnscore.streaming.scoring import QUERY

    config = Config()
    config = config.model_copy(update={"kafka": config.kafka.model_copy(update={
        "bootstrap_servers": f"127.0.0.1:{free_port()}", "request_timeout_s": 1.0})})
    publisher = ProgressPublisher(config, ScorerTopics.of(config))
    report = BatchReport(QUERY, 7, datetime.now(timezone.utc), query_id="q")
    with caplog.at_level("WARNING", logger="learnscore.streaming.progress"):
        publisher.send(report)
    publisher.close()
    assert "batch 7: its progress record was not acknowledged" in caplog.text


def test_a_lease_with_a_short_ttl_is_renewed_in_time_and_still_refuses_a_second_scorer(tmp_path):
    import time

    from learnscore.streaming.lease import CheckpointLease, LeaseHeld

    first = CheckpointLease(tmp_path, ttl_seconds=1.5)  # shorter than the default renewal (10 s)
    first.acquire()
    first.start_renewing()
    try:
        time.sleep(3)
        with pytest.raises(LeaseHeld, match="one scorer per checkpoint"):
            CheckpointLease(tmp_path, ttl_seconds=1.5).acquire()
    finally:
        first.release()


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/autogroup").exists(),
                    reason="no Linux autogroup here: a nice value ranks every process")
def test_niceness_lowers_the_session_group_so_it_counts_against_other_sessions():
    """With autogroup, os.nice alone ranks processes within one session only: a landing process
    started in its own session kept its full share at +10 (the split deployment's premise)."""
    import subprocess
    import sys

    group = __import__("pathlib").Path("/proc/self/autogroup")
    ours = group.read_text()
    code = ("import os; from learnscore.streaming.job import lower_priority; lower_priority(7); "
            "print(open('/proc/self/autogroup').read().split('nice')[-1].strip(), os.nice(0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         start_new_session=True, check=True).stdout.split()
    assert out == ["7", str(min(19, os.nice(0) + 7))], out  # a new session's group starts at 0
    assert group.read_text() == ours  # the caller's session is untouched


def test_a_refresh_during_another_ones_model_build_waits_for_that_model(tmp_path):
    """The runner's idle catch-up and the scoring batch refresh the model cache from two threads:
    the second must get the model the first is building, not "nothing checked yet" (its batch
    would park every row)."""
    import threading
    import time

    from learnscore.core.config import Config
    from learnscore.registry.access import PRODUCTION, registry_client
    from learnscore.streaming.model_cache import OK, ModelCache, ScoringUdf

    config = Config()
    config = config.model_copy(update={"mlflow": config.mlflow.model_copy(update={
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "registry_uri": None, "model_name": "cache-race"})})
    client = registry_client(config)
    client.create_registered_model(config.mlflow.model_name)
    version = client.create_model_version(config.mlflow.model_name, source=str(tmp_path)).version
    client.set_registered_model_alias(config.mlflow.model_name, PRODUCTION, version)
    building = threading.Event()

    def slow_build(_spark, _config, built):
        building.set()
        time.sleep(1.0)
        return ScoringUdf(name=config.mlflow.model_name, version=built, udf=None)

    cache = ModelCache(None, config, builder=slow_build)
    first = threading.Thread(target=cache.refresh)
    first.start()
    assert building.wait(30)
    second = cache.refresh()  # while the first builds
    first.join()
    assert second.status == OK and second.model is not None and second.model.version == str(version)
