"""The live demo (DESIGN §9): the whole system on one machine, started and stopped by one command.

The demo is an orchestrator only: every part runs as its own ``learnscore`` process, exactly as
an operator would run it, and the demo watches the tables and the registry to tell the story.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx

from learnscore.config import Config, Secrets
from learnscore.stack.processes import ProcessRecord, StackError, start_background, stop_process, tail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 600.0
    rate: float = 100.0                 # valid submissions per second, live
    scenario: str = "concept-shift"
    drift_after_s: float = 120.0        # scenario onset, seconds into the live stream
    outcome_delay_s: float = 10.0
    invalid_ratio: float = 0.01
    history_learners: int = 20000
    seed: int = 7
    endpoint_rps: float = 5.0           # a trickle of real-time requests for the dashboard
    fast: bool = False

    @classmethod
    def compressed(cls, **overrides) -> DemoOptions:
        """``--fast``: the same story in under three minutes (used by the end-to-end test)."""
        base = dict(duration_s=150.0, rate=120.0, drift_after_s=25.0, outcome_delay_s=3.0,
                    history_learners=4000, endpoint_rps=2.0, fast=True)
        return cls(**{**base, **overrides})


@dataclass
class DemoReport:
    started_at: float = field(default_factory=time.time)
    versions_seen: list[str] = field(default_factory=list)
    stream_report: object | None = None
    final_counts: dict = field(default_factory=dict)
    processes: dict[str, str] = field(default_factory=dict)  # name -> log file


class Demo:
    """Starts every part, streams the simulated story, prints status, stops what it started."""

    def __init__(self, config: Config, options: DemoOptions, say: Callable[[str], None] = print):
        self.config = config
        self.options = options
        self.say = say
        self.children: dict[str, ProcessRecord] = {}
        self.report = DemoReport()
        self.logs = config.state_dir / "logs"

    # -- process management ------------------------------------------------------------------
    def _learnscore(self, name: str, *args: str, env: dict[str, str] | None = None) -> ProcessRecord:
        command = [sys.executable, "-m", "learnscore", "--env", self.config.env, *args]
        record = start_background(name, command, self.logs / f"{name}.log", name,
                                  env={"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false", **(env or {})})
        self.children[name] = record
        self.report.processes[name] = record.log_file
        return record

    def _run_step(self, name: str, *args: str, timeout_s: float = 900) -> None:
        """Run a one-shot ``learnscore`` command to completion, showing where its log is."""
        record = self._learnscore(name, *args)
        deadline = time.monotonic() + timeout_s
        while record.is_running():
            if time.monotonic() > deadline:
                stop_process(record)
                raise StackError(f"`learnscore {' '.join(args)}` took longer than {timeout_s:.0f}s; "
                                 f"see {record.log_file}")
            time.sleep(0.5)
        self.children.pop(name, None)
        code = _exit_code(record.pid)
        if code not in (0, None):
            raise StackError(f"`learnscore {' '.join(args)}` failed (exit {code}); last lines of "
                             f"{record.log_file}:\n{tail(record.log_file)}")

    def stop_all(self) -> None:
        for name, record in reversed(list(self.children.items())):
            if stop_process(record, timeout_s=60):
                self.say(f"  stopped {name}")
        self.children.clear()

    def _wait_http(self, name: str, url: str, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            record = self.children.get(name)
            if record and not record.is_running():
                raise StackError(f"{name} exited during start-up; see {record.log_file}:\n"
                                 f"{tail(record.log_file)}")
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise StackError(f"{name} did not answer at {url} within {timeout_s:.0f}s")

    def _check_children(self) -> None:
        for name, record in self.children.items():
            if not record.is_running():
                raise StackError(f"{name} stopped unexpectedly; see {record.log_file}:\n"
                                 f"{tail(record.log_file)}")


    # -- the story ---------------------------------------------------------------------------
    def child_env(self) -> dict[str, str]:
        """Settings the demo gives every part: quick alias checks, short cooldowns, small segments."""
        env = {
            "LEARNSCORE__STREAMING__ALIAS_CHECK_SECONDS": "1",
            "LEARNSCORE__SERVING__ALIAS_CHECK_SECONDS": "1",
            "LEARNSCORE__DRIFT__COOLDOWN_SECONDS": "120",
            "LEARNSCORE__RETRAIN__POLICY": "auto",
            "LEARNSCORE__SIMULATOR__HISTORY_LEARNERS": str(self.options.history_learners),
        }
        if self.options.fast:
            env.update({
                "LEARNSCORE__STREAMING__TRIGGER_SECONDS": "1",
                "LEARNSCORE__DRIFT__MIN_SEGMENT_SIZE": "200",
                "LEARNSCORE__RETRAIN__DEBOUNCE_SECONDS": "5",
                "LEARNSCORE__RETRAIN__MIN_TRAINING_ROWS": "500",
            })
        return env

    def run(self) -> DemoReport:
        from learnscore.tracking import use_mlflow

        try:
            self._start_stack()
            use_mlflow(self.config)
            self._start_services()
            self._ensure_production_model()
            self._wait_ready()
            self._print_urls()
            self._live()
        finally:
            self.say("stopping every process the demo started")
            self.stop_all()
        return self.report

    def _start_stack(self) -> None:
        from learnscore.jars import resolve_jars
        from learnscore.kafka_io import create_topics
        from learnscore.stack.kafka_broker import KafkaBroker
        from learnscore.stack.mlflow_server import MlflowUi
        from schemas.topics import ALL_TOPICS

        self.say("[1/5] local stack: Kafka broker (KRaft) and MLflow")
        resolve_jars(self.config)
        broker = KafkaBroker(self.config).up()
        create_topics(self.config, ALL_TOPICS)
        self.say(f"  kafka ready at {broker.endpoint}")
        ui = MlflowUi(self.config).up()
        self.say(f"  mlflow ui at {ui.endpoint}")

    def _start_services(self) -> None:
        # The services boot while the first model trains: none of them needs it to start.
        self.say("[2/5] starting the streaming scorer, the retrain worker, the endpoint, the dashboard")
        env = self.child_env()
        self._learnscore("stream", "stream", "start", env=env)
        self._learnscore("retrain-worker", "retrain-worker", "--policy", "auto", env=env)
        self._learnscore("serve", "serve", env=env)
        self._learnscore("dashboard", "dashboard", env=env)

    def _ensure_production_model(self) -> None:
        from registry.aliases import current_version

        version = current_version(self.config, "production")
        if version is not None:
            self.say(f"[3/5] production model v{version} exists already (a previous run): reusing it")
        else:
            self.say(f"[3/5] first model: simulating a history of {self.options.history_learners:,} "
                     "learners, training, registering, promoting")
            self._run_step("train", "train", "--initial")
            self._run_step("promote", "promote", "--reason", "first model of the demo")
            version = current_version(self.config, "production")
            self.say(f"  model v{version} is production")
        self.report.versions_seen.append(str(version))

    def _wait_ready(self) -> None:
        serving, dashboard = self.config.serving, self.config.dashboard
        self._wait_http("serve", f"http://{serving.host}:{serving.port}/readyz", timeout_s=300)
        self._wait_http("dashboard", f"http://{dashboard.host}:{dashboard.port}/", timeout_s=120)

    def _print_urls(self) -> None:
        serving, dashboard = self.config.serving, self.config.dashboard
        self.say("open:")
        self.say(f"  dashboard      http://{dashboard.host}:{dashboard.port}/")
        self.say(f"  MLflow UI      {mlflow_ui_url(self.config)}")
        self.say(f"  endpoint       http://{serving.host}:{serving.port}/v1/model (POST /v1/score; README 'The REST endpoint') "
                 f"(API key in {self.config.state_dir / 'secrets' / 'learnscore_api_key'})")
        self.say(f"  logs           {self.logs}/")

    def _live(self) -> None:
        from simulator.scenarios import parse_scenario
        from simulator.stream import StreamOptions, stream_to_kafka

        options = self.options
        scenario = parse_scenario(f"{options.scenario}@{options.drift_after_s:g}s")
        self.say(f"[4/5] live: {options.rate:g} submissions/s for up to {options.duration_s:.0f}s, "
                 f"{options.scenario} drift after {options.drift_after_s:.0f}s")
        stop = threading.Event()
        stream_options = StreamOptions(
            rate=options.rate, duration_s=options.duration_s, scenarios=(scenario,),
            invalid_ratio=options.invalid_ratio, outcome_delay_s=options.outcome_delay_s,
            seed=options.seed, drain_outcomes=False, progress_interval_s=3600)
        produced: dict = {}

        def produce() -> None:
            produced["report"] = stream_to_kafka(self.config, stream_options, stop_event=stop)

        producer = threading.Thread(target=produce, name="simulator", daemon=True)
        requester = threading.Thread(target=self._endpoint_trickle, args=(stop,), name="requests",
                                     daemon=True)
        producer.start()
        requester.start()
        started = time.monotonic()
        story_done_at = None
        try:
            while producer.is_alive():
                time.sleep(5 if options.fast else 10)
                self._check_children()
                status = read_status(self.config)
                self._remember_versions(status)
                self.say(format_status(time.monotonic() - started, status))
                if story_done_at is None and story_complete(status, self.report.versions_seen[0]):
                    story_done_at = time.monotonic()
                    self.say("  drift detected, retrained, promoted, hot-swapped: the story is complete")
                if options.fast and story_done_at and time.monotonic() - story_done_at > 10:
                    stop.set()
        except KeyboardInterrupt:
            self.say("Ctrl-C: stopping the live stream")
        finally:
            stop.set()
            producer.join(timeout=60)
            requester.join(timeout=10)
        self.report.stream_report = produced.get("report")
        self._drain()

    def _drain(self) -> None:
        """Wait (bounded) until every produced valid submission is scored, then report."""
        self.say("[5/5] draining: waiting until every produced submission is scored")
        report = self.report.stream_report
        expected = report.submissions if report else 0
        deadline = time.monotonic() + (120 if self.options.fast else 180)
        status = read_status(self.config)
        while time.monotonic() < deadline:
            status = read_status(self.config)
            if status["scored_live"] >= expected and status["pending"] == 0:
                break
            time.sleep(3)
        self._remember_versions(status)
        self.report.final_counts = status
        self.say(format_status(None, status))

    def _remember_versions(self, status: dict) -> None:
        for version in status.get("versions_scored", {}):
            if version not in self.report.versions_seen:
                self.report.versions_seen.append(version)

    def _endpoint_trickle(self, stop: threading.Event) -> None:
        """A few real-time requests per second, so the endpoint panels have traffic."""
        from serving.bench import bench_submissions

        submissions = bench_submissions(500)  # simulated learners on the platform's item bank
        serving = self.config.serving
        url = f"http://{serving.host}:{serving.port}/v1/score"
        headers = {"X-API-Key": api_key(self.config)}
        pause = 1.0 / self.options.endpoint_rps if self.options.endpoint_rps > 0 else None
        seed = 0
        with httpx.Client(timeout=10) as client:
            while pause and not stop.wait(pause):
                seed += 1
                body = submissions[seed % len(submissions)]
                if seed % 25 == 0:  # now and then a broken one: the error-rate panel is real
                    body = {**body, "grade_level": 99}
                try:
                    client.post(url, json=body, headers=headers)
                except httpx.HTTPError:
                    pass


def read_status(config: Config) -> dict:
    """Counts for the status line, read from the Delta tables and the registry (no Spark)."""
    from learnscore.lake import read_table
    from registry.aliases import current_version

    def count(name: str) -> int:
        return int(len(read_table(config, name, columns=[_first_column(name)])))

    predictions = read_table(config, "gold.predictions", columns=["model_version"])
    runs = read_table(config, "ops.retrain_runs", columns=["run_id", "status"])
    progress = read_table(config, "ops.stream_progress", columns=["batch_id", "pending_unscored"])
    try:
        production = current_version(config, "production")
    except Exception:  # noqa: BLE001 - a status line must not stop the demo
        production = None
    versions = predictions["model_version"].astype(str).value_counts().to_dict() if len(predictions) else {}
    pending = 0
    if len(progress):
        pending = int(progress.sort_values("batch_id")["pending_unscored"].iloc[-1] or 0)
    return {
        "submissions": count("silver.submissions"),
        "scored": int(len(predictions)),
        "scored_live": int(len(predictions)),
        "quarantined": count("silver.quarantine"),
        "outcomes": count("silver.outcomes"),
        "drift_events": count("ops.drift_events"),
        "retrain_runs": int(runs["run_id"].nunique()) if len(runs) else 0,
        "retrain_succeeded": int((runs["status"] == "succeeded").sum()) if len(runs) else 0,
        "production": None if production is None else str(production),
        "versions_scored": versions,
        "pending": pending,
    }


def _first_column(name: str) -> str:
    from schemas.tables import TABLES

    return TABLES[name].column_names[0]


def story_complete(status: dict, first_version: str) -> bool:
    """Drift seen, a retrain run done, a newer production version, rows scored by it."""
    production = status.get("production")
    return bool(status["drift_events"] and status["retrain_succeeded"] and production
                and production != first_version and status["versions_scored"].get(production))


def format_status(elapsed_s: float | None, status: dict) -> str:
    when = "final" if elapsed_s is None else f"t={elapsed_s:4.0f}s"
    versions = ", ".join(f"v{v}:{n}" for v, n in sorted(status["versions_scored"].items()))
    return (f"  {when}  in={status['submissions']:,} scored={status['scored']:,} "
            f"quarantined={status['quarantined']:,} outcomes={status['outcomes']:,} "
            f"production=v{status['production']} drift={status['drift_events']} "
            f"retrain={status['retrain_runs']} by-version[{versions}]")


def _exit_code(pid: int) -> int | None:
    try:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        return None


def mlflow_ui_url(config: Config) -> str:
    return f"http://{config.mlflow.ui_host}:{config.mlflow.ui_port}"


def api_key(config: Config) -> str:
    return Secrets(config).api_key.get_secret_value()


