"""The ``learnscore`` command line: reads options, loads config once, calls the jobs.

Each sub-command is a thin shell over a plain function in the package that owns the work.
"""

from __future__ import annotations

import logging
import os
import sys
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
