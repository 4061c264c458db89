"""Kill the scorer process with SIGKILL at random moments while events flow: nothing is lost,
nothing is doubled, in any table (exactly-once).

Five kills, at moments drawn per run (the seed is printed, ``KILL_SEED`` replays it):
at least one while a Delta write is under way (a data file written, its commit not yet) and
one just after ``production`` moved to another version mid-run. Afterwards every table holds
each event exactly once — quarantine counted as a multiset of Kafka coordinates — and the
distinct ``ScoreIssued`` ids on Kafka are exactly the rows of gold.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from learnscore.core import kafka_io
from learnscore.schemas import topics
from learnscore.schemas.events import SCORE_ISSUED, validate_bytes
from tests.support import ScorerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

def data_files(config, table: str) -> set[str]:
    """The Parquet files in a table's folder (committed or not)."""
    folder = Path(config.table_path(table))
    return {path.name for path in folder.glob("*.parquet")} if folder.exists() else set()


def kill_inside_a_delta_write(scorer: ScorerProcess, config, timeout_s: float = 300) -> str:
    """SIGKILL as soon as a new data file appears in silver or gold, before its commit can follow."""
    tables = ("silver.submissions", "gold.predictions", "bronze.submissions_raw")
    before = {table: data_files(config, table) for table in tables}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for table in tables:
            if data_files(config, table) - before[table]:
                scorer.kill(signal.SIGKILL)
                return table
        assert scorer.process.poll() is None, f"the scorer exited:\n{scorer.tail()}"
        time.sleep(0.005)
    raise AssertionError(f"no Delta write within {timeout_s}s:\n{scorer.tail()}")


def test_sigkill_at_random_moments_leaves_every_event_exactly_once(kit, models, tmp_path):
    config = kit.config
    seed = int(os.environ.get("KILL_SEED", random.SystemRandom().randrange(2**31)))
    print(f"kill test seed: {seed} (KILL_SEED={seed} replays these kill moments)")
    rng = random.Random(seed)
    first = models.register()
    second = models.register(alias=None)
    submissions = [kit.events.submission(i) for i in range(480)]
    outcomes = [kit.events.outcome(s, i) for i, s in enumerate(submissions[:240])]
    requests = [{"request_id": f"req-{i}", "received_at": "2026-11-01T10:00:00.5Z", "status_code": 200,
                 "latency_ms": 3.5, "model_name": "m", "model_version": first, "route": "production", "items": 1}
                for i in range(24)]
    broken = kit.broken_submissions()
    chunks = 24
    step = len(submissions) // chunks

    def produce_over_time() -> None:
        # Submissions in chunks over a few minutes; the outcomes of a chunk follow two chunks later.
        for chunk in range(chunks + 2):
            if chunk < chunks:
                extra = [(None, broken[chunk][0])] if chunk < len(broken) else []
                redelivered = kit.as_messages(submissions[chunk * step:chunk * step + 1]) if chunk % 6 == 5 else []
                kit.produce(topics.SUBMISSIONS,
                            kit.as_messages(submissions[chunk * step:(chunk + 1) * step]) + extra + redelivered)
                kit.produce(topics.ENDPOINT_REQUESTS, [(requests[chunk]["request_id"].encode(),
                                                        orjson.dumps(requests[chunk]))])
            earlier = chunk - 2
            if 0 <= earlier < chunks:
                half = step // 2
                kit.produce(topics.OUTCOMES, kit.as_messages(outcomes[earlier * half:(earlier + 1) * half]))
            time.sleep(4.0)

    producer = threading.Thread(target=produce_over_time, daemon=True)
    scorer = ScorerProcess(config, tmp_path / "scorer.log")
    producer.start()
    plan = ["start-up", "delta-write", "after-batch", "after-promotion", "random"]
    rng.shuffle(plan[2:])  # start-up first, a Delta write early; the rest in a drawn order
    killed_in = []
    try:
        for moment in plan:
            scorer.start()
            if moment == "start-up":
                time.sleep(rng.uniform(2.0, 25.0))
                scorer.kill(signal.SIGKILL)
            elif moment == "delta-write":
                scorer.wait_for_log(r"scorer started", "start")
                killed_in.append(kill_inside_a_delta_write(scorer, config))
                continue
            elif moment == "after-promotion":
                scorer.wait_for_log(r"score batch \d+:", "a scoring micro-batch")
                models.promote(second)
                time.sleep(rng.uniform(1.0, 4.0))
                scorer.kill(signal.SIGKILL)
            else:
                scorer.wait_for_log(r"(land|gold|score) batch \d+:", "a micro-batch")
                time.sleep(rng.uniform(0.0, 6.0) if moment == "after-batch" else rng.uniform(0.0, 15.0))
                scorer.kill(signal.SIGKILL)
            killed_in.append(moment)
        producer.join(timeout=600)
        scorer.start()
        kit.wait_for(lambda: (kit.table("gold.prediction_outcomes").count() >= len(outcomes)
                              and kit.table("gold.predictions").count() >= len(submissions)
                              and kit.table("ops.endpoint_requests").count() >= len(requests)),
                     timeout_s=900, what="every submission, outcome and request landed, scored and paired")
        time.sleep(3)  # the progress rows of the last batches
        # Ctrl-C in a terminal: SIGINT to the whole process group; the scorer stops cleanly.
        assert scorer.kill(signal.SIGINT) == 0, scorer.tail()
    finally:
        if scorer.process and scorer.process.poll() is None:
            scorer.kill(signal.SIGKILL)
    assert len(killed_in) >= 5, killed_in
    assert scorer.logged(r"stopping after the micro-batches in flight"), scorer.tail()

    def ids(table, column="event_id"):
        return Counter(row[0] for row in kit.table(table).select(column).collect())

    expected = Counter(s["event_id"] for s in submissions)
    assert ids("silver.submissions") == expected
    assert ids("gold.predictions") == expected
    assert ids("silver.outcomes") == Counter(o["event_id"] for o in outcomes)
    assert ids("gold.prediction_outcomes") == Counter(o["submission_event_id"] for o in outcomes)
    assert ids("ops.endpoint_requests", "request_id") == Counter(r["request_id"] for r in requests)
    coordinates = Counter((r.kafka_topic, r.kafka_partition, r.kafka_offset)
                          for r in kit.table("bronze.submissions_raw").collect())
    redeliveries = sum(1 for chunk in range(chunks) if chunk % 6 == 5)
    assert len(coordinates) == len(submissions) + len(broken) + redeliveries and set(coordinates.values()) == {1}
    assert kit.table("bronze.outcomes_raw").count() == len(outcomes)
    quarantine = kit.table("silver.quarantine").collect()
    assert set(Counter((r.source_topic, r.kafka_partition, r.kafka_offset) for r in quarantine).values()) == {1}
    assert sorted(r.reason_code for r in quarantine) == sorted(
        [code for _, code in broken] + ["duplicate_event_id"] * redeliveries)
    progress = Counter((r.query_id, r.batch_id) for r in kit.table("ops.stream_progress").collect())
    assert set(progress.values()) == {1}, [key for key, n in progress.items() if n > 1][:5]
    drift = Counter(r.drift_event_id for r in kit.table("ops.drift_events").collect()) \
        if Path(config.table_path("ops.drift_events")).exists() else Counter()
    assert set(drift.values()) <= {1}
    # Kafka is at-least-once: every submission has a ScoreIssued; a replay published the same id,
    # and gold holds the first one published (also for the batch replayed after the promotion).
    consumer = kafka_io.consumer(config, config.topic(topics.SCORES), auto_offset_reset="earliest",
                                 consumer_timeout_ms=5000)
    try:
        issued = [validate_bytes(SCORE_ISSUED, message.value) for message in consumer]
    finally:
        consumer.close()
    assert all(verdict.ok for verdict in issued), [v.reason for v in issued if not v.ok][:3]
    gold = {r.event_id: r for r in kit.table("gold.predictions").collect()}
    assert {v.event["event_id"] for v in issued} == {r.score_event_id for r in gold.values()}
    first_published = {}
    for verdict in issued:
        first_published.setdefault(verdict.event["submission_event_id"], verdict.event["model_version"])
    assert {sid: row.model_version for sid, row in gold.items()} == first_published
    pairs = {r.event_id: r.model_version for r in kit.table("gold.prediction_outcomes").collect()}
    assert all(pairs[sid] == gold[sid].model_version for sid in pairs)
    assert {row.model_version for row in gold.values()} <= {first, second}
