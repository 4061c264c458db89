"""Kill the scorer process with SIGKILL at random moments while events flow: nothing is lost,
nothing is doubled, in any table (DESIGN §5, exactly-once)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from learnscore.core import kafka_io
from learnscore.schemas import topics
from learnscore.schemas.events import SCORE_ISSUED, validate_bytes
from tests.support import process_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]


def scorer_env(config) -> dict[str, str]:
    """The per-test config as environment variables for a `learnscore stream start` process."""
    return process_env(config, LEARNSCORE__STREAMING__TRIGGER_SECONDS="0.5",
                       LEARNSCORE__STREAMING__ALIAS_CHECK_SECONDS="1", LEARNSCORE__SPARK__DRIVER_MEMORY="1g")


class ScorerProcess:
    """`learnscore stream start` in its own process group, its output in a log file."""

    def __init__(self, config, log_path: Path):
        self.env, self.log_path = scorer_env(config), log_path
        self.process: subprocess.Popen | None = None
        self.offset = 0

    def start(self) -> None:
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "learnscore", "stream", "start"],
                                            env=self.env, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def logged(self, pattern: str) -> int:
        text = self.log_path.read_text(errors="replace")[self.offset:]
        return len(re.findall(pattern, text))

    def wait_for_log(self, pattern: str, what: str, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.logged(pattern):
            assert self.process.poll() is None, f"the scorer exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout_s}s:\n{self.tail()}"
            time.sleep(0.2)

    def kill(self, signum=signal.SIGKILL, timeout_s: float = 180) -> int:
        os.killpg(self.process.pid, signum)  # the whole group: Python, the JVM, the UDF workers
        return self.process.wait(timeout=timeout_s)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def test_sigkill_at_random_moments_leaves_every_event_exactly_once(kit, production_model, tmp_path):
    config = kit.config
    rng = random.Random(20261126)
    submissions = [kit.events.submission(i) for i in range(480)]
    outcomes = [kit.events.outcome(s, i) for i, s in enumerate(submissions[:240])]
    broken = kit.broken_submissions()
    chunks = 24
    step = len(submissions) // chunks

    def produce_over_time() -> None:
        # Submissions in chunks over a few minutes; the outcomes of a chunk follow two chunks later.
        for chunk in range(chunks + 2):
            if chunk < chunks:
                extra = [(None, broken[chunk][0])] if chunk < len(broken) else []
                kit.produce(topics.SUBMISSIONS,
                            kit.as_messages(submissions[chunk * step:(chunk + 1) * step]) + extra)
            earlier = chunk - 2
            if 0 <= earlier < chunks:
                half = step // 2
                kit.produce(topics.OUTCOMES, kit.as_messages(outcomes[earlier * half:(earlier + 1) * half]))
            time.sleep(5.0)

    producer = threading.Thread(target=produce_over_time, daemon=True)
    scorer = ScorerProcess(config, tmp_path / "scorer.log")
    producer.start()
    try:
        for kill in range(3):
            scorer.start()
            if kill == 1:  # once after a committed micro-batch: in the next one, or between two
                scorer.wait_for_log(r"streaming\.job: batch \d+:", "micro-batch")
                time.sleep(rng.uniform(0.0, 8.0))
            else:  # in start-up, the model load or the first micro-batch (a replay)
                scorer.wait_for_log(r"streaming\.job: scorer query \S+ started", "start")
                time.sleep(rng.uniform(1.0, 20.0))
            scorer.kill(signal.SIGKILL)
        producer.join(timeout=600)
        scorer.start()
        kit.wait_for(lambda: (kit.table("gold.prediction_outcomes").count() >= len(outcomes)
                              and kit.table("gold.predictions").count() >= len(submissions)),
                     timeout_s=600, what="every submission and outcome to be scored and joined")
        # Ctrl-C in a terminal: SIGINT to the whole process group; the scorer stops cleanly.
        assert scorer.kill(signal.SIGINT) == 0, scorer.tail()
    finally:
        if scorer.process and scorer.process.poll() is None:
            scorer.kill(signal.SIGKILL)
    assert scorer.logged(r"stopping after the micro-batch in flight"), scorer.tail()

    def ids(table, column="event_id"):
        return Counter(row[0] for row in kit.table(table).select(column).collect())

    expected = Counter(s["event_id"] for s in submissions)
    assert ids("silver.submissions") == expected
    assert ids("gold.predictions") == expected
    assert ids("silver.outcomes") == Counter(o["event_id"] for o in outcomes)
    assert ids("gold.prediction_outcomes") == Counter(o["submission_event_id"] for o in outcomes)
    coordinates = Counter((r.kafka_topic, r.kafka_partition, r.kafka_offset)
                          for r in kit.table("bronze.submissions_raw").collect())
    assert len(coordinates) == len(submissions) + len(broken) and set(coordinates.values()) == {1}
    assert kit.table("bronze.outcomes_raw").count() == len(outcomes)
    assert sorted(r.reason_code for r in kit.table("silver.quarantine").collect()) == sorted(
        code for _, code in broken)
    # Kafka is at-least-once: every submission has a ScoreIssued, redeliveries share its id.
    scores = kafka_io.consumer(config, config.topic(topics.SCORES), auto_offset_reset="earliest",
                               consumer_timeout_ms=5000)
    try:
        issued = [validate_bytes(SCORE_ISSUED, message.value) for message in scores]
    finally:
        scores.close()
    assert all(verdict.ok for verdict in issued), [v.reason for v in issued if not v.ok][:3]
    assert {v.event["submission_event_id"] for v in issued} == set(expected)
    by_id = {}
    for verdict in issued:
        by_id.setdefault(verdict.event["event_id"], set()).add(orjson.dumps(
            {k: verdict.event[k] for k in ("submission_event_id", "model_version")}))
    assert all(len(variants) == 1 for variants in by_id.values())
