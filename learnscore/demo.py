"""The live demo: the whole system on one machine, started and stopped by one command.

The demo is an orchestrator only: every part runs as its own ``learnscore`` process, exactly as
an operator would run it, and the demo watches the tables and the registry to tell the story.
Its settings are plain config overrides (``LEARNSCORE__...``) handed to every part, so the demo
runs the same code paths as production; ``--fast`` only picks smaller, quicker values.

State: everything lives in ``config.state_dir``. A demo always starts from a clean demo state:
the tables, checkpoints and models of a previous demo are removed first (the simulated history
is kept and reused); a state folder holding data a demo did not make is refused, never wiped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx

from learnscore.core.config import Config, Secrets, load_config
from learnscore.core.ports import free_port
from learnscore.core.waiting import WaitStopped, WaitTimedOut, wait_until
from learnscore.schemas.history import MANIFEST_FILE
from learnscore.stack.processes import (
    SAFE_ENV,
    ProcessRecord,
    StackError,
    start_background,
    stop_process,
    tail,
    wait_http,
)

log = logging.getLogger(__name__)

DEMO_DIR = "demo"                      # under the state folder: the marker and the reports
MARKER_FILE = "run.json"               # says "a demo made this state", with the run's settings
STREAM_REPORT_FILE = "stream-report.json"
_SERVICE_NAMES = {"KafkaBroker": "the Kafka broker", "MlflowUi": "the MLflow UI"}
STATE_PARTS = ("lake", "checkpoints", "mlflow", "logs")  # what a clean start removes (keys stay)


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 540.0           # the live stream (about 10 minutes with the start-up)
    rate: float = 100.0                 # valid submissions per second, live
    scenario: str = "concept-shift"
    drift_after_s: float = 120.0        # scenario onset, seconds into the live stream
    outcome_delay_s: float = 10.0
    invalid_ratio: float = 0.01
    history_learners: int = 6000        # the first model's training data
    seed: int = 7
    endpoint_rps: float = 5.0           # a trickle of real-time requests for the dashboard
    fast: bool = False
    linger_s: float | None = None       # after the story: stream this much longer (None: until duration_s)

    @classmethod
    def compressed(cls, **overrides) -> DemoOptions:
        """``--fast``: the same story in under three minutes (used by the end-to-end test)."""
        base = dict(duration_s=600.0, rate=60.0, drift_after_s=25.0, outcome_delay_s=3.0,
                    history_learners=3000, endpoint_rps=2.0, fast=True, linger_s=5.0)
        return cls(**{**base, **overrides})


def demo_settings(options: DemoOptions) -> dict[str, str]:
    """The config overrides every part of the demo runs with (``LEARNSCORE__SECTION__KEY``).

    The values are the ones the drift → retrain loop is tested and benchmarked with
    (tests/test_drift_loop.py, ``learnscore bench drift --e2e``); nothing here is demo-only code.

    >>> demo_settings(DemoOptions())["LEARNSCORE__RETRAIN__POLICY"]
    'auto'
    >>> demo_settings(DemoOptions.compressed())["LEARNSCORE__DRIFT__MIN_SEGMENT_SIZE"]
    '300'
    """
    settings = {
        "LEARNSCORE__STREAMING__TRIGGER_SECONDS": "1",
        "LEARNSCORE__STREAMING__ALIAS_CHECK_SECONDS": "1",
        "LEARNSCORE__SERVING__ALIAS_CHECK_SECONDS": "1",
        "LEARNSCORE__RETRAIN__POLICY": "auto",
        "LEARNSCORE__SIMULATOR__HISTORY_LEARNERS": str(options.history_learners),
        # After concept-shift the observed levels crowd into two of the four, so no model
        # reaches the default macro-F1 floor (0.40) on the post-shift window (bench/results/drift.json).
        "LEARNSCORE__GATES__MIN_MACRO_F1": "0.3",
        # Estimated performance per minute (the default hour never completes in a demo), so the
        # dashboard's model-versions panel shows estimated beside realized while it runs.
        "LEARNSCORE__ESTIMATION__WINDOW_SECONDS": "60",
        "LEARNSCORE__ESTIMATION__INTERVAL_SECONDS": "30",
    }
    if not options.fast:
        # Nine segments (subject x grade band), each warm after 500 outcomes: about a minute
        # at 100 submissions/s, well before the drift starts.
        settings["LEARNSCORE__DRIFT__MIN_SEGMENT_SIZE"] = "500"
    if options.fast:
        settings.update({
            # One grade band: three segments (one per subject), each warm after 300 outcomes.
            "LEARNSCORE__DRIFT__GRADE_BANDS": "[[1, 12]]",
            "LEARNSCORE__DRIFT__MIN_SEGMENT_SIZE": "300",
            # One request per segment for the whole run: one burst, one retrain run.
            "LEARNSCORE__DRIFT__COOLDOWN_SECONDS": "3600",
            "LEARNSCORE__RETRAIN__DEBOUNCE_SECONDS": "10",
            "LEARNSCORE__RETRAIN__MAX_WAIT_SECONDS": "60",
            # A fifth is held out for the gates: 200 rows, so a macro-F1 near the demo's floor
            # is not decided by a handful of rows.
            "LEARNSCORE__RETRAIN__MIN_TRAINING_ROWS": "1000",
            "LEARNSCORE__GATES__WINDOW_ROWS": "1000",
            # The story has 10 minutes: a run that waits for post-onset outcomes (a loaded
            # machine lands them late) widens after 2 minutes, not 10, and a failed attempt is
            # tried again after 15 s, not a minute.
            "LEARNSCORE__RETRAIN__CONCEPT_MAX_WAIT_SECONDS": "120",
            "LEARNSCORE__RETRAIN__FAILED_BACKOFF_SECONDS": "15",
        })
    return settings


@dataclass
class DemoReport:
    started_at: float = field(default_factory=time.time)
    versions_seen: list[str] = field(default_factory=list)
    stream_report: object | None = None
    final_counts: dict = field(default_factory=dict)
    story_complete: bool = False
    interrupted: bool = False
    processes: dict[str, str] = field(default_factory=dict)  # name -> log file


class Demo:
    """Starts every part, streams the simulated story, prints status, stops what it started."""

    def __init__(self, config: Config, options: DemoOptions, say: Callable[[str], None] = print,
                 environ: dict[str, str] | None = None):
        self.options = options
        self.say = say
        self.run_tag = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        environ = dict(os.environ if environ is None else environ)
        # Each run gets its own topics: a broker that is already up (or shared) never mixes runs.
        prefix = f"{config.kafka.topic_prefix}demo-{self.run_tag}."
        self.child_env = {**demo_settings(options), "LEARNSCORE__STATE_DIR": str(config.state_dir),
                          "LEARNSCORE__KAFKA__TOPIC_PREFIX": prefix,
                          "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
                          # Prometheus /metrics of the scorer and the worker (listed by `stack status`).
                          "LEARNSCORE__STREAMING__METRICS_PORT": environ.get(
                              "LEARNSCORE__STREAMING__METRICS_PORT", str(free_port())),
                          "LEARNSCORE__RETRAIN__METRICS_PORT": environ.get(
                              "LEARNSCORE__RETRAIN__METRICS_PORT", str(free_port()))}
        # The demo reads the very config its parts run with.
        self.config = load_config(config.env, environ={**environ, **self.child_env})
        self.children: dict[str, ProcessRecord] = {}
        self.owned: list[object] = []  # stack services this run started (stopped at the end)
        self.report = DemoReport()
        self.home = self.config.state_dir / DEMO_DIR
        self.logs = self.config.state_dir / "logs"
        self.stop_requested = threading.Event()
        self.hurry = threading.Event()
        self.stopping = False
        self.live_started: datetime | None = None
        self.previous_demo = False  # this state folder was a demo's: its broker data may go too
        self.recorded: dict = {}  # what run.json says about this run besides its settings

    # -- process management ------------------------------------------------------------------
    def _learnscore(self, name: str, *args: str) -> ProcessRecord:
        command = [sys.executable, "-m", "learnscore", "--env", self.config.env, *args]
        record = start_background(name, command, self.logs / f"{name}.log", name, env=self.child_env)
        self.children[name] = record
        self.report.processes[name] = record.log_file
        return record

    def _run_step(self, name: str, *args: str, timeout_s: float = 900) -> None:
        """Run a one-shot ``learnscore`` command to completion; its output goes to its log."""
        command = [sys.executable, "-m", "learnscore", "--env", self.config.env, *args]
        log_file = self.logs / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       env={**os.environ, **self.child_env, **SAFE_ENV})
        self.report.processes[name] = str(log_file)
        try:
            code = self._wait_step(process, timeout_s)
        finally:
            if process.poll() is None:  # interrupted or too slow: stop its whole group
                _stop_group(process)
        if code != 0:
            raise StackError(f"`learnscore {' '.join(args)}` failed (exit {code}); last lines of "
                             f"{log_file}:\n{tail(log_file)}")

    def _wait_step(self, process: subprocess.Popen, timeout_s: float) -> int:
        try:
            return wait_until(lambda: process.poll() is not None, timeout_s, " ".join(process.args[3:]),
                              interval_s=0.5, stop=self.stop_requested) and process.returncode
        except WaitStopped:
            raise KeyboardInterrupt from None
        except WaitTimedOut:
            raise StackError(f"`{' '.join(process.args[3:])}` took longer than {timeout_s:.0f}s") from None

    def stop_all(self) -> None:
        self.stopping = True  # from now on a Ctrl-C hurries the stop instead of breaking it off
        # The stream last among the parts: it lands what the others sent (request log).
        for name in ("dashboard", "serve", "retrain-worker", "stream"):
            record = self.children.pop(name, None)
            if record is not None and stop_part(record, timeout_s=120, hurry=self.hurry):
                self.say(f"  stopped {name}")
        for name, record in list(self.children.items()):
            if stop_part(record, timeout_s=60, hurry=self.hurry):
                self.say(f"  stopped {name}")
        self.children.clear()
        for service in reversed(self.owned):
            if service.down():
                self.say(f"  stopped {_SERVICE_NAMES.get(type(service).__name__, 'a service')}")
        self.owned.clear()

    def _wait_http(self, name: str, url: str, timeout_s: float = 180) -> None:
        def check():
            if self.stop_requested.is_set():
                raise KeyboardInterrupt
            self._check_children()

        if not wait_http(url, timeout_s, check=check):
            raise StackError(f"{name} did not answer at {url} within {timeout_s:.0f}s; see "
                             f"{self.logs / (name + '.log')}")

    def _check_children(self) -> None:
        for name, record in self.children.items():
            if not record.is_running():
                raise StackError(f"{name} stopped unexpectedly; see {record.log_file}:\n"
                                 f"{tail(record.log_file)}")

    # -- the story ---------------------------------------------------------------------------
    def run(self) -> DemoReport:
        previous = {signum: signal.signal(signum, self._on_signal)
                    for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._clean_state()
            ui = self._start_stack()
            self._start_services("retrain-worker", "serve", "dashboard")
            self._first_model()
            ui.join(self.stop_requested)
            if ui.error:
                raise ui.error
            self._wait_ready()
            self._print_urls()
            self._live()
        except KeyboardInterrupt:
            self.report.interrupted = True
            self.say("interrupted: stopping")
        finally:
            self.say("stopping every process the demo started")
            self.stop_all()
            if self.home.exists():
                self._write_marker(took_s=round(time.time() - self.report.started_at, 1),
                                   story_complete=self.report.story_complete,
                                   versions_seen=self.report.versions_seen,
                                   final_counts=self.report.final_counts)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.report

    def _on_signal(self, signum, _frame) -> None:
        if self.stopping:
            if not self.hurry.is_set():
                self.say("  not waiting for work in flight any longer: stopping the parts now")
            self.hurry.set()
            return
        if self.stop_requested.is_set():  # a second Ctrl-C: stop waiting for anything
            raise KeyboardInterrupt
        self.say(f"{signal.Signals(signum).name}: stopping the demo (every part it started "
                 "will be stopped; press Ctrl-C again to stop waiting for the stream)")
        self.report.interrupted = True
        self.stop_requested.set()

    def _clean_state(self) -> None:
        """Start from a clean demo state; refuse a state folder a demo did not make."""
        from learnscore.stack.mlflow_server import MlflowUi

        state = self.config.state_dir
        marker = self.home / MARKER_FILE
        leftovers = [state / part for part in STATE_PARTS if (state / part).exists()]
        data = [p for p in leftovers if p.name in ("lake", "checkpoints", "mlflow")]
        if data and not marker.exists():
            raise StackError(
                f"the state folder {state} holds {', '.join(p.name for p in data)} that a demo did "
                f"not make; the demo will not overwrite them. Run `make clean` (removes {state}) "
                f"or run the demo elsewhere with LEARNSCORE__STATE_DIR=<folder>")
        self.previous_demo = marker.exists()
        if leftovers:
            MlflowUi(self.config).down()  # it serves the store about to be removed
            for part in leftovers:
                shutil.rmtree(part)
            self.say(f"starting from a clean demo state: the previous demo's tables, checkpoints "
                     f"and models in {state} were removed (the simulated history is kept)")
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / STREAM_REPORT_FILE).unlink(missing_ok=True)
        self._write_marker()

    def _write_marker(self, **extra) -> None:
        self.recorded.update(extra)
        info = {"run": self.run_tag, "fast": self.options.fast,
                "topic_prefix": self.config.kafka.topic_prefix,
                "model_name": self.config.mlflow.model_name,
                "settings": self.child_env | {"LEARNSCORE__STATE_DIR": str(self.config.state_dir)},
                "options": {k: v for k, v in vars(self.options).items()}, **self.recorded}
        (self.home / MARKER_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")

    def _start_stack(self) -> _Background:
        from learnscore.core.jars import resolve_jars
        from learnscore.core.kafka_io import broker_answers, create_topics
        from learnscore.core.tracking import prepare_store, use_mlflow
        from learnscore.schemas.topics import ALL_TOPICS
        from learnscore.stack.kafka_broker import KafkaBroker
        from learnscore.stack.mlflow_server import MlflowUi

        config = self.config
        self.say("[1/5] local stack: Kafka broker (KRaft) and MLflow")

        def create_store() -> None:  # its tables exist before anything else opens it
            prepare_store(config)
            use_mlflow(config)

        store = _Background(create_store)  # while the broker boots
        resolve_jars(config)
        servers = config.kafka.bootstrap_servers
        broker = KafkaBroker(config)
        if broker.record() is None and broker_answers(servers, timeout_s=3):
            self.say(f"  kafka already answers at {servers}: using it (the demo leaves it running)")
        else:
            if broker.record() is None:
                if self.previous_demo:  # the previous demo's topics: nobody needs them
                    shutil.rmtree(broker.data_dir, ignore_errors=True)
                self.owned.append(broker)
            broker.up()
            self.say(f"  kafka ready at {broker.bootstrap_servers}")
        create_topics(config, ALL_TOPICS)
        self.say(f"  topics {config.kafka.topic_prefix}* (this run's own)")
        store.join(self.stop_requested)
        if store.error:
            raise store.error
        ui = MlflowUi(config)
        self.owned.append(ui)
        # The UI takes a while to boot; the first model trains meanwhile.
        return _Background(ui.up)

    def _start_services(self, *names: str) -> None:
        commands = {"stream": ("stream", "start"), "retrain-worker": ("retrain-worker", "--policy", "auto"),
                    "serve": ("serve",), "dashboard": ("dashboard",)}
        for name in names:
            self._learnscore(name, *commands[name])

    def _first_model(self) -> None:
        from learnscore.core.lake import table_version
        from learnscore.registry.access import alias_version

        self.say(f"[2/5] first model: simulating a history of {self.options.history_learners:,} "
                 "learners, training v1, registering, promoting it to production")
        history = self.config.state_dir / "simulator" / f"history-{self.options.history_learners}"
        trainer = threading.Thread(target=self._train_and_promote, args=(history,), daemon=True)
        self._step_error = None
        trainer.start()
        # The scorer boots while the model trains, once the history sits in silver (the two
        # would otherwise race to create the same tables).
        while trainer.is_alive() and not (table_version(self.config, "silver.outcomes") or 0) >= 1:
            trainer.join(1)
            self._stop_if_asked(trainer)
        if self._step_error is None:
            self.say("[3/5] the streaming scorer, the retrain worker, the endpoint, the dashboard")
            self._start_services("stream")
        while trainer.is_alive():
            trainer.join(0.5)
            self._stop_if_asked(trainer)
        if self._step_error is not None:
            raise self._step_error
        version = alias_version(self.config, "production")
        self.say(f"  model v{version} is production")
        self.report.versions_seen.append(str(version))
        self._write_marker(first_version=str(version))

    def _stop_if_asked(self, step: threading.Thread) -> None:
        if self.stop_requested.is_set():
            step.join(60)  # the step sees the request too and stops its process
            raise KeyboardInterrupt

    def _train_and_promote(self, history: Path) -> None:
        try:
            # Training reads silver only: the demo simulates its history (once; it is kept) and
            # imports it, as a user would import a warehouse export.
            if (history / MANIFEST_FILE).exists():
                self._run_step("import", "import", "--history", str(history))
            else:
                self._run_step("history", "simulate", "history", "--learners", str(self.options.history_learners),
                               "--out", str(history), "--import")
            self._run_step("train", "train", "--initial", "--history-dir", str(history))
            self._run_step("promote", "promote", "--reason", "first model of the demo")
        except BaseException as exc:  # noqa: BLE001 - raised again on the main thread
            self._step_error = exc

    def _wait_ready(self) -> None:
        from learnscore.core.lake import read_table

        # Live events start once the scorer runs with v1 (it has scored the history's
        # submissions, waiting in silver since the first training).
        self.say("  waiting for the scorer's first micro-batch (it scores the history with v1)")
        deadline = time.monotonic() + 600
        while read_table(self.config, "ops.stream_progress", columns=["batch_id"]).empty:
            if time.monotonic() > deadline:
                raise StackError(f"the streaming scorer finished no micro-batch in 600s; see "
                                 f"{self.logs / 'stream.log'}")
            self._check_children()
            if self.stop_requested.wait(2):
                raise KeyboardInterrupt
        serving, dashboard = self.config.serving, self.config.dashboard
        self._wait_http("serve", f"http://{serving.host}:{serving.port}/readyz", timeout_s=300)
        self._wait_http("dashboard", f"http://{dashboard.host}:{dashboard.port}/healthz", timeout_s=120)

    def _print_urls(self) -> None:
        serving, dashboard = self.config.serving, self.config.dashboard
        self.say("open:")
        self.say(f"  dashboard      http://{dashboard.host}:{dashboard.port}/ (log in with the API key in "
                 f"{self.config.state_dir / 'secrets' / 'learnscore_api_key'})")
        self.say(f"  MLflow UI      {mlflow_ui_url(self.config)}")
        self.say(f"  endpoint       http://{serving.host}:{serving.port}/v1/model (which version serves) and "
                 f"POST /v1/score, both with header X-API-Key from "
                 f"{self.config.state_dir / 'secrets' / 'learnscore_api_key'}")
        self.say(f"  logs           {self.logs}/")

    def _live(self) -> None:
        from learnscore.simulator.scenarios import parse_scenario
        from learnscore.simulator.stream import StreamOptions, stream_to_kafka

        options = self.options
        scenario = parse_scenario(f"{options.scenario}@{options.drift_after_s:g}s")
        self.say(f"[4/5] live: {options.rate:g} submissions/s for up to {options.duration_s:.0f}s "
                 f"(Ctrl-C stops earlier), {options.scenario} drift after {options.drift_after_s:.0f}s")
        stop = threading.Event()
        stream_options = StreamOptions(
            rate=options.rate, duration_s=options.duration_s, scenarios=(scenario,),
            invalid_ratio=options.invalid_ratio, outcome_delay_s=options.outcome_delay_s,
            seed=options.seed, drain_outcomes=False, progress_interval_s=3600)
        produced: dict = {}
        self.live_started = datetime.now(timezone.utc)

        def produce() -> None:
            try:
                produced["report"] = stream_to_kafka(self.config, stream_options, stop_event=stop,
                                                     start=self.live_started, keep_truth=False)
            except Exception as exc:  # noqa: BLE001 - reported on the main thread
                produced["error"] = exc

        producer = threading.Thread(target=produce, name="simulator", daemon=True)
        requester = threading.Thread(target=self._endpoint_trickle, args=(stop,), name="requests",
                                     daemon=True)
        producer.start()
        requester.start()
        started = time.monotonic()
        story_done_at = None
        first = self.report.versions_seen[0]
        try:
            while producer.is_alive():
                if self.stop_requested.wait(5 if options.fast else 10):
                    break
                self._check_children()
                status = read_status(self.config, self.live_started)
                self._remember_versions(status)
                self.say(format_status(time.monotonic() - started, status))
                if story_done_at is None and story_complete(status, first):
                    story_done_at = time.monotonic()
                    self.report.story_complete = True
                    self.say(f"  drift detected, retrained, v{status['production']} promoted and "
                             "hot-swapped: the story is complete")
                if (story_done_at and options.linger_s is not None
                        and time.monotonic() - story_done_at > options.linger_s):
                    break
        finally:
            stop.set()
            producer.join(timeout=120)
            requester.join(timeout=15)
        if "error" in produced:
            raise StackError(f"the simulator could not send to Kafka: {produced['error']}")
        self.report.stream_report = produced.get("report")
        self._save_stream_report()
        if not self.stop_requested.is_set():
            self._drain()

    def _save_stream_report(self) -> None:
        """What the simulator sent, with the ids of the valid events: the record the end-to-end
        test checks the tables against."""
        from learnscore.schemas.topics import OUTCOMES, SUBMISSIONS

        report = self.report.stream_report
        if report is None:
            return
        body = {**report.summary(),
                "topics": {SUBMISSIONS: self.config.topic(SUBMISSIONS),
                           OUTCOMES: self.config.topic(OUTCOMES)},
                "valid_submission_ids": sorted(report.valid_event_ids),
                "outcome_ids": sorted(report.outcome_event_ids),
                "duplicated_event_ids": sorted(report.duplicated_event_ids)}
        (self.home / STREAM_REPORT_FILE).write_text(json.dumps(body) + "\n")

    def _drain(self) -> None:
        """Wait (bounded) until every produced valid submission is scored and every broken
        event quarantined, then report."""
        from learnscore.schemas.topics import OUTCOMES, SUBMISSIONS

        report = self.report.stream_report
        self.say("[5/5] draining: waiting until every produced submission is scored")
        valid = report.valid_event_ids if report else set()
        topics = [self.config.topic(SUBMISSIONS), self.config.topic(OUTCOMES)]
        broken = sum(sum(report.expected_reasons(t).values()) for t in (SUBMISSIONS, OUTCOMES)) \
            if report else 0
        def all_landed() -> bool:
            scored, quarantined = drained(self.config, valid, topics)
            return scored >= len(valid) and quarantined >= broken

        try:  # a busy machine: the scorer may be a few batches behind; the report shows what is missing
            wait_until(all_landed, 300, "every produced submission to be scored", interval_s=2,
                       stop=self.stop_requested, check=self._check_children)
        except (WaitTimedOut, WaitStopped):
            pass
        scored, quarantined = drained(self.config, valid, topics)
        status = read_status(self.config, self.live_started)
        self._remember_versions(status)
        if not self.report.story_complete and story_complete(status, self.report.versions_seen[0]):
            # The backlog the scorer caught up on after the live stream ended: scored by v2.
            self.report.story_complete = True
            self.say(f"  drift detected, retrained, v{status['production']} promoted and "
                     "hot-swapped (while draining): the story is complete")
        self.report.final_counts = {**status, "valid_sent": len(valid), "valid_scored": scored,
                                    "broken_sent": broken, "broken_quarantined": quarantined}
        self.say(format_status(None, status))
        self.say(f"  sent {len(valid):,} valid submissions: {scored:,} scored; "
                 f"{broken:,} broken events: {quarantined:,} quarantined")

    def _remember_versions(self, status: dict) -> None:
        for version in sorted(status.get("versions_scored", {}), key=int):
            if version not in self.report.versions_seen:
                self.report.versions_seen.append(version)

    def _endpoint_trickle(self, stop: threading.Event) -> None:
        """A few real-time requests per second, so the endpoint panels have traffic."""
        from learnscore.bench.serve import bench_submissions

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


class _Background:
    """Run ``call`` on a thread; ``join()`` then ``error`` says whether it failed."""

    def __init__(self, call: Callable[[], object]):
        self.error: BaseException | None = None

        def target() -> None:
            try:
                call()
            except BaseException as exc:  # noqa: BLE001 - raised again by the caller
                self.error = exc

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def join(self, stop: threading.Event) -> None:
        while self._thread.is_alive():
            self._thread.join(0.5)
            if stop.is_set():
                raise KeyboardInterrupt


def stop_part(record: ProcessRecord, timeout_s: float, hurry: threading.Event | None = None) -> bool:
    """Stop a part the way an operator would: SIGTERM to the ``learnscore`` process only, so it
    finishes its work in flight (the scorer its micro-batch) and shuts its own JVM down; then
    whatever is left of its process group (after ``timeout_s``, or once ``hurry`` is set: forcibly)."""
    stopped = stop_process(record, timeout_s, leader_first=True, hurry=hurry)
    if stopped:
        _stop_session(record.pid)
    return stopped


def _stop_session(session_id: int, timeout_s: float = 10) -> None:
    """Stop what is left of a session we started (PySpark's Python workers have process
    groups of their own, so a group signal misses them)."""
    import psutil

    def members() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == session_id:
                    found.append(process)
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        return found

    left = members()
    for process in left:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=timeout_s)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass


def _stop_group(process: subprocess.Popen, timeout_s: float = 30) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def read_status(config: Config, live_since: datetime | None = None) -> dict:
    """Counts for the status line, from the Delta tables and the registry (no Spark).

    ``in`` and ``scored`` count live events (event time at or after ``live_since``), not the
    history the first model was trained on.
    """
    import pandas as pd

    from learnscore.core.lake import read_table
    from learnscore.registry.access import alias_version

    def live(frame):
        if live_since is None or frame.empty:
            return frame
        # A second of slack: event times are stamped in milliseconds.
        since = pd.Timestamp(live_since) - pd.Timedelta(seconds=1)
        return frame[pd.to_datetime(frame["event_time"], utc=True) >= since]

    predictions = live(read_table(config, "gold.predictions", columns=["event_time", "model_version"]))
    submissions = live(read_table(config, "silver.submissions", columns=["event_time"]))
    runs = read_table(config, "ops.retrain_runs", columns=["run_id", "status"])
    try:
        production = alias_version(config, "production")
    except Exception:  # noqa: BLE001 - a status line must not stop the demo
        production = None
    versions = predictions["model_version"].astype(str).value_counts().to_dict() if len(predictions) else {}
    return {
        "submissions": int(len(submissions)),
        "scored": int(len(predictions)),
        "quarantined": _count(config, "silver.quarantine"),
        "outcomes": _count(config, "silver.outcomes"),
        "drift_events": _count(config, "ops.drift_events"),
        "retrain_runs": int(runs["run_id"].nunique()) if len(runs) else 0,
        "retrain_succeeded": int((runs["status"] == "succeeded").sum()) if len(runs) else 0,
        "production": None if production is None else str(production),
        "versions_scored": versions,
    }


def drained(config: Config, valid_ids: set[str], topics: list[str]) -> tuple[int, int]:
    """(valid ids among the predictions, quarantined events from ``topics``)."""
    from learnscore.core.lake import read_table

    scored = read_table(config, "gold.predictions", columns=["event_id"])["event_id"]
    quarantine = read_table(config, "silver.quarantine", columns=["source_topic"])["source_topic"]
    return int(scored.isin(valid_ids).sum()), int(quarantine.isin(topics).sum())


def _count(config: Config, name: str) -> int:
    from learnscore.core.lake import read_table
    from learnscore.schemas.tables import TABLES

    return int(len(read_table(config, name, columns=[TABLES[name].column_names[0]])))


def retrain_summary(config: Config) -> list[str]:
    """One line per ended retrain attempt, oldest first: status, version and why (the gates'
    report when they refused), so an incomplete story says where it stopped.

    >>> retrain_summary(load_config(environ={"LEARNSCORE__STATE_DIR": "/nonexistent"}))
    ['no retrain run was recorded (ops.retrain_runs is empty)']
    """
    from learnscore.core.lake import read_table

    runs = read_table(config, "ops.retrain_runs", columns=[
        "run_id", "status", "started_at", "finished_at", "model_version", "gate_report", "message"])
    if runs.empty:
        return ["no retrain run was recorded (ops.retrain_runs is empty)"]
    ended = runs[runs["finished_at"].notna()].sort_values("finished_at")
    open_runs = sorted(set(runs["run_id"]) - set(ended["run_id"]))
    lines = [f"retrain run {run_id[:8]}: started, not ended" for run_id in open_runs]
    for row in ended.tail(20).itertuples():
        version = f" version {row.model_version}" if isinstance(row.model_version, str) else ""
        why = row.gate_report if row.status == "refused" and isinstance(row.gate_report, str) else row.message
        lines.append(f"retrain run {row.run_id[:8]}: {row.status}{version}: {' '.join(str(why).split())[:600]}")
    return lines


def story_complete(status: dict, first_version: str) -> bool:
    """Drift seen, a retrain run done, a newer production version, rows scored by it.

    >>> story_complete({"drift_events": 3, "retrain_succeeded": 1, "production": "2",
    ...                 "versions_scored": {"1": 900, "2": 40}}, "1")
    True
    >>> story_complete({"drift_events": 3, "retrain_succeeded": 1, "production": "2",
    ...                 "versions_scored": {"1": 900}}, "1")
    False
    """
    production = status.get("production")
    return bool(status["drift_events"] and status["retrain_succeeded"] and production
                and production != first_version and status["versions_scored"].get(production))


def format_status(elapsed_s: float | None, status: dict) -> str:
    """One status line.

    >>> print(format_status(30, {"submissions": 3600, "scored": 3590, "quarantined": 40, "outcomes": 3000,
    ...                          "production": "1", "drift_events": 0, "retrain_runs": 0,
    ...                          "versions_scored": {"1": 3590}}))
    t=  30s  in=3,600 scored=3,590 quarantined=40 outcomes=3,000 production=v1 drift=0 retrain=0
    by-version[v1:3,590]
    """
    when = "final" if elapsed_s is None else f"t={elapsed_s:4.0f}s"
    versions = ", ".join(f"v{v}:{n:,}" for v, n in sorted(status["versions_scored"].items(),
                                                          key=lambda item: int(item[0])))
    return (f"  {when}  in={status['submissions']:,} scored={status['scored']:,} "
            f"quarantined={status['quarantined']:,} outcomes={status['outcomes']:,} "
            f"production=v{status['production']} drift={status['drift_events']} "
            f"retrain={status['retrain_runs']} by-version[{versions}]")


def mlflow_ui_url(config: Config) -> str:
    return f"http://{config.mlflow.ui_host}:{config.mlflow.ui_port}"


def api_key(config: Config) -> str:
    return Secrets(config).api_key.get_secret_value()
