"""The scoring query in one process, the landing queries in another at a lower CPU priority
(``stream start --queries``): every event lands once, and no query runs in two processes."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from learnscore.core.lake import read_table
from learnscore.schemas import topics
from tests.support import ScorerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# Enough to check that the OS is told; at +10 a landing process in its own session gets about a
# tenth of a busy machine, and beside another test's scorer it could take minutes to land 60 events.
NICENESS = 5


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def test_score_and_landing_in_two_processes_land_every_event_once(kit, models, tmp_path):
    config = kit.config
    models.register()
    submissions = [kit.events.submission(i) for i in range(60)]
    outcomes = [kit.events.outcome(s, i) for i, s in enumerate(submissions[:30])]
    # The default lease ttl (the tests' 5 s lets a restart after SIGKILL go on at once): a niced
    # process on a loaded machine may renew late, and that must not look like a dead holder here.
    ttl = {"LEARNSCORE__STREAMING__LEASE_TTL_SECONDS": "60"}
    scores = ScorerProcess(config, tmp_path / "score.log", args=("--queries", "score"), **ttl)
    landing = ScorerProcess(config, tmp_path / "landing.log", args=("--queries", "land, gold,pairs"),
                            LEARNSCORE__STREAMING__NICENESS=str(NICENESS), **ttl)
    third = ScorerProcess(config, tmp_path / "third.log", args=("--queries", "gold"), **ttl)
    try:
        scores.start()
        landing.start()
        kit.produce(topics.SUBMISSIONS, kit.as_messages(submissions))
        kit.produce(topics.OUTCOMES, kit.as_messages(outcomes))
        def landed(table: str) -> int:
            for process in (scores, landing):
                assert process.process.poll() is None, f"a scorer exited:\n{process.tail()}"
            return len(read_table(config, table))  # 0 before the landing process created it

        kit.wait_for(lambda: (landed("gold.predictions") >= len(submissions)
                              and landed("gold.prediction_outcomes") >= len(outcomes)),
                     600, "every submission scored, landed and paired by the two processes")
        assert scores.logged(r"this scorer runs the score(, shadow)? queries"), scores.tail()
        assert landing.logged(rf"this scorer runs the land, gold, pairs queries at niceness \+{NICENESS}"), \
            landing.tail()
        # The JVM (a child of the landing process) and so its Python workers inherit the priority.
        base = os.getpriority(os.PRIO_PROCESS, os.getpid())
        assert os.getpriority(os.PRIO_PROCESS, landing.process.pid) == min(19, base + NICENESS)
        assert [os.getpriority(os.PRIO_PROCESS, child) for child in children(landing.process.pid)] \
            == [min(19, base + NICENESS)] * len(children(landing.process.pid)) != []
        assert os.getpriority(os.PRIO_PROCESS, scores.process.pid) == base
        group = Path(f"/proc/{landing.process.pid}/autogroup")
        if group.exists():  # Linux autogroup: the nice value counts against other sessions too
            assert group.read_text().split("nice")[-1].strip() == str(NICENESS), group.read_text()

        third.start()  # a second process for the gold query is refused before its JVM starts
        assert third.process.wait(timeout=120) == 1, third.tail()
        assert third.logged(r"another scorer holds the checkpoint \S*scorer/gold"), third.tail()

        assert scores.kill(signal.SIGINT) == 0, scores.tail()
        assert landing.kill(signal.SIGINT) == 0, landing.tail()
    finally:
        for process in (scores, landing, third):
            if process.process and process.process.poll() is None:
                process.kill(signal.SIGKILL)
    expected = Counter(s["event_id"] for s in submissions)
    assert Counter(r.event_id for r in kit.table("gold.predictions").select("event_id").collect()) == expected
    assert Counter(r.event_id for r in kit.table("silver.submissions").select("event_id").collect()) == expected
    assert Counter(r[0] for r in kit.table("gold.prediction_outcomes").select("event_id").collect()) \
        == Counter(o["submission_event_id"] for o in outcomes)
