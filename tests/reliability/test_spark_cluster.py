"""The scorer on a real Spark cluster: a standalone master and two workers, each its own
process (``spark-class`` from pyspark), the scorer as a driver with ``spark://…`` as master
reading a topic of three partitions. The same exactly-once counts as in local mode must hold,
the work must run in the workers' executors, and their Python must be the project's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
import pytest

from learnscore.core import kafka_io
from learnscore.core.lake import read_table
from learnscore.core.ports import free_port
from learnscore.schemas import topics
from learnscore.streaming.runtime import ScorerTopics
from tests.streaming.conftest import Events, as_messages, broken_submissions, produce, register_model, wait_for
from tests.support import scorer_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]
WORKERS = 2
PARTITIONS = 3


def spark_home() -> Path:
    """pyspark's install folder: it ships ``bin/spark-class`` and the Spark jars."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return json.loads(answer.read())


class StandaloneCluster:
    """A Spark standalone master and workers on 127.0.0.1, each in its own process group."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port, self.ui_port = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []
        self.env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
                    # The daemons only book-keep; their 1 GiB default heap is wasted here.
                    "SPARK_DAEMON_MEMORY": "256m", "SPARK_NO_DAEMONIZE": "1"}

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def state(self) -> dict:
        return get_json(f"http://127.0.0.1:{self.ui_port}/json/")

    def _start(self, name: str, *args: str) -> None:
        log_path = self.folder / f"{name}.log"
        with open(log_path, "ab") as log:
            self.processes.append(subprocess.Popen(
                [str(spark_home() / "bin" / "spark-class"), *args], env=self.env, cwd=self.folder,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True))

    def up(self, timeout_s: float = 120) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(self.ui_port))
        for index in range(WORKERS):
            work_dir = self.folder / f"worker-{index}"
            work_dir.mkdir(exist_ok=True)
            # One core and 1 GiB each: the machine is small and shared with other tests.
            self._start(f"worker-{index}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                        "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
                        "--work-dir", str(work_dir), self.master_url)

        def registered() -> bool:
            self.check_alive()
            try:
                return self.state().get("aliveworkers") == WORKERS
            except OSError:
                return False  # the master's web UI is not up yet

        wait_for(registered, timeout_s, interval_s=0.5, what=f"{WORKERS} workers to register")

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise AssertionError(f"a cluster process exited ({process.args[1]}):\n{self.logs()}")

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                         for path in sorted(self.folder.glob("*.log")))

    def down(self) -> None:
        """SIGTERM every process group (daemons, executors, their Python workers), then SIGKILL."""
        tree = []
        for process in self.processes:
            try:
                tree += [process.pid] + [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for process in reversed(self.processes):  # workers first, the master last
                try:
                    os.killpg(process.pid, signum)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 20
            while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                      for pid in tree) and time.monotonic() < deadline:
                for process in self.processes:
                    process.poll()
                time.sleep(0.2)
        for pid in tree:  # anything that left its group (none expected)
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        for process in self.processes:
            process.wait(timeout=10)


@pytest.fixture
def spark_cluster(tmp_path):
    cluster = StandaloneCluster(tmp_path / "spark-cluster")
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


def cluster_env(config, cluster: StandaloneCluster, driver_ui_port: int) -> dict[str, str]:
    """The per-test config for a `learnscore stream start` driver on the cluster."""
    extra_conf = {
        "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
        "spark.executor.memory": "512m", "spark.executor.cores": "1", "spark.cores.max": str(WORKERS),
        # The executors' Python must import this checkout; on a real cluster the package is
        # installed in the executors' environment (docs/cluster.md).
        "spark.executorEnv.PYTHONPATH": str(PROJECT),
        # The driver's UI, for its REST API: which executor ran how many tasks.
        "spark.ui.enabled": "true", "spark.ui.port": str(driver_ui_port),
    }
    env = scorer_env(config)  # the per-test config, as for the kill test's scorer processes
    env.update({
        "SPARK_LOCAL_IP": "127.0.0.1",
        "LEARNSCORE__SPARK__MASTER": cluster.master_url,
        "LEARNSCORE__SPARK__SHUFFLE_PARTITIONS": str(WORKERS),
        "LEARNSCORE__SPARK__EXTRA_CONF": json.dumps(extra_conf),
        "LEARNSCORE__KAFKA__PARTITIONS": str(PARTITIONS),
    })
    return env


def executor_pythons(cluster: StandaloneCluster) -> set[str]:
    """Interpreters (as started, before symlinks) of the Python processes under the workers."""
    found = set()
    for worker in cluster.processes[1:]:
        for child in psutil.Process(worker.pid).children(recursive=True):
            try:
                if child.name().startswith("python"):
                    found.add(child.cmdline()[0])
            except psutil.NoSuchProcess:
                pass
    return found


def ids(config, table: str, column: str = "event_id") -> Counter:
    return Counter(read_table(config, table, columns=[column])[column])


def test_scorer_on_a_standalone_cluster_counts_every_event_exactly_once(
        spark_cluster, config, fitted_model, small_history_events, mlflow_store, tmp_path):
    from learnscore.model.features import model_input_from_events

    config = config.model_copy(update={"kafka": config.kafka.model_copy(update={"partitions": PARTITIONS})})
    kafka_io.create_topics(config, [*ScorerTopics.BASE_NAMES])
    version = register_model(config, fitted_model, model_input_from_events(small_history_events[0][:20]))
    events = Events(seed=23)
    valid = [events.submission(i) for i in range(150)]
    broken = broken_submissions(events)
    outcomes = [events.outcome(s, i) for i, s in enumerate(valid[:30])]
    # The first wave waits in Kafka before the scorer starts; the second arrives while it runs.
    produce(config, topics.SUBMISSIONS, as_messages(valid[:100]) + [(None, raw) for raw, _ in broken]
            + as_messages(valid[:2]))  # two redeliveries: true duplicates
    produce(config, topics.OUTCOMES, as_messages(outcomes[:15]))

    driver_ui = free_port()
    log_path = tmp_path / "scorer.log"
    with open(log_path, "ab") as log:
        scorer = subprocess.Popen([sys.executable, "-m", "learnscore", "stream", "start"],
                                  env=cluster_env(config, spark_cluster, driver_ui), cwd=PROJECT,
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)

    def scored(count: int):
        def check() -> bool:
            assert scorer.poll() is None, f"the scorer exited:\n{log_path.read_text()[-4000:]}"
            spark_cluster.check_alive()
            return len(read_table(config, "gold.predictions", columns=["event_id"])) >= count
        return check

    try:
        # Generous: the machine is shared; on a quiet one the whole test takes about three minutes.
        wait_for(scored(100), timeout_s=600, interval_s=1, what="the first wave to be scored")
        produce(config, topics.SUBMISSIONS, as_messages(valid[100:]))
        produce(config, topics.OUTCOMES, as_messages(outcomes[15:]))
        wait_for(scored(len(valid)), timeout_s=300, interval_s=1, what="the second wave to be scored")
        wait_for(lambda: len(read_table(config, "gold.prediction_outcomes", columns=["event_id"]))
                 >= len(outcomes), timeout_s=120, interval_s=1, what="outcomes to meet their predictions")

        # The work ran in the workers' executors, with the project's Python.
        app = spark_cluster.state()["activeapps"]
        assert len(app) == 1 and app[0]["cores"] == WORKERS, app
        api = f"http://127.0.0.1:{driver_ui}/api/v1/applications"
        app_id = get_json(api)[0]["id"]
        executors = [e for e in get_json(f"{api}/{app_id}/executors") if e["id"] != "driver"]
        assert len({e["hostPort"] for e in executors}) == WORKERS, executors
        assert all(e["totalTasks"] > 0 for e in executors), [(e["id"], e["totalTasks"]) for e in executors]
        assert executor_pythons(spark_cluster) == {sys.executable}

        scorer.send_signal(signal.SIGTERM)  # stops after the micro-batch in flight
        assert scorer.wait(timeout=120) == 0, log_path.read_text()[-4000:]
    finally:
        if scorer.poll() is None:
            os.killpg(scorer.pid, signal.SIGKILL)
            scorer.wait(timeout=30)

    expected = Counter(s["event_id"] for s in valid)
    assert ids(config, "silver.submissions") == expected
    assert ids(config, "gold.predictions") == expected
    assert set(read_table(config, "gold.predictions", columns=["model_version"])["model_version"]) == {version}
    assert ids(config, "silver.outcomes") == Counter(o["event_id"] for o in outcomes)
    assert ids(config, "gold.prediction_outcomes") == Counter(o["submission_event_id"] for o in outcomes)
    bronze = read_table(config, "bronze.submissions_raw")
    coordinates = Counter(zip(bronze.kafka_topic, bronze.kafka_partition, bronze.kafka_offset))
    assert len(coordinates) == len(valid) + len(broken) + 2 and set(coordinates.values()) == {1}
    assert set(bronze.kafka_partition) == set(range(PARTITIONS))
    quarantine = read_table(config, "silver.quarantine", columns=["reason_code"])
    assert sorted(quarantine.reason_code) == sorted([code for _, code in broken] + ["duplicate_event_id"] * 2)
    progress = read_table(config, "ops.stream_progress")
    progress = progress[progress["query"] == "score"]
    assert progress.scored.sum() == len(valid) and progress.failed.sum() == 0
    assert set(progress.model_status) == {"ok"}
