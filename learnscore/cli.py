"""The ``learnscore`` command line: reads options, loads config once, calls the jobs.

Each sub-command is a thin shell over a plain function in the package that owns the work.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from learnscore.config import Config, ConfigError, load_config

app = typer.Typer(
    help="learnscore: streaming scorer for learner diagnostic assessments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack_app = typer.Typer(help="The local stack: Kafka broker and MLflow.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
monitor_app = typer.Typer(help="Scheduled monitoring reports.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")
simulate_app = typer.Typer(help="Simulated learners: a live stream into Kafka or a history.",
                           no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")
schemas_app = typer.Typer(help="The event contracts.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")


class _State:
    env: str | None = None
    config: Config | None = None


_state = _State()


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # The engines are chatty at INFO; our own modules say what matters.
    for noisy in ("py4j", "mlflow", "urllib3", "httpx", "alembic", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kafka-python logs every refused connection while it retries; our errors say it once, clearly.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def get_config() -> Config:
    if _state.config is None:
        _state.config = load_config(_state.env)
    return _state.config


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.callback()
def main(
    env: Annotated[Optional[str], typer.Option(help="Config environment: conf/<env>.yaml (default: $LEARNSCORE_ENV or local).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    _state.env = env
    # Every process we start refuses pickle-based model formats; models load through skops.
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    setup_logging(logging.DEBUG if verbose else logging.INFO)


# -- jars -------------------------------------------------------------------------------------
@app.command()
def jars(force: Annotated[bool, typer.Option(help="Resolve again even if present.")] = False) -> None:
    """Resolve the JVM jars (Delta, Spark Kafka connector, Kafka broker) with Maven."""
    from learnscore.jars import resolve_jars

    for name, files in resolve_jars(get_config(), force=force).items():
        typer.echo(f"{name}: {len(files)} jars in {files[0].parent}")


# -- stack ------------------------------------------------------------------------------------
@stack_app.command("up")
def stack_up(
    mlflow_ui: Annotated[bool, typer.Option("--mlflow-ui", help="Also start the MLflow UI server.")] = False,
) -> None:
    """Start the local Kafka broker (KRaft) and prepare the embedded MLflow store."""
    from learnscore.jars import resolve_jars
    from learnscore.kafka_io import create_topics
    from learnscore.stack.kafka_broker import KafkaBroker
    from learnscore.stack.mlflow_server import MlflowUi, prepare_store
    from schemas.topics import ALL_TOPICS

    config = get_config()
    resolve_jars(config)
    record = KafkaBroker(config).up()
    create_topics(config, ALL_TOPICS)
    typer.echo(f"kafka   ready at {record.endpoint} (pid {record.pid}, log {record.log_file})")
    prepare_store(config)
    typer.echo(f"mlflow  store {config.mlflow.tracking_uri}")
    if mlflow_ui:
        ui = MlflowUi(config).up()
        typer.echo(f"mlflow  ui at {ui.endpoint} (pid {ui.pid})")


@stack_app.command("down")
def stack_down() -> None:
    """Stop exactly what `stack up` started."""
    from learnscore.stack.kafka_broker import KafkaBroker
    from learnscore.stack.mlflow_server import MlflowUi

    config = get_config()
    for name, service in (("mlflow-ui", MlflowUi(config)), ("kafka", KafkaBroker(config))):
        typer.echo(f"{name}: {'stopped' if service.down() else 'was not running'}")


@stack_app.command("status")
def stack_status() -> None:
    """Say what runs and where."""
    from learnscore.stack.kafka_broker import KafkaBroker
    from learnscore.stack.mlflow_server import MlflowUi

    config = get_config()
    for status in (KafkaBroker(config).status(), MlflowUi(config).status()):
        if status["running"]:
            extra = "" if status.get("ready", True) else " (not answering yet)"
            typer.echo(f"{status['service']:<10} running  pid {status['pid']:<8} {status['listens']}{extra}")
        else:
            typer.echo(f"{status['service']:<10} stopped")
    typer.echo(f"{'state':<10} {config.state_dir}")


@monitor_app.command("drift")
def monitor_drift(
    window: Annotated[str, typer.Option(help="Window length, e.g. 1h, 15m, 1d.")] = "1h",
    windows: Annotated[int, typer.Option(min=1, help="How many complete windows to report, newest last.")] = 24,
) -> None:
    """Drift metrics (PSI, KS, Jensen-Shannon) per feature and segment into ops.drift_metrics."""
    from batch.drift_report import DriftReportError, run_drift_report
    from batch.retrain_policy import parse_duration
    from learnscore.spark import create_spark_session
    from learnscore.tracking import use_mlflow

    config = get_config()
    try:
        length = parse_duration(window)
    except ValueError as exc:
        fail(f"--window: {exc}")
    use_mlflow(config)
    spark = create_spark_session(config, app_name="learnscore-drift-report")
    try:
        summary = run_drift_report(spark, config, window=length, windows=windows)
    except DriftReportError as exc:
        fail(str(exc))
    finally:
        spark.stop()
    typer.echo(f"baseline: {summary.baseline.how}")
    typer.echo(f"{summary.rows} rows into ops.drift_metrics for {len(summary.window_starts)} "
               f"windows from {summary.window_starts[0].isoformat()} "
               f"({summary.cells_suppressed} small cells left out)")


# -- bench ------------------------------------------------------------------------------------
bench_app = typer.Typer(help="Benchmarks; figures go to bench/results/.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("drift")
def bench_drift(
    stationary: Annotated[int, typer.Option(help="Submissions of the stationary stream (false alarms).")] = 1_000_000,
    onset: Annotated[int, typer.Option(help="Submission at which each scenario starts.")] = 30_000,
    scenario: Annotated[Optional[list[str]], typer.Option(help="Scenarios to time (default: all four); repeatable.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated history and streams.")] = 11,
    output: Annotated[str, typer.Option(help="Where the JSON goes.")] = "bench/results/drift.json",
) -> None:
    """False retrain requests on a stationary stream and detection delay per drift scenario."""
    import json

    from streaming.drift.bench import SCENARIOS, run_drift_bench

    unknown = sorted(set(scenario or ()) - set(SCENARIOS))
    if unknown:
        fail(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    result = run_drift_bench(get_config(), stationary_submissions=stationary, onset=onset,
                             seed=seed, scenarios=tuple(scenario or SCENARIOS))
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if "stationary" in result:
        s = result["stationary"]
        typer.echo(f"stationary: {s['retrain_requests']} retrain requests in {s['submissions']:,} "
                   f"submissions ({s['drift_events']} drift events)")
    for name, entry in result["scenarios"].items():
        delay = entry.get(entry["measured_by"], "not detected")
        typer.echo(f"{name}: {delay} {entry['measured_by'].removeprefix('delay_').replace('_', ' ')}"
                   f" from onset to the first request")
    typer.echo(f"written to {path}")


# -- drift → retrain ------------------------------------------------------------------------
@app.command("retrain-worker")
def retrain_worker(
    every: Annotated[Optional[str], typer.Option(help="Also retrain on a schedule when no model was trained for this long, e.g. 24h.")] = None,
    policy: Annotated[Optional[str], typer.Option(help="auto: gates then production; manual: leave it as staging (default: retrain.policy).")] = None,
    trainer: Annotated[str, typer.Option(help="Training function, module:function.")] = "batch.train:train_model",
    promoter: Annotated[str, typer.Option(help="Promotion function, module:function.")] = "registry.promote:promote",
    max_runs: Annotated[Optional[int], typer.Option(help="Stop after this many runs.")] = None,
    idle_exit: Annotated[Optional[float], typer.Option(help="Stop after this many seconds without requests.")] = None,
) -> None:
    """Consume model.retrain-requests: one recorded training run per burst of requests."""
    from batch.retrain_worker import run_retrain_worker

    if policy not in (None, "auto", "manual"):
        fail(f"--policy must be auto or manual, got {policy!r}")
    try:
        made = run_retrain_worker(get_config(), every=every, policy=policy, trainer=trainer,
                                  promoter=promoter, max_runs=max_runs,
                                  idle_exit_seconds=idle_exit)
    except ValueError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("retrain worker stopped (an unfinished run is redone on the next start)")
        return
    for run in made:
        typer.echo(f"run {run.run_id}: {run.status} (trigger {run.trigger}, version "
                   f"{run.model_version or '-'}, promoted {bool(run.promoted)})")


# -- simulate ---------------------------------------------------------------------------------
def _parse_scenarios(texts: list[str] | None):
    from simulator.scenarios import ScenarioError, parse_scenario

    try:
        return tuple(parse_scenario(text) for text in texts or ())
    except ScenarioError as exc:
        fail(str(exc))


def _seconds(text: str, option: str) -> float:
    from simulator.scenarios import ScenarioError, parse_duration

    try:
        return parse_duration(text)
    except ScenarioError as exc:
        fail(f"{option}: {exc}")


@simulate_app.command("stream")
def simulate_stream(
    rate: Annotated[Optional[float], typer.Option(help="Valid submissions per second (default simulator.rate).")] = None,
    duration: Annotated[str, typer.Option(help="How long to send submissions: 30, 30s, 2m, 1h.")] = "30s",
    scenario: Annotated[Optional[list[str]], typer.Option(
        help="Drift scenario name@start, e.g. weaker-cohort@15s or concept-shift@5000; repeatable. "
             "Known: weaker-cohort, item-bank-change, concept-shift, response-time-unit-change.")] = None,
    invalid_ratio: Annotated[float, typer.Option(help="Share of broken events (and duplicates) per topic, 0-0.5.")] = 0.0,
    outcome_delay: Annotated[Optional[str], typer.Option(help="Delay between a submission and its outcome, e.g. 10s.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default simulator.seed).")] = None,
    no_drain: Annotated[bool, typer.Option("--no-drain", help="Do not wait for outcomes still due after the last submission.")] = False,
    report: Annotated[Optional[Path], typer.Option(help="Also write the summary as JSON to this file.")] = None,
    truth_out: Annotated[Optional[Path], typer.Option(help="Write the truth of every valid submission sent (Parquet).")] = None,
) -> None:
    """Stream simulated submissions (and their late outcomes) into Kafka at a target rate."""
    import json
    import signal
    import threading

    import pyarrow.parquet as pq

    from simulator import settings_from_config
    from simulator.stream import StreamOptions, stream_to_kafka

    config = get_config()
    section = config.simulator
    try:
        options = StreamOptions(
            rate=rate or section.rate, duration_s=_seconds(duration, "--duration"),
            scenarios=_parse_scenarios(scenario), invalid_ratio=invalid_ratio,
            outcome_delay_s=_seconds(outcome_delay, "--outcome-delay") if outcome_delay else section.outcome_delay_s,
            seed=section.seed if seed is None else seed, drain_outcomes=not no_drain,
            progress_interval_s=section.progress_interval_s, settings=settings_from_config(config))
    except ValueError as exc:
        fail(str(exc))
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C: stop cleanly, still report
    try:
        result = stream_to_kafka(config, options, stop_event=stop, keep_truth=truth_out is not None)
    finally:
        signal.signal(signal.SIGINT, previous)
    for line in result.lines():
        typer.echo(line)
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.summary(), indent=2) + "\n")
        typer.echo(f"summary written to {report}")
    if truth_out:
        truth_out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(result.truth, truth_out)
        typer.echo(f"truth written to {truth_out}")
    if result.failed:
        raise typer.Exit(1)


@simulate_app.command("history")
def simulate_history(
    learners: Annotated[Optional[int], typer.Option(help="Learners, one diagnostic each (default simulator.history_learners).")] = None,
    days: Annotated[Optional[float], typer.Option(help="Days of history, ending now (default simulator.history_days).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default simulator.seed).")] = None,
    scenario: Annotated[Optional[list[str]], typer.Option(help="Drift scenario name@start, e.g. concept-shift@40d; repeatable.")] = None,
    outcome_delay: Annotated[Optional[str], typer.Option(help="Delay between a test and its outcome, e.g. 7d.")] = None,
    end: Annotated[Optional[str], typer.Option(help="End of the history, RFC 3339 (default now).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder to write (default <state_dir>/simulator/history).")] = None,
) -> None:
    """Write a historical batch (submissions, outcomes, truth) for the first training."""
    from datetime import timezone

    from schemas.contract import parse_timestamp
    from simulator import settings_from_config
    from simulator.history import HistoryOptions, history_dir, write_history

    config = get_config()
    section = config.simulator
    end_time = None
    if end:
        end_time = parse_timestamp(end)
        if end_time is None:
            fail(f"--end {end!r} is not an RFC 3339 time such as 2026-01-31T00:00:00Z")
        end_time = end_time.astimezone(timezone.utc)
    try:
        options = HistoryOptions(
            learners=learners or section.history_learners, days=days or section.history_days,
            outcome_delay_s=(_seconds(outcome_delay, "--outcome-delay") if outcome_delay
                             else section.history_outcome_delay_s),
            seed=section.seed if seed is None else seed, scenarios=_parse_scenarios(scenario),
            end=end_time, settings=settings_from_config(config))
    except ValueError as exc:
        fail(str(exc))
    folder = out or history_dir(config)
    manifest = write_history(folder, options)
    typer.echo(f"wrote {manifest['submissions']} submissions and {manifest['outcomes']} outcomes "
               f"({manifest['responses']} responses) to {folder} in {manifest['generated_in_s']:.1f}s")
    typer.echo(f"submissions from {manifest['submission_time_min']} to {manifest['submission_time_max']}, "
               f"seed {manifest['seed']}, by scenario {manifest['rows_by_scenario']}")


# -- schemas ----------------------------------------------------------------------------------
@schemas_app.command("export")
def schemas_export(
    out: Annotated[Optional[Path], typer.Option(help="Folder to write (default schemas/json in the checkout).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Only check that the files are up to date.")] = False,
) -> None:
    """Write the JSON Schema of every event to schemas/json/<EventName>.v<version>.json."""
    from schemas.export import JSON_SCHEMA_DIR, render_json_schemas, write_json_schemas

    folder = out or JSON_SCHEMA_DIR
    if check:
        stale = [name for name, text in render_json_schemas().items()
                 if not (folder / name).exists() or (folder / name).read_text(encoding="utf-8") != text]
        if stale:
            fail(f"out of date in {folder}: {', '.join(stale)}; run \"learnscore schemas export\"")
        typer.echo(f"{folder}: up to date")
        return
    for path in write_json_schemas(folder):
        typer.echo(str(path))


def run() -> None:
    """Console entry point: clear one-line errors for the failures a user can meet."""
    from learnscore.kafka_io import BrokerUnreachable
    from learnscore.stack.processes import StackError

    try:
        app()
    except (ConfigError, StackError, BrokerUnreachable) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
