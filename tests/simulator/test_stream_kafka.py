"""`simulate stream` against the real broker: what it reports is exactly what lands in Kafka."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from learnscore.core.kafka_io import consumer
from learnscore.core.ports import free_port
from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, OUTCOME_OBSERVED, validate_bytes
from learnscore.schemas.topics import OUTCOMES, SUBMISSIONS
from learnscore.simulator.invalid import DUPLICATE_REASON
from learnscore.simulator.scenarios import parse_scenario
from learnscore.simulator.stream import StreamOptions, stream_to_kafka

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def read_topic(config, base_name: str) -> list:
    """Every message of a topic, partition by partition, in offset order."""
    from kafka import TopicPartition

    reader = consumer(config, enable_auto_commit=False, group_id=None)
    try:
        topic = config.topic(base_name)
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or [])]
        reader.assign(partitions)
        reader.seek_to_beginning(*partitions)
        end = reader.end_offsets(partitions)
        records = []
        deadline = time.monotonic() + 60
        while any(reader.position(p) < end[p] for p in partitions) and time.monotonic() < deadline:
            for batch in reader.poll(timeout_ms=500).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        reader.close()


def classify(records, record, now) -> tuple[Counter, set[str]]:
    """What the stream will do with each message: reason codes of the refused ones (duplicates of
    an earlier valid event_id included) and the ids of the valid ones."""
    reasons: Counter = Counter()
    valid: set[str] = set()
    for message in records:  # per partition in offset order: a duplicate follows its original
        verdict = validate_bytes(record, message.value, now)
        if not verdict.ok:
            reasons[verdict.reason_code] += 1
        elif verdict.event["event_id"] in valid:
            reasons[DUPLICATE_REASON] += 1
        else:
            valid.add(verdict.event["event_id"])
            assert message.key == verdict.event["learner_id"].encode()
    return reasons, valid


def assert_kafka_matches(config, sent_submissions, sent_outcomes, valid_ids, outcome_ids, reasons_submissions,
                         reasons_outcomes):
    now = datetime.now(timezone.utc) + timedelta(seconds=5)
    submissions = read_topic(config, SUBMISSIONS)
    outcomes = read_topic(config, OUTCOMES)
    refused, valid = classify(submissions, DIAGNOSTIC_SUBMITTED, now)
    assert valid == valid_ids and len(valid) == sent_submissions
    assert refused == reasons_submissions
    refused_outcomes, valid_outcomes = classify(outcomes, OUTCOME_OBSERVED, now)
    assert valid_outcomes == outcome_ids and len(valid_outcomes) == sent_outcomes
    assert refused_outcomes == reasons_outcomes


def test_stream_counts_equal_what_kafka_holds(config):
    options = StreamOptions(rate=400, duration_s=3, invalid_ratio=0.1, outcome_delay_s=1, seed=12,
                            scenarios=(parse_scenario("weaker-cohort@1.5s"),), progress_interval_s=1)
    report = stream_to_kafka(config, options)
    assert report.failed == 0 and not report.stopped_early
    assert report.submissions == report.outcomes == 1200 and report.pending_outcomes == 0
    assert sum(report.invalid(SUBMISSIONS).values()) > 60
    assert 2.9 < report.submissions_elapsed_s < 15 and report.elapsed_s > report.submissions_elapsed_s + 0.9
    assert_kafka_matches(config, report.submissions, report.outcomes, report.valid_event_ids,
                         report.outcome_event_ids, report.expected_reasons(SUBMISSIONS),
                         report.expected_reasons(OUTCOMES))
    assert Counter(report.truth.column("cohort").to_pylist()) == {"baseline": 600, "weaker": 600}
    assert report.truth.column("event_id").to_pylist()[0] in report.valid_event_ids


def test_a_stop_event_ends_the_run_early_and_the_report_still_matches(config):
    options = StreamOptions(rate=300, duration_s=60, invalid_ratio=0.05, outcome_delay_s=5, seed=13)
    stop = threading.Event()
    result = {}
    runner = threading.Thread(target=lambda: result.update(report=stream_to_kafka(config, options, stop)))
    began = time.monotonic()
    runner.start()
    time.sleep(2.0)
    stop.set()
    runner.join(timeout=30)
    assert not runner.is_alive() and time.monotonic() - began < 15
    report = result["report"]
    assert report.stopped_early and 300 < report.submissions < 1500
    assert report.outcomes == 0 and report.pending_outcomes == report.submissions  # none was due yet
    assert_kafka_matches(config, report.submissions, report.outcomes, report.valid_event_ids,
                         report.outcome_event_ids, report.expected_reasons(SUBMISSIONS),
                         report.expected_reasons(OUTCOMES))


def _cli(config, tmp_path, *args, **env_overrides) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEARNSCORE__STATE_DIR": str(tmp_path / "state"),
           "LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers,
           "LEARNSCORE__KAFKA__TOPIC_PREFIX": config.kafka.topic_prefix, **env_overrides}
    return subprocess.run([sys.executable, "-m", "learnscore", "simulate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_cli_stream_prints_and_writes_counts_that_match_kafka(config, tmp_path):
    summary_file = tmp_path / "summary.json"
    run = _cli(config, tmp_path, "stream", "--rate", "250", "--duration", "2s", "--invalid-ratio", "0.08",
               "--outcome-delay", "1s", "--scenario", "weaker-cohort@1s", "--seed", "5",
               "--report", str(summary_file), "--truth-out", str(tmp_path / "truth.parquet"))
    assert run.returncode == 0, run.stderr
    assert "sent 500 valid submissions and 500 outcomes, seed 5: submissions in " in run.stdout
    assert "/s, target 250/s), all in " in run.stdout
    assert "scenarios: weaker-cohort@1s" in run.stdout
    summary = json.loads(summary_file.read_text())
    assert summary["submissions"] == summary["outcomes"] == 500 and summary["failed"] == 0
    reasons = {topic: Counter(counts) for topic, counts in summary["expected_quarantine"].items()}
    for kind, info in summary["invalid"].items():
        assert f"{kind:<24} {info['sent']:>6}  → {info['expected_reason_code']}" in run.stdout
    now = datetime.now(timezone.utc)
    refused, valid = classify(read_topic(config, SUBMISSIONS), DIAGNOSTIC_SUBMITTED, now)
    assert len(valid) == 500 and refused == reasons[SUBMISSIONS]
    refused_outcomes, valid_outcomes = classify(read_topic(config, OUTCOMES), OUTCOME_OBSERVED, now)
    assert len(valid_outcomes) == 500 and refused_outcomes == reasons[OUTCOMES]
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "truth.parquet").column("event_id").to_pylist() and \
        set(pq.read_table(tmp_path / "truth.parquet").column("event_id").to_pylist()) == valid


def test_cli_says_clearly_when_the_broker_is_not_there(config, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    run = _cli(config, tmp_path, "stream", "--duration", "1s",
               LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS=address, LEARNSCORE__KAFKA__REQUEST_TIMEOUT_S="2")
    assert run.returncode == 2
    assert f"Kafka broker not reachable at {address}" in run.stderr and "learnscore stack up" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("args, message", [
    (("stream", "--scenario", "colder-winter@3s"), "unknown scenario 'colder-winter'"),
    (("stream", "--duration", "soon"), "--duration: 'soon' is not a duration"),
    (("stream", "--invalid-ratio", "0.9"), "invalid ratio must lie between 0 and 0.5"),
    (("history", "--days", "3", "--outcome-delay", "7d"), "must be shorter than the history"),
    (("history", "--end", "yesterday"), "--end 'yesterday' is not an RFC 3339 time"),
])
def test_cli_refuses_bad_options_with_a_clear_message(config, tmp_path, args, message):
    run = _cli(config, tmp_path, *args)
    assert run.returncode == 1 and message in run.stderr and "Traceback" not in run.stderr


def test_cli_history_writes_the_folder(config, tmp_path):
    run = _cli(config, tmp_path, "history", "--learners", "500", "--days", "10", "--seed", "3",
               "--outcome-delay", "1d", "--end", "2026-06-30T00:00:00Z")
    assert run.returncode == 0, run.stderr
    folder = tmp_path / "state" / "simulator" / "history"
    assert "wrote 500 submissions and 500 outcomes" in run.stdout and str(folder) in run.stdout
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["learners"] == 500 and manifest["end"] == "2026-06-30T00:00:00+00:00"
