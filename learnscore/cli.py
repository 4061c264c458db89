"""The ``learnscore`` command line: reads options, loads config once, calls the jobs.

Each sub-command is a thin shell over a plain function in the package that owns the work.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer

from learnscore.core.config import Config, ConfigError, load_config

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
bench_app = typer.Typer(help="Benchmarks; figures go to bench/results/*.json.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


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


def get_config(kafka_role: str | None = None) -> Config:
    """The configuration of this command; ``kafka_role``: the ``kafka.principals`` user it logs in
    to Kafka as when ``kafka.sasl_username`` is unset (conf/secure.yaml)."""
    if _state.config is None:
        _state.config = load_config(_state.env)
        _configure_alerts(_state.config)
    return _state.config.as_kafka_role(kafka_role) if kafka_role else _state.config


def _configure_alerts(config: Config) -> None:
    """Alerts of this process go where config says; queued ones get 5 s to leave at exit."""
    import atexit

    from learnscore.core.alerts import configure_alerts

    dispatcher = configure_alerts(config)
    atexit.register(dispatcher.close, 5.0)


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def spark_session(app_name: str):
    """A SparkSession for one command, stopped when the command ends (also on an error)."""
    from learnscore.core.spark import create_spark_session

    spark = create_spark_session(get_config(), app_name=app_name)
    try:
        yield spark
    finally:
        spark.stop()


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
    """Resolve the JVM jars (Delta, Spark Kafka connector, Kafka broker) with Maven.

    Then build the Spark driver's class archive (once per JDK, PySpark and jar set), which makes
    every later Spark process start faster.
    """
    from learnscore.core.class_archive import build_archive
    from learnscore.core.jars import resolve_jars

    config = get_config()
    for name, files in resolve_jars(config, force=force).items():
        typer.echo(f"{name}: {len(files)} jars in {files[0].parent}")
    archive = build_archive(config, force=force)
    if archive is not None:
        typer.echo(f"spark driver class archive: {archive}")


# -- stack ------------------------------------------------------------------------------------
@stack_app.command("up")
def stack_up(
    mlflow_ui: Annotated[bool, typer.Option("--mlflow-ui", help="Also start the MLflow UI server.")] = False,
) -> None:
    """Start the local Kafka broker (KRaft) and prepare the embedded MLflow store."""
    from learnscore.core.config import Secrets
    from learnscore.core.jars import resolve_jars
    from learnscore.core.kafka_io import create_topics
    from learnscore.core.tracking import prepare_store
    from learnscore.schemas.topics import ALL_TOPICS
    from learnscore.stack.kafka_broker import KafkaBroker
    from learnscore.stack.mlflow_server import MlflowUi

    config = get_config()
    resolve_jars(config)
    record = KafkaBroker(config).up()
    if config.broker.plaintext_listener:
        create_topics(config, ALL_TOPICS)
    else:  # SASL_SSL only: the stack administers its broker as the broker's own user
        from learnscore.stack.kafka_security import super_user_client

        admin_config, admin_secrets = super_user_client(config)
        create_topics(admin_config, ALL_TOPICS, secrets=admin_secrets)
    if config.broker.acls:
        from learnscore.stack.kafka_acls import ensure_principals

        users = ensure_principals(config)
        typer.echo(f"kafka   users {', '.join(users.values())} with least-privilege ACLs "
                   f"(passwords: $LEARNSCORE_KAFKA_PASSWORD_<ROLE> or {config.state_dir / 'secrets'})")
    typer.echo(f"kafka   ready at {record.endpoint} (pid {record.pid}, log {record.log_file})")
    prepare_store(config)
    typer.echo(f"mlflow  store {config.mlflow.tracking_uri}")
    if mlflow_ui:
        ui = MlflowUi(config).up()
        login = (f"; log in as {config.mlflow.ui_admin_user} with ${Secrets.MLFLOW_ADMIN_PASSWORD}"
                 + (f" (kept in {config.state_dir / 'secrets'})" if config.env == "local" else "")
                 if config.mlflow_ui_login else "; no login (mlflow.ui_login: false)")
        typer.echo(f"mlflow  ui at {ui.endpoint} (pid {ui.pid}){login}")


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
            if status.get("login") is not None:
                extra += " (login required)" if status["login"] else " (no login)"
            typer.echo(f"{status['service']:<10} running  pid {status['pid']:<8} {status['listens']}{extra}")
        else:
            typer.echo(f"{status['service']:<10} stopped")
    from learnscore.core.endpoints import announced_endpoints

    for endpoint in announced_endpoints(config):
        typer.echo(f"{endpoint['name']:<10} running  pid {endpoint['pid']:<8} {endpoint['url']}")
    typer.echo(f"{'state':<10} {config.state_dir}")


@monitor_app.command("drift")
def monitor_drift(
    window: Annotated[str, typer.Option(help="Window length, e.g. 1h, 15m, 1d.")] = "1h",
    windows: Annotated[int, typer.Option(min=1, help="How many complete windows to report, newest last.")] = 24,
) -> None:
    """Drift metrics (PSI, KS, Jensen-Shannon) per feature and segment into ops.drift_metrics."""
    from learnscore.batch.drift_report import DriftReportError, run_drift_report
    from learnscore.core.durations import parse_duration
    from learnscore.core.tracking import use_mlflow

    config = get_config()
    try:
        length = timedelta(seconds=parse_duration(window))
    except ValueError as exc:
        fail(f"--window: {exc}")
    use_mlflow(config)
    with spark_session("learnscore-drift-report") as spark:
        try:
            summary = run_drift_report(spark, config, window=length, windows=windows)
        except DriftReportError as exc:
            fail(str(exc))
    typer.echo(f"baseline: {summary.baseline.how}")
    typer.echo(f"{summary.rows} rows into ops.drift_metrics for {len(summary.window_starts)} "
               f"windows from {summary.window_starts[0].isoformat()} "
               f"({summary.cells_suppressed} small cells left out)")


@monitor_app.command("performance")
def monitor_performance(
    window: Annotated[str, typer.Option(help="Window length, e.g. 1h, 15m, 1d.")] = "1h",
    windows: Annotated[int, typer.Option(min=1, help="How many complete windows to report, newest last.")] = 24,
    until: Annotated[Optional[str], typer.Option(help="Report the windows complete at this time (RFC 3339 or date; default now), to fill in the past.")] = None,
) -> None:
    """Performance per model version, segment and window, estimated from the predictions before
    their outcomes arrive (CBPE, DLE) and realized once they did, into ops.estimated_performance."""
    from learnscore.batch.estimate_performance import PerformanceReportError, run_performance_report, summary_lines
    from learnscore.core.durations import parse_duration

    config = get_config()
    try:
        length = timedelta(seconds=parse_duration(window))
    except ValueError as exc:
        fail(f"--window: {exc}")
    try:
        summary = run_performance_report(config, window=length, windows=windows, now=_parse_time(until, "--until"))
    except PerformanceReportError as exc:
        fail(str(exc))
    for line in summary_lines(summary):
        typer.echo(line)
    segments = {row["segment"] for row in summary.rows}
    typer.echo(f"{len(summary.rows)} rows into ops.estimated_performance ({len(segments)} segments incl. "
               f"'all') for {len(summary.window_starts)} windows from {summary.window_starts[0].isoformat()}"
               + (f"; {len(summary.alerts)} below a floor (alerted)" if summary.alerts else ""))


# -- bench ------------------------------------------------------------------------------------
@bench_app.command("estimate")
def bench_estimate(
    learners: Annotated[int, typer.Option(help="Simulated learners the model is fitted on.")] = 20_000,
    reference: Annotated[int, typer.Option(help="Labelled reference rows the estimators are fitted on.")] = 10_000,
    window_rows: Annotated[int, typer.Option(help="Submissions per window.")] = 5_000,
    windows: Annotated[int, typer.Option(min=1, help="Windows per scenario.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the simulated history and windows.")] = 11,
    output: Annotated[Path, typer.Option(help="Where the JSON goes.")] = Path("bench/results/estimate.json"),
) -> None:
    """|estimated − realized| accuracy, macro-F1 and MAE per drift scenario (no Spark, no broker)."""
    import json

    from learnscore.bench.estimate import run_estimate_bench

    result = run_estimate_bench(get_config(), history_learners=learners, reference_rows=reference,
                                window_rows=window_rows, windows=windows, seed=seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    typer.echo(f"{'scenario':<26} {'|err| F1':>9} {'|err| acc':>9} {'|err| MAE':>9}   estimate moved / realized moved (F1)")
    for name, entry in result["scenarios"].items():
        typer.echo(f"{name:<26} {entry['mean_abs_error_macro_f1']:>9.4f} {entry['mean_abs_error_accuracy']:>9.4f} "
                   f"{entry['mean_abs_error_mae']:>9.3f}   {entry['estimate_moved_macro_f1']:+.3f} / "
                   f"{entry['realized_moved_macro_f1']:+.3f}")
    typer.echo(f"goal |err| macro-F1 <= {result['goal']['stationary_macro_f1_abs_error_max']} on stationary data: "
               f"{'met' if result['meets_goal'] else 'NOT met'}; written to {output}")


@bench_app.command("psychometrics")
def bench_psychometrics(
    stationary: Annotated[int, typer.Option(help="Submissions of the stationary stream (false flags).")] = 200_000,
    onset: Annotated[int, typer.Option(help="Submission at which each scenario starts.")] = 20_000,
    after: Annotated[int, typer.Option(help="Submissions watched after the onset.")] = 40_000,
    batch: Annotated[int, typer.Option(min=10, help="Submissions per micro-batch (the windows: psychometrics.item_* in the config).")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the simulated history and streams.")] = 11,
    output: Annotated[Path, typer.Option(help="Where the JSON goes.")] = Path("bench/results/psychometrics.json"),
) -> None:
    """Rapid guessing, item drift and leaked items: detection delay per scenario, false flags on a stationary stream (no Spark, no broker)."""
    import json

    from learnscore.bench.psychometrics import run_psychometrics_bench

    result = run_psychometrics_bench(get_config(), stationary=stationary, onset=onset, after=after,
                                     batch=batch, seed=seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    calm = result["stationary"]
    typer.echo(f"stationary: {len(calm['items_flagged'])} items flagged, {len(calm['effort_events'])} effort "
               f"events, {calm['low_effort_submissions']} "
               f"low-effort submissions in {calm['submissions']:,} (largest |z| {calm['max_abs_z']}, "
               f"limit {calm['z_limits'][0]})")
    for name, entry in result["scenarios"].items():
        found = (f"detected {entry['delay_submissions']:,} submissions after the onset"
                 if entry["detected"] else "NOT detected")
        items = (f"; items flagged {entry['true_flags']}/{entry['items_changed']} changed, "
                 f"{len(entry['false_flags'])} false" if "items_changed" in entry else "")
        typer.echo(f"{name}: {found}{items}")
    typer.echo(f"goal (0 items, <= 1 low-effort per 100,000 on stationary data): "
               f"{'met' if result['meets_goal'] else 'NOT met'}; written to {output}")


def _scenarios_of(end_to_end: dict | None) -> dict:
    """``end_to_end`` of drift.json by scenario (a file from before scenarios held one run)."""
    if not end_to_end:
        return {}
    return {end_to_end["scenario"]: end_to_end} if "scenario" in end_to_end else dict(end_to_end)


@bench_app.command("drift")
def bench_drift(
    stationary: Annotated[int, typer.Option(help="Submissions of the stationary stream (false alarms).")] = 1_000_000,
    onset: Annotated[int, typer.Option(help="Submission at which each scenario starts.")] = 30_000,
    scenario: Annotated[Optional[list[str]], typer.Option(help="Scenarios to time (default: all, the psychometric ones too); repeatable.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated history and streams.")] = 11,
    e2e: Annotated[bool, typer.Option("--e2e", help="Instead: onset → new production version scoring, with the scorer, the worker and the broker running (needs `learnscore stack up`); added to the JSON.")] = False,
    output: Annotated[str, typer.Option(help="Where the JSON goes.")] = "bench/results/drift.json",
) -> None:
    """False retrain requests on a stationary stream and detection delay per drift scenario; the
    psychometric watchers' false flags and delays (rapid-guessing, item-leak, item-difficulty-drift)."""
    import json

    from learnscore.bench.drift import SCENARIOS, run_drift_bench

    path = Path(output)
    if e2e:
        from learnscore.bench.drift_loop import measure_onset_to_production

        for name in scenario or ["concept-shift"]:
            if name not in SCENARIOS:
                fail(f"--e2e runs a model scenario; {name!r} is not one of {', '.join(SCENARIOS)}")
        for name in scenario or ["concept-shift"]:  # one run each; every finished one is kept
            figures = measure_onset_to_production(get_config(), scenario=name)
            result = json.loads(path.read_text()) if path.exists() else {"benchmark": "drift"}
            result["end_to_end"] = {**_scenarios_of(result.get("end_to_end")), name: figures}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2, default=str) + "\n")
            quality = figures.get("retrained_quality") or {}
            typer.echo(f"{name}: onset → new production version scoring: "
                       f"{figures['onset_to_new_production_scoring_s']} s (target 600 s); retrained version "
                       f"R² {quality.get('retrained', {}).get('r2')}, macro-F1 "
                       f"{quality.get('retrained', {}).get('macro_f1')}, share of the post-shift oracle's R² "
                       f"{quality.get('r2_share_of_oracle')} (goal 0.9); written to {path}")
        return
    from learnscore.simulator.scenarios import PSYCHOMETRIC

    unknown = sorted(set(scenario or ()) - set(SCENARIOS) - set(PSYCHOMETRIC))
    if unknown:
        fail(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join((*SCENARIOS, *PSYCHOMETRIC))}")
    model_scenarios = tuple(s for s in scenario or SCENARIOS if s in SCENARIOS)
    result = run_drift_bench(get_config(), stationary_submissions=stationary if model_scenarios or not scenario else 0,
                             onset=onset, seed=seed, scenarios=model_scenarios)
    psychometric = tuple(s for s in scenario or PSYCHOMETRIC if s in PSYCHOMETRIC)
    if psychometric:  # the item and effort watchers: their own stationary run and scenarios
        from learnscore.bench.psychometrics import run_psychometrics_bench

        result["psychometrics"] = run_psychometrics_bench(get_config(), seed=seed, scenarios=psychometric)
    if path.exists():  # keep an end-to-end figure measured earlier
        previous = json.loads(path.read_text())
        if "end_to_end" in previous:
            result["end_to_end"] = previous["end_to_end"]
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
    if "psychometrics" in result:
        calm = result["psychometrics"]["stationary"]
        typer.echo(f"psychometrics, stationary: {len(calm['items_flagged'])} items and "
                   f"{len(calm['effort_events'])} segments flagged, {calm['low_effort_submissions']} low-effort "
                   f"submissions in {calm['submissions']:,}")
        for name, entry in result["psychometrics"]["scenarios"].items():
            typer.echo(f"{name}: " + (f"{entry['delay_submissions']:,} submissions from onset to the first flag"
                                      if entry["detected"] else "not detected"))
    typer.echo(f"written to {path}")


# -- drift → retrain ------------------------------------------------------------------------
@app.command("retrain-worker")
def retrain_worker(
    every: Annotated[Optional[str], typer.Option(help="Also retrain on a schedule when no model was trained for this long, e.g. 24h.")] = None,
    policy: Annotated[Optional[str], typer.Option(help="auto: gates then production; manual: leave it as staging (default: retrain.policy).")] = None,
    trainer: Annotated[str, typer.Option(help="Training function, module:function.")] = "learnscore.batch.train:train_model",
    promoter: Annotated[str, typer.Option(help="Promotion function, module:function.")] = "learnscore.registry.promote:promote",
    max_runs: Annotated[Optional[int], typer.Option(help="Stop after this many runs.")] = None,
    idle_exit: Annotated[Optional[float], typer.Option(help="Stop after this many seconds without requests.")] = None,
    guard: Annotated[bool, typer.Option("--guard/--no-guard", help="Also run the rollback guard (guard.policy) beside the runs.")] = True,
    estimate: Annotated[bool, typer.Option("--estimate/--no-estimate", help="Also estimate every version's performance every estimation.interval_seconds (what `monitor performance` does, on the windows that changed).")] = True,
    on_final_failure: Annotated[Optional[str], typer.Option(help="Also called with the run that failed for good (which is alerted in any case), module:function.")] = None,
) -> None:
    """Consume model.retrain-requests: one recorded training run per burst of requests."""
    from learnscore.batch.retrain_worker import run_retrain_worker

    if policy not in (None, "auto", "manual"):
        fail(f"--policy must be auto or manual, got {policy!r}")
    try:
        made = run_retrain_worker(get_config(kafka_role="retrain_worker"), every=every, policy=policy, trainer=trainer,
                                  promoter=promoter, max_runs=max_runs,
                                  idle_exit_seconds=idle_exit, watch=guard, estimate=estimate,
                                  on_final_failure=on_final_failure)
    except ValueError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("retrain worker stopped (an unfinished run is redone on the next start)")
        return
    for run in made:
        typer.echo(f"run {run.run_id}: {run.status} (trigger {run.trigger}, version "
                   f"{run.model_version or '-'}, promoted {bool(run.promoted)})")


@app.command("guard")
def guard_command(
    once: Annotated[bool, typer.Option("--once", help="Check once and exit (default: every guard.check_seconds until Ctrl-C).")] = False,
    policy: Annotated[Optional[str], typer.Option(help="auto: roll back | alert-only: alert only | off (default: guard.policy).")] = None,
) -> None:
    """Watch the last promotion: roll back a production version that is worse on live evidence."""
    import json

    from learnscore.core.tracking import use_mlflow
    from learnscore.registry.guard import describe, run_guard

    if policy not in (None, "auto", "alert-only", "off"):
        fail(f"--policy must be auto, alert-only or off, got {policy!r}")
    config = get_config(kafka_role="retrain_worker")
    use_mlflow(config)

    def show(decision) -> None:
        typer.echo(json.dumps(describe(decision), sort_keys=True))

    if once:
        from learnscore.registry.access import RegistryUnreachable
        from learnscore.registry.guard import RollbackGuard

        try:
            show(RollbackGuard(config, policy=policy).check())
        except RegistryUnreachable as exc:
            fail(str(exc))
        return
    try:
        run_guard(config, policy=policy, on_decision=show)
    except KeyboardInterrupt:
        typer.echo("guard stopped")


# -- stream -----------------------------------------------------------------------------------
stream_app = typer.Typer(help="The streaming scorer (Kafka → Delta bronze/silver/gold).", no_args_is_help=True)
app.add_typer(stream_app, name="stream")


@stream_app.command("start")
def stream_start(
    until_idle: Annotated[Optional[float], typer.Option(
        "--until-idle", min=0, help="Stop after this many seconds without new events (and nothing "
                                    "left that could be scored).")] = None,
    max_batches: Annotated[Optional[int], typer.Option(
        "--max-batches", min=1, help="Stop after this many micro-batches of the scoring query (the other "
                                    "queries then land what it published).")] = None,
    queries: Annotated[Optional[str], typer.Option(
        "--queries", help="Run only these queries, comma-separated, of score, land, gold, pairs (default "
                          "streaming.queries: all). E.g. --queries score in one process and --queries "
                          "land,gold,pairs in another with LEARNSCORE__STREAMING__NICENESS=10.")] = None,
) -> None:
    """Run the streaming scorer until stopped (Ctrl-C / SIGTERM finish the micro-batch in flight)."""
    from learnscore.streaming.job import QUERIES, ScorerFailed, count_words, run_scorer
    from learnscore.streaming.lease import LeaseHeld

    config = get_config(kafka_role="scorer")
    if queries is not None:
        chosen = [name.strip() for name in queries.split(",") if name.strip()]
        unknown = sorted(set(chosen) - set(QUERIES))
        if unknown or not chosen:
            fail(f"--queries {queries!r}: {', '.join(unknown) or 'no query'} is not one of {', '.join(QUERIES)}; "
                 f"e.g. --queries score, or --queries land,gold,pairs")
        config = config.model_copy(update={"streaming": config.streaming.model_copy(update={"queries": chosen})})
    try:
        summary = run_scorer(config, until_idle_s=until_idle, max_batches=max_batches)
    except LeaseHeld as exc:
        fail(str(exc))
    except ScorerFailed as exc:
        fail(f"{exc}. Fix the cause and start it again: it resumes from its checkpoint.")
    typer.echo(f"scorer stopped ({summary.stopped_because}) after {summary.batches} micro-batches; "
               f"{count_words(summary.pending_unscored)} submissions wait to be scored")


# -- serving, dashboard, BI -----------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Listen address (default serving.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default serving.port).")] = None,
) -> None:
    """Run the REST scoring endpoint (POST /v1/score) for the `production` model."""
    from learnscore.serving.server import run_server

    run_server(get_config(kafka_role="endpoint"), host=host, port=port)


@app.command()
def dashboard(
    host: Annotated[Optional[str], typer.Option(help="Listen address (default dashboard.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default dashboard.port).")] = None,
) -> None:
    """Run the monitoring dashboard over the gold and ops Delta tables."""
    from learnscore.monitoring.server import run_dashboard

    run_dashboard(get_config(), host=host, port=port)


bi_app = typer.Typer(help="BI access: the Spark Thrift (JDBC) server and the BI aggregates.",
                     invoke_without_command=True)
app.add_typer(bi_app, name="bi")


@bi_app.callback()
def bi(ctx: typer.Context,
       port: Annotated[Optional[int], typer.Option(help="Thrift port (default bi.thrift_port).")] = None) -> None:
    """Without a sub-command: start the Thrift (JDBC) server over gold.*, silver.*, ops.* tables."""
    if ctx.invoked_subcommand is not None:
        return
    from learnscore.bi.thrift_server import run_thrift_server

    run_thrift_server(get_config(), port=port)


@bi_app.command("refresh")
def bi_refresh() -> None:
    """Rebuild gold.daily_summary from gold.predictions and gold.prediction_outcomes (idempotent)."""
    from learnscore.bi.daily_summary import refresh_daily_summary

    config = get_config()
    with spark_session("learnscore-bi-refresh") as spark:
        written = refresh_daily_summary(spark, config)
    typer.echo(f"gold.daily_summary: {written} cells (cells under "
               f"{config.privacy.min_cell_learners} learners suppressed)")


lake_app = typer.Typer(help="Upkeep of the Delta tables under lake.root.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")


@lake_app.command("vacuum")
def lake_vacuum() -> None:
    """Delete the files the stream's compactions and MERGEs replaced, once they are older than
    each table's delta.deletedFileRetentionDuration (a week unless set); time travel reaches
    back that far afterwards."""
    from learnscore.core.lake import vacuum_tables

    with spark_session("learnscore-lake-vacuum") as spark:
        deleted = vacuum_tables(spark, get_config())
    for name, files in deleted.items():
        typer.echo(f"{name:<28} {files} files deleted")
    typer.echo(f"{sum(deleted.values())} replaced files deleted from {len(deleted)} tables")




items_app = typer.Typer(help="Items the stream flagged (item drift, leaked items) and their review.",
                        no_args_is_help=True)
app.add_typer(items_app, name="items")


@items_app.command("list")
def items_list(
    all_: Annotated[bool, typer.Option("--all", help="Also the items a reviewer cleared.")] = False,
) -> None:
    """The flagged items with their evidence (from ops.item_flags)."""
    from learnscore.streaming.drift.items import item_flags

    config = get_config()
    flags = item_flags(config, include_cleared=all_)
    if flags.empty:
        typer.echo("no item is flagged" + ("" if all_ else " (--all shows cleared ones)"))
        return
    for row in flags.itertuples():
        reviewed = f"  cleared by {row.reviewed_by} at {row.reviewed_at:%Y-%m-%d %H:%M}" if row.status == "cleared" else ""
        typer.echo(f"{row.item_id:<28} {row.flag:<17} {row.direction or '-':<7} {row.flagged_at:%Y-%m-%d %H:%M} "
                   f"v{row.model_version}  {row.evidence}{reviewed}")
    if config.psychometrics.exclude_compromised_items:
        typer.echo("answers to flagged item_compromised items are left out of scoring until cleared")


@items_app.command("clear")
def items_clear(
    item_id: Annotated[str, typer.Argument(help="The item to mark reviewed.")],
    by: Annotated[Optional[str], typer.Option(help="Who reviewed it (default: the login name).")] = None,
) -> None:
    """Mark a flagged item reviewed: its flag is kept as history, and it is scored again."""
    import getpass

    from learnscore.streaming.drift.items import clear_item_flag

    if not clear_item_flag(get_config(), item_id, by or getpass.getuser()):
        fail(f"item {item_id!r} is not flagged; `learnscore items list` shows the flagged items")
    typer.echo(f"cleared {item_id}")


@bench_app.command("serve")
def bench_serve(
    rate: Annotated[float, typer.Option(help="Steady request rate for the latency figures.")] = 100.0,
    seconds: Annotated[float, typer.Option(help="Length of each phase.")] = 20.0,
    connections: Annotated[int, typer.Option(help="Concurrent connections for max_rps.")] = 32,
    max_load: Annotated[Optional[float], typer.Option(help="First wait (up to --max-wait) for the 1-minute load average to fall to this.")] = None,
    max_wait: Annotated[float, typer.Option(help="Seconds to wait for --max-load at most.")] = 600.0,
    output: Annotated[Path, typer.Option(help="Where the JSON goes.")] = Path("bench/results/serve.json"),
) -> None:
    """Latency at a steady rate and max throughput of the endpoint on loopback."""
    from learnscore.bench.serve import run_serve_benchmark

    result = run_serve_benchmark(get_config(), rate=rate, seconds=seconds, connections=connections,
                                 results=output, max_load=max_load, max_wait_s=max_wait)
    for key in ("p50_ms", "p99_ms", "max_rps"):
        typer.echo(f"{key:<8} {result[key]}")
    typer.echo(f"load     {result['load_average']}")
    typer.echo(f"written  {result['written_to']}")


@bench_app.command("stream")
def bench_stream(
    events: Annotated[int, typer.Option(min=1000, help="Backlog of submissions to drain.")] = 200_000,
    rate: Annotated[Optional[list[float]], typer.Option(help="Live submissions per second for a latency run; repeatable (default 500 and 2000).")] = None,
    latency_seconds: Annotated[float, typer.Option(min=5, help="Length of each latency run.")] = 60.0,
    table_rows: Annotated[str, typer.Option(help="Rows landed before the batch-cost runs, comma-separated.")] = "0,1000000,10000000",
    output: Annotated[str, typer.Option(help="Where the JSON goes.")] = "bench/results/stream.json",
    live_outcomes: Annotated[bool, typer.Option(
        help="Send outcomes during the latency runs (--no-live-outcomes: submissions only).")] = True,
    shadow: Annotated[bool, typer.Option(help="Also score a challenger (staging) in the shadow query.")] = False,
    split: Annotated[Optional[str], typer.Option(
        help="Two processes: these queries here (e.g. score or score,gold), the others in a second process "
             "at niceness +10 (stream start --queries).")] = None,
) -> None:
    """Score and gold latency at live rates, drain throughput through every table, parse-only and
    raw-model speed, and a micro-batch's cost as the tables grow."""
    from learnscore.bench.stream import run_stream_benchmark

    rows = tuple(int(part) for part in table_rows.split(",") if part.strip())
    result = run_stream_benchmark(get_config(), events=events, rates=tuple(rate or (500.0, 2000.0)),
                                  latency_seconds=latency_seconds, output=output, live_outcomes=live_outcomes,
                                  table_rows=rows, shadow=shadow,
                                  split=tuple(q.strip() for q in (split or "").split(",") if q.strip()))
    for key in ("throughput_eps", "parse_only_eps", "ratio_to_parse_only", "raw_model_eps",
                "score_latency_p50_s", "score_latency_p95_s", "score_latency_p99_s",
                "gold_latency_p50_s", "gold_latency_p95_s", "gold_latency_p99_s"):
        typer.echo(f"{key:<22} {result.get(key)}")
    for run in result.get("latency_runs", []):
        typer.echo(f"at {run['rate']:g}/s: score p95 {run['score_latency_p95_s']} s, gold p95 {run['gold_latency_p95_s']} s")
    for cost in result.get("batch_cost_by_table_rows", []):
        typer.echo(f"{cost['rows_landed']:>10,} rows landed: query seconds {cost['batch_seconds_total']}")
    typer.echo(f"written to {output}")


@bench_app.command("import")
def bench_import(
    rows: Annotated[int, typer.Option(min=1000, help="Answer rows of the long export to import.")] = 2_000_000,
    file_format: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    workdir: Annotated[Optional[Path], typer.Option(help="Where the export and the benchmark's lakes go (default <state_dir>/bench/import; the export is reused).")] = None,
    mapping: Annotated[Optional[Path], typer.Option(help="Mapping file (default examples/mappings/warehouse-long.yaml of the checkout).")] = None,
    output: Annotated[Path, typer.Option(help="Where the JSON goes.")] = Path("bench/results/import.json"),
) -> None:
    """`learnscore import` of a long export: wall time and peak memory of staging alone (--dry-run)
    and of the whole import into an empty lake."""
    from learnscore.bench.import_files import run_import_benchmark

    if file_format not in ("csv", "parquet"):
        fail(f"--format {file_format!r}: use csv or parquet")
    try:
        result = run_import_benchmark(get_config(), rows=rows, file_format=file_format, workdir=workdir,
                                      mapping=mapping, output=output)
    except (FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    file = result["file"]
    typer.echo(f"file    {file['path']}: {file['rows']:,} rows, {file['submissions']:,} submissions, "
               f"{file['bytes'] / 2**20:,.0f} MiB")
    for phase, run in result["runs"].items():
        typer.echo(f"{phase:<7} {run['seconds']:.1f} s, peak RSS {run['peak_python_rss_mib']:,} MiB (Python), "
                   f"{run['peak_tree_rss_mib']:,} MiB (with children); {run['landed'] if run['landed'] is not None else '-'} landed")
    typer.echo(f"written to {output}")


@bench_app.command("validation")
def bench_validation(
    events: Annotated[int, typer.Option(min=1000, help="Simulated submissions to validate.")] = 50_000,
    output: Annotated[Path, typer.Option(help="Where the JSON goes.")] = Path("bench/results/validation.json"),
) -> None:
    """Contract validation speed: raw bytes → verdict, for the same seeded submissions every run."""
    from learnscore.bench.validation import run_validation_benchmark

    result = run_validation_benchmark(events=events, output=output)
    typer.echo(f"validate_bytes  {result['events_per_s']:,.0f} events/s ({result['events']:,} events of "
               f"{result['mean_bytes']:,.0f} bytes; decode only {result['decode_only_events_per_s']:,.0f}/s)")
    typer.echo(f"written to {output}")


@bench_app.command("driver-start")
def bench_driver_start(
    runs: Annotated[int, typer.Option(min=1, help="Fresh drivers per mode (archive, no archive).")] = 3,
    output: Annotated[Path, typer.Option(help="Where the JSON goes.")] = Path("bench/results/driver_start.json"),
) -> None:
    """A fresh Spark driver's start (session, first job, a Delta write and read) with and without
    the class archive `learnscore jars` builds."""
    from learnscore.bench.driver_start import run_driver_start_bench

    try:
        result = run_driver_start_bench(get_config(), runs=runs, output=output)
    except RuntimeError as exc:
        fail(str(exc))
    for mode, figures in result["median"].items():
        typer.echo(f"{mode:<11} " + "  ".join(f"{key} {value}" for key, value in figures.items()))
    typer.echo(f"the archive saves {result['saved_s']} s per driver start; written to {output}")


# -- simulate ---------------------------------------------------------------------------------
def _parse_scenarios(texts: list[str] | None):
    from learnscore.simulator.scenarios import ScenarioError, parse_scenario

    try:
        return tuple(parse_scenario(text) for text in texts or ())
    except ScenarioError as exc:
        fail(str(exc))


def _seconds(text: str, option: str) -> float:
    from learnscore.core.durations import DurationError, parse_duration

    try:
        return parse_duration(text)
    except DurationError as exc:
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

    from learnscore.simulator import settings_from_config
    from learnscore.simulator.stream import StreamOptions, stream_to_kafka

    config = get_config(kafka_role="producer")
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
    import_: Annotated[bool, typer.Option("--import", help="Then import it into silver (as `learnscore import --history FOLDER`).")] = False,
) -> None:
    """Write a historical batch (submissions, outcomes, truth) for the first training: then
    `learnscore import --history FOLDER` (or --import here) and `learnscore train --initial`."""
    from datetime import timezone

    from learnscore.schemas.contract import parse_timestamp
    from learnscore.simulator import settings_from_config
    from learnscore.simulator.history import HistoryOptions, history_dir, write_history

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
    if import_:
        from learnscore.batch.importer import ImportProgress, import_history

        with spark_session("learnscore-import") as spark:
            result = import_history(spark, config, folder, progress=ImportProgress())
        for line in result.lines():
            typer.echo(line)
    else:
        typer.echo(f"next: learnscore import --history {folder}")


@simulate_app.command("export")
def simulate_export(
    out: Annotated[Path, typer.Option(help="Folder to write answers.<format> and outcomes.<format> into.")],
    history: Annotated[Optional[Path], typer.Option(help="The `simulate history` folder to export (default <state_dir>/simulator/history).")] = None,
    file_format: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    max_rows: Annotated[Optional[int], typer.Option(min=1, help="Stop after the submission that reaches this many answer rows.")] = None,
) -> None:
    """Write a simulated history as a warehouse would export it (one row per answered item, its own
    column names, seconds, subjects spelt out) — the sample input of `learnscore import` with
    examples/mappings/warehouse-long.yaml."""
    from learnscore.batch.history import HistoryNotFound, history_files
    from learnscore.simulator.export import write_export
    from learnscore.simulator.history import history_dir

    if file_format not in ("csv", "parquet"):
        fail(f"--format {file_format!r}: use csv or parquet")
    folder = history or history_dir(get_config())
    try:
        history_files(folder)
    except HistoryNotFound as exc:
        fail(str(exc))
    written = write_export(folder, out, file_format=file_format, max_rows=max_rows)  # type: ignore[arg-type]
    typer.echo(f"wrote {written['rows']:,} answer rows of {written['submissions']:,} submissions to "
               f"{written['answers']} and their outcomes to {written['outcomes']}")
    typer.echo(f"next: learnscore import {written['answers']} --outcomes {written['outcomes']} "
               f"--mapping examples/mappings/warehouse-long.yaml")


# -- import -----------------------------------------------------------------------------------
@app.command("import")
def import_data(
    submissions: Annotated[Optional[Path], typer.Argument(help="The submissions file: CSV, Parquet or JSON lines, one row per answered item or per submission (as the mapping says).")] = None,
    outcomes: Annotated[Optional[Path], typer.Option(help="The outcomes file (optional).")] = None,
    mapping: Annotated[Optional[Path], typer.Option(help="The mapping file (YAML): which column holds what, units, defaults; see examples/mappings/.")] = None,
    history: Annotated[Optional[Path], typer.Option(help="Instead of a file and a mapping: a `learnscore simulate history` folder (events in the Kafka contract).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and validate everything and report; write nothing (outcomes are not checked against silver).")] = False,
    report: Annotated[Optional[Path], typer.Option(help="Also write the summary as JSON to this file.")] = None,
    chunk_rows: Annotated[int, typer.Option(min=1000, help="Rows read at a time.")] = 100_000,
    partition_rows: Annotated[int, typer.Option(min=1000, help="Rows validated at a time (the file is split into partitions of about this many rows).")] = 500_000,
    staging_dir: Annotated[Optional[Path], typer.Option(help="Scratch folder Spark can read (default <state_dir>/import); removed afterwards.")] = None,
) -> None:
    """Import historical submissions (and outcomes) from files into silver, validated with the
    stream's contract; refused rows go to silver.quarantine with their row numbers. Importing
    the same files again changes nothing."""
    import json

    from learnscore.batch.history import HistoryNotFound, history_files
    from learnscore.batch.import_mapping import MappingError, kafka_contract_mapping, load_mapping
    from learnscore.batch.import_read import InputFileError
    from learnscore.batch.importer import ImportProgress, ImportRequest, dry_run_report, land_import, staged_import

    config = get_config()
    if (history is None) == (submissions is None):
        fail("give a submissions file with --mapping, or --history FOLDER (a `learnscore simulate history` folder)")
    try:
        if history is not None:
            files = history_files(history)
            request = ImportRequest(files["submissions"], kafka_contract_mapping(), files["outcomes"])
        else:
            if mapping is None:
                fail("--mapping is needed with a submissions file: it says which column holds what "
                     "(start from examples/mappings/warehouse-long.yaml)")
            request = ImportRequest(submissions, load_mapping(mapping), outcomes)
        with staged_import(config, request, staging_dir=staging_dir, chunk_rows=chunk_rows,
                           partition_rows=partition_rows, progress=ImportProgress()) as staged:
            if dry_run:
                result = dry_run_report(staged)
            else:
                with spark_session("learnscore-import") as spark:
                    result = land_import(spark, config, staged)
    except (MappingError, InputFileError, HistoryNotFound) as exc:
        fail(f"{exc}\nNothing was written.")
    for line in result.lines():
        typer.echo(line)
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        typer.echo(f"summary written to {report}")


# -- schemas ----------------------------------------------------------------------------------
@schemas_app.command("export")
def schemas_export(
    out: Annotated[Path, typer.Option(help="Folder to write.")] = Path("schemas/json"),
    check: Annotated[bool, typer.Option("--check", help="Only check that the files are up to date.")] = False,
) -> None:
    """Write the JSON Schema of every event (for the configured domain) to <out>/<EventName>.v<version>.json."""
    from learnscore.schemas.events import contracts_for
    from learnscore.schemas.export import render_json_schemas, write_json_schemas

    folder = out
    events = contracts_for(get_config().domain.contract()).events
    if check:
        stale = [name for name, text in render_json_schemas(events).items()
                 if not (folder / name).exists() or (folder / name).read_text(encoding="utf-8") != text]
        if stale:
            fail(f"out of date in {folder}: {', '.join(stale)}; run \"learnscore schemas export\"")
        typer.echo(f"{folder}: up to date")
        return
    for path in write_json_schemas(folder, events):
        typer.echo(str(path))


# -- model lifecycle --------------------------------------------------------------------------
def _parse_time(value: str | None, option: str):
    from learnscore.schemas.contract import parse_timestamp

    if value is None:
        return None
    moment = parse_timestamp(value) or parse_timestamp(f"{value}T00:00:00Z")
    if moment is None:
        fail(f"{option} {value!r} is not a date (2026-01-31) or an RFC 3339 time (2026-01-31T09:30:00Z)")
    return moment


def _actor() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@app.command()
def train(
    initial: Annotated[bool, typer.Option("--initial", help="The first model: train on what silver holds (imported, streamed or replayed); refuse, writing nothing, while it holds fewer than retrain.min_training_rows submissions with an outcome.")] = False,
    since: Annotated[Optional[str], typer.Option(help="Only submissions at or after this time (RFC 3339 or date).")] = None,
    until: Annotated[Optional[str], typer.Option(help="Only submissions before this time.")] = None,
    submissions_version: Annotated[Optional[int], typer.Option(help="Delta version of silver.submissions (default latest).")] = None,
    outcomes_version: Annotated[Optional[int], typer.Option(help="Delta version of silver.outcomes (default latest).")] = None,
    history_dir: Annotated[Optional[str], typer.Option(help="A `simulate history` folder whose truth.parquet gives the oracle metrics (default <state_dir>/simulator/history; real data has no truth).")] = None,
    trigger: Annotated[str, typer.Option(help="Why: manual, drift or schedule (tagged on the version).")] = "manual",
    request_id: Annotated[Optional[str], typer.Option(help="The RetrainRequested event id, if any.")] = None,
) -> None:
    """Train a model on silver data at pinned Delta versions; register it as `staging`."""
    from learnscore.batch.history import default_history_dir
    from learnscore.batch.train import TrainingDataError, require_initial_training_data, train_model

    config = get_config()
    folder = history_dir or str(default_history_dir(config))
    with spark_session("learnscore-train") as spark:
        try:
            if initial:
                labelled = require_initial_training_data(spark, config)
                typer.echo(f"silver   {labelled:,} submissions with an observed outcome")
            result = train_model(spark, config, submissions_version=submissions_version,
                                 outcomes_version=outcomes_version, since=_parse_time(since, "--since"),
                                 until=_parse_time(until, "--until"), trigger=trigger, request_id=request_id,
                                 actor=_actor(), history_dir=folder)
        except TrainingDataError as exc:
            fail(str(exc))
    m = result.metrics
    typer.echo(f"version  {config.mlflow.model_name} v{result.version} → staging (run {result.run_id})")
    typer.echo("data     " + ", ".join(f"{k}@v{v}" for k, v in result.data_versions.items())
               + f"; {result.rows_train} train / {result.rows_holdout} holdout rows")
    typer.echo(f"holdout  MAE {m['holdout_mae']:.2f}  RMSE {m['holdout_rmse']:.2f}  R² {m['holdout_r2']:.3f}  "
               f"accuracy {m['holdout_accuracy']:.3f}  macro-F1 {m['holdout_macro_f1']:.3f}  "
               f"QWK {m['holdout_qwk']:.3f}  Brier {m['holdout_brier']:.3f}  ECE {m['holdout_ece']:.3f}")
    typer.echo(f"baseline MAE {m['baseline_mae']:.2f}  R² {m['baseline_r2']:.3f}  macro-F1 {m['baseline_macro_f1']:.3f}")
    if "oracle_r2" in m:
        typer.echo(f"oracle   MAE {m['oracle_mae']:.2f}  R² {m['oracle_r2']:.3f}  macro-F1 {m['oracle_macro_f1']:.3f}"
                   f"  → model reaches {100 * m['r2_share_of_oracle']:.1f}% of the oracle's R²")
    else:
        typer.echo("oracle   none: no simulator truth covers these rows (imported data has none), so no "
                   "share of the oracle")
    typer.echo(f"time     {result.duration_s:.1f} s (fit {m['fit_seconds']:.1f} s)")


@app.command()
def register(
    model_uri: Annotated[str, typer.Option("--model-uri", help="An MLflow model your own code logged (runs:/<run id>/<name>, models:/<name>/<version>, or a path).")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")] = "registered from the command line",
) -> None:
    """Register a model you trained yourself as a new version (`staging`), after checking it against the scoring contract."""
    from learnscore.core.tracking import use_mlflow
    from learnscore.registry.register import ContractMismatch, register_own_model
    from learnscore.registry.trust import UntrustedModel

    config = get_config()
    use_mlflow(config)
    try:
        version = register_own_model(config, model_uri, actor=_actor(), reason=reason)
    except (ContractMismatch, UntrustedModel) as exc:
        fail(str(exc), code=3)
    typer.echo(f"version  {config.mlflow.model_name} v{version} → staging (from {model_uri})")
    typer.echo(f"next     learnscore promote --version {version}   (runs the gates; production if they pass)")


@app.command()
def promote(
    version: Annotated[Optional[int], typer.Option(help="The version to promote (default: the staging version).")] = None,
    reason: Annotated[str, typer.Option(help="Why (recorded).")] = "promoted from the command line",
    force: Annotated[bool, typer.Option("--force", help="Promote a version the rollback guard blocked (the gates still run).")] = False,
) -> None:
    """Run the gates for a version and, if all pass, make it `production`."""
    from learnscore.core.tracking import use_mlflow
    from learnscore.registry.access import GateRefused, PromotionBlocked
    from learnscore.registry.promote import PromotionError
    from learnscore.registry.promote import promote as promote_version

    config = get_config(kafka_role="retrain_worker")
    use_mlflow(config)
    try:
        move = promote_version(config, version, actor=_actor(), reason=reason, force=force)
    except GateRefused as refused:
        typer.echo(refused.report.summary())
        fail(str(refused), code=3)
    except PromotionBlocked as blocked:
        fail(str(blocked), code=3)
    except PromotionError as exc:
        fail(str(exc))
    typer.echo(move.report.summary())
    typer.echo(f"production → version {move.version} (was {move.previous_version or 'none'})")


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why (recorded).")] = "rolled back from the command line",
) -> None:
    """Move `production` back to the version it had before the current one."""
    from learnscore.core.tracking import use_mlflow
    from learnscore.registry.history import LifecycleHistoryError
    from learnscore.registry.promote import rollback as rollback_production

    config = get_config(kafka_role="retrain_worker")
    use_mlflow(config)
    try:
        move = rollback_production(config, actor=_actor(), reason=reason)
    except LifecycleHistoryError as exc:
        fail(str(exc))
    typer.echo(f"production → version {move.version} (was {move.previous_version})")


registry_app = typer.Typer(help="Upkeep of the model registry.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")


@registry_app.command("upgrade")
def registry_upgrade(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be re-registered.")] = False,
) -> None:
    """Re-register versions logged by an earlier learnscore (before the learnscore.* names); aliases follow."""
    from learnscore.core.tracking import use_mlflow
    from learnscore.registry.upgrade import upgrade_legacy_versions

    config = get_config()
    use_mlflow(config)
    upgrades = upgrade_legacy_versions(config, dry_run=dry_run)
    if not upgrades:
        typer.echo(f"{config.mlflow.model_name}: every version loads with the current code; nothing to do")
    for up in upgrades:
        aliases = ", ".join(up.aliases) or "no aliases"
        target = "would be re-registered" if dry_run else f"→ version {up.new_version}"
        typer.echo(f"version {up.old_version} ({aliases}) {target}")


@app.command()
def models() -> None:
    """List versions, aliases, key metrics and the alias history."""
    from datetime import datetime, timezone

    from learnscore.core.tracking import use_mlflow
    from learnscore.registry.overview import model_overview

    config = get_config()
    use_mlflow(config)
    overview = model_overview(config)
    if not overview["versions"]:
        typer.echo(f"{overview['model_name']}: no versions yet (learnscore train --initial)")
        return
    typer.echo(f"{overview['model_name']}")
    typer.echo(f"  {'version':<8} {'aliases':<20} {'created (UTC)':<17} {'trigger':<9} "
               f"{'MAE':>6} {'R²':>6} {'F1':>6} {'QWK':>6} {'oracle%':>8}")
    for v in overview["versions"]:
        created = datetime.fromtimestamp(v["created"] / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")
        m = v["metrics"]

        def cell(key, width, scale=1.0, digits=3, m=m):
            return f"{m[key] * scale:>{width}.{digits}f}" if key in m else " " * (width - 1) + "-"

        typer.echo(f"  {v['version']:<8} {','.join(v['aliases']) or '-':<20} {created:<17} "
                   f"{v['trigger'] or '-':<9} {cell('holdout_mae', 6, digits=2)} {cell('holdout_r2', 6)} "
                   f"{cell('holdout_macro_f1', 6)} {cell('holdout_qwk', 6)} "
                   f"{cell('r2_share_of_oracle', 8, 100.0, 1)}")
    if any("r2_share_of_oracle" not in v["metrics"] for v in overview["versions"]):
        typer.echo("  oracle% -: no simulator truth for that version's rows (imported data has none)")
    typer.echo("history")
    for event in overview["history"] or [{"event": "(none recorded)"}]:
        if "at" not in event:
            typer.echo(f"  {event['event']}")
            continue
        before = f"v{event['previous_version']}" if event["previous_version"] else "-"
        typer.echo(f"  {event['at']:%Y-%m-%d %H:%M:%S} {event['event']:<16} v{event['version']:<4} "
                   f"{event['alias'] or '':<11} from {before:<5} by {event['actor']}: {event['reason']}")


@bench_app.command("model")
def bench_model(
    rows: Annotated[int, typer.Option(help="Simulated submissions to fit on and to score.")] = 20000,
    spark: Annotated[bool, typer.Option("--spark", help="Also time mlflow.pyfunc.spark_udf end to end.")] = False,
    output: Annotated[Path, typer.Option(help="Where the JSON goes.")] = Path("bench/results/model_scoring.json"),
) -> None:
    """Featurize + predict throughput of the diagnostic model (direct, pyfunc, Spark UDF)."""
    from learnscore.bench.model_scoring import run_model_benchmark

    results = run_model_benchmark(get_config(), train_rows=rows, score_rows=rows, spark=spark, out=output)
    for path in ("direct", "features_only", "pyfunc"):
        for size, rate in results[path].items():
            typer.echo(f"{path:<14} batch {size:>6}: {rate['rows_per_s_wall']:>9,.0f} rows/s wall, "
                       f"{rate['rows_per_s_cpu']:>9,.0f} rows/s per CPU-second")
    typer.echo(f"single row     {results['single_row_ms']} ms")
    if "spark_udf" in results:
        udf = results["spark_udf"]
        typer.echo(f"spark_udf      {udf['rows_per_s_wall']:,.0f} rows/s on {udf['master']} "
                   f"({udf['rows']} rows, {udf['partitions']} partitions)")
    typer.echo(f"load average {results['machine']['load_average']}; written to {output}")


@bench_app.command("all")
def bench_all() -> None:
    """Every benchmark in turn: validation, driver start, model, stream, serve, drift, estimate, psychometrics (stream and serve need `stack up`).

    Each runs with its defaults; a failing one is reported and the others still run.
    """
    failed = []
    for name, run in (("validation", bench_validation), ("driver-start", bench_driver_start),
                      ("model", bench_model), ("stream", bench_stream),
                      ("serve", bench_serve), ("drift", bench_drift), ("estimate", bench_estimate),
                      ("psychometrics", bench_psychometrics)):
        typer.secho(f"== bench {name}", bold=True)
        try:
            run()
        except typer.Exit as exc:
            if exc.exit_code:
                failed.append(name)
        except Exception as exc:
            logging.getLogger(__name__).exception("bench %s failed", name)
            typer.secho(f"bench {name} failed: {exc}", fg=typer.colors.RED, err=True)
            failed.append(name)
    if failed:
        fail(f"benchmarks that did not finish: {', '.join(failed)}; the others wrote bench/results/")
    typer.echo("every benchmark finished; figures in bench/results/")


@app.command()
def demo(
    duration: Annotated[Optional[float], typer.Option(help="Upper bound of the live stream in seconds (default 540, about 10 minutes with the start-up; --fast 600, a bound it reaches only on a busy machine). --fast ends it 5 s after the story is complete; Ctrl-C ends it earlier.")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="The same story compressed to under 3 minutes.")] = False,
    scenario: Annotated[str, typer.Option(help="Drift scenario to inject: concept-shift, weaker-cohort, "
                                               "item-bank-change, response-time-unit-change.")] = "concept-shift",
    drift_after: Annotated[Optional[float], typer.Option(help="Seconds into the live stream when the drift starts.")] = None,
    rate: Annotated[Optional[float], typer.Option(help="Live submissions per second.")] = None,
) -> None:
    """The live demo: stack, first model, scorer, retrain worker, endpoint, dashboard, drift → v2.

    Every run starts from a clean demo state in the state folder (the simulated history is
    reused); every process it starts is stopped at the end, also on Ctrl-C.
    """
    from learnscore.demo import Demo, DemoOptions

    overrides = {key: value for key, value in
                 (("scenario", scenario), ("drift_after_s", drift_after), ("rate", rate),
                  ("duration_s", duration)) if value is not None}
    options = DemoOptions.compressed(**overrides) if fast else DemoOptions(**overrides)
    started = time.monotonic()
    report = Demo(get_config(), options, say=typer.echo).run()
    versions = " → ".join(f"v{v}" for v in report.versions_seen) or "none"
    took = time.monotonic() - started
    logs = get_config().state_dir / "logs"
    if report.interrupted:
        typer.echo(f"demo stopped by request after {took:.0f}s; production versions seen {versions}")
        raise typer.Exit(130)
    if not report.story_complete:
        from learnscore.demo import retrain_summary

        runs = "\n  ".join(retrain_summary(get_config()))
        fail(f"the story did not complete within the live stream ({versions}); see the logs in "
             f"{logs}/ (stream.log, retrain-worker.log). The retrain runs:\n  {runs}")
    typer.echo(f"demo finished in {took:.0f}s: production versions seen {versions}; logs in {logs}/")


def run() -> None:
    """Console entry point: clear one-line errors for the failures a user can meet."""
    from learnscore.core.kafka_io import BrokerUnreachable
    from learnscore.core.ports import PortTaken
    from learnscore.stack.processes import StackError

    try:
        app()
    except (ConfigError, StackError, PortTaken, BrokerUnreachable) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
