"""The training job: silver data at pinned Delta versions → a registered ``staging`` version.

``train_model`` joins ``silver.submissions`` with ``silver.outcomes`` at pinned versions
(optionally within a submission-time window), featurizes through :mod:`learnscore.model.features`,
holds out the latest submissions by time, fits :class:`learnscore.model.diagnostic.DiagnosticModel`, evaluates
it next to a naive baseline and (when the simulator's truth is at hand) the oracle that knows
each learner's true ability, logs everything to MLflow, and registers the version with the
alias ``staging``. It never touches ``production``: that is ``learnscore.registry.promote``'s job.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from learnscore.batch.history import default_history_dir, read_truth
from learnscore.core.config import Config
from learnscore.core.lake import delta_version
from learnscore.model.diagnostic import DiagnosticModel, model_from_config
from learnscore.model.features import spark_model_input_columns
from learnscore.model.metrics import baseline_metrics, level_metrics, oracle_metrics, prefixed, score_metrics
from learnscore.registry.access import TRAIN_UNTIL_TAG
from learnscore.schemas.events import LEVELS
from learnscore.schemas.tables import OUTCOMES, SUBMISSIONS

log = logging.getLogger(__name__)

MIN_TRAINING_ROWS = 100
LABEL_COLUMNS = ("observed_progress_score", "observed_comprehension_level")
#: What to do when silver holds too little to train on (the commands that bring data in).
BRING_DATA_IN = (
    "Bring labelled history in first:\n"
    "  learnscore import ANSWERS_FILE --outcomes OUTCOMES_FILE --mapping MAPPING.yaml   "
    "(a warehouse export; docs/bring-your-own-data.md)\n"
    "  learnscore simulate history --import                                            "
    "(simulated learners, for a demo)")


class TrainingDataError(ValueError):
    """The data cannot train a model; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    version: str
    metrics: dict[str, float]
    data_versions: dict[str, int]
    rows_train: int
    rows_holdout: int
    duration_s: float
    tags: dict[str, str] = field(default_factory=dict)


def train_model(spark, config: Config, *, submissions_version: int | None = None,
                outcomes_version: int | None = None, since: datetime | None = None,
                until: datetime | None = None, trigger: str = "manual", request_id: str | None = None,
                actor: str = "learnscore train", history_dir: str | Path | None = None,
                before_register: Callable[[], None] | None = None) -> TrainResult:
    """Train, evaluate, log and register one model version (alias ``staging``).

    Versions default to the tables' latest; ``since``/``until`` bound the submissions' event
    time (``until`` exclusive). ``history_dir`` is where the simulator's truth is looked for
    (default ``<state_dir>/simulator/history``) for the oracle comparison. ``before_register``
    is called right before the version is registered and may raise to stop it (the retrain
    worker's lease fence: a worker that lost its lease while fitting registers nothing).
    """
    from learnscore.core.tracking import use_mlflow

    started = time.monotonic()
    _require_broker(config)  # registering ends with a lifecycle event: know now, not after the fit
    use_mlflow(config)
    versions = {
        SUBMISSIONS.name: submissions_version if submissions_version is not None
        else _latest_version(spark, config, SUBMISSIONS.name),
        OUTCOMES.name: outcomes_version if outcomes_version is not None
        else _latest_version(spark, config, OUTCOMES.name),
    }
    log.info("reading labelled submissions at %s", ", ".join(f"{k}@v{v}" for k, v in versions.items()))
    frame = read_labelled_submissions(spark, config, versions, since=since, until=until)
    _check_training_frame(frame, versions, since, until)
    train, holdout = split_by_time(frame, config.model.holdout_fraction)
    log.info("%d labelled submissions: %d to train, %d held out (from %s)", len(frame), len(train),
             len(holdout), holdout["event_time"].min())

    fit_started = time.monotonic()
    model = model_from_config(config.model).fit(train, train["observed_progress_score"],
                                               train["observed_comprehension_level"])
    fit_seconds = time.monotonic() - fit_started
    log.info("fitted in %.1f s; evaluating on the holdout", fit_seconds)
    evaluation = evaluate_model(model, train, holdout, read_truth(history_dir or default_history_dir(config)))
    metrics = {**evaluation.metrics, "fit_seconds": round(fit_seconds, 2)}
    log.info("holdout: MAE %.2f, R² %.3f, macro-F1 %.3f, QWK %.3f (baseline MAE %.2f%s)",
             metrics["holdout_mae"], metrics["holdout_r2"], metrics["holdout_macro_f1"],
             metrics["holdout_qwk"], metrics["baseline_mae"],
             f"; oracle R² {metrics['oracle_r2']:.3f}, share {metrics['r2_share_of_oracle']:.3f}"
             if "oracle_r2" in metrics else "")

    tags = {
        "trigger": trigger,
        "request_id": request_id or "",
        "code_version": code_version(),
        **{f"data.{name}.version": str(version) for name, version in versions.items()},
        "data.since": since.isoformat() if since else "",
        "data.until": until.isoformat() if until else "",
        # The drift monitor judges live errors only on submissions after this: its accuracy on
        # the training rows themselves is in-sample, too good to be a reference.
        TRAIN_UNTIL_TAG: _utc(train["event_time"].max()).isoformat(),
    }
    run_id, model_uri = _log_run(spark, config, model, train, holdout, evaluation, metrics, versions,
                                 tags, since, until)
    from learnscore.registry.register import register_version

    if before_register is not None:
        before_register()
    tags["run_id"] = run_id
    key = {name: metrics[f"holdout_{name}"] for name in ("mae", "rmse", "r2", "accuracy", "macro_f1", "qwk")}
    version = register_version(config, model_uri, tags=tags, metrics=key, actor=actor,
                               reason=f"trained ({trigger}{', request ' + request_id if request_id else ''}) "
                                      f"on {len(train)} submissions; holdout MAE {key['mae']:.2f}, "
                                      f"macro-F1 {key['macro_f1']:.3f}")
    duration = time.monotonic() - started
    log.info("version %s registered as staging in %.1f s", version, duration)
    return TrainResult(run_id, model_uri, version, metrics, versions, len(train), len(holdout),
                       round(duration, 2), tags)


# -- data ------------------------------------------------------------------------------------


def count_labelled_submissions(spark, config: Config) -> int:
    """Submissions in silver that have an observed outcome (0 when the tables do not exist yet)."""
    from delta.tables import DeltaTable

    paths = [config.table_path(name) for name in (SUBMISSIONS.name, OUTCOMES.name)]
    if not all(DeltaTable.isDeltaTable(spark, path) for path in paths):
        return 0
    submissions, outcomes = (spark.read.format("delta").load(path) for path in paths)
    return (submissions.select("event_id")
            .join(outcomes.select(outcomes.submission_event_id.alias("event_id")).distinct(), "event_id")
            .count())


def require_initial_training_data(spark, config: Config) -> int:
    """Before the first model: the labelled submissions in silver, or :class:`TrainingDataError`
    saying how many there are, how many are needed (``retrain.min_training_rows``) and how to
    bring data in. Reads only: a refusal leaves no trace."""
    labelled = count_labelled_submissions(spark, config)
    needed = config.retrain.min_training_rows
    if labelled < needed:
        raise TrainingDataError(
            f"silver holds {labelled:,} submissions with an observed outcome (in {config.lake.root}); the "
            f"first training needs at least {needed:,} (retrain.min_training_rows). {BRING_DATA_IN}\n"
            f'then run "learnscore train --initial" again.')
    return labelled


def read_labelled_submissions(spark, config: Config, versions: dict[str, int], *,
                              since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    """Submissions joined with their outcome, as model input + labels (pandas, time-ordered)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    submissions = (spark.read.format("delta").option("versionAsOf", versions[SUBMISSIONS.name])
                   .load(config.table_path(SUBMISSIONS.name)))
    outcomes = (spark.read.format("delta").option("versionAsOf", versions[OUTCOMES.name])
                .load(config.table_path(OUTCOMES.name)))
    if since is not None:
        submissions = submissions.where(F.col("event_time") >= F.lit(since))
    if until is not None:
        submissions = submissions.where(F.col("event_time") < F.lit(until))
    latest = Window.partitionBy("submission_event_id").orderBy(F.col("event_time").desc())
    outcomes = (outcomes.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1")
                .select(F.col("submission_event_id").alias("event_id"), *LABEL_COLUMNS))
    joined = (submissions.join(outcomes, "event_id")
              .select("event_id", "learner_id", "event_time", *spark_model_input_columns(),
                      *LABEL_COLUMNS))
    frame = joined.toPandas()
    return frame.sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)


def split_by_time(frame: pd.DataFrame, holdout_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latest ``holdout_fraction`` of rows by event time are held out (frame is time-ordered).

    >>> frame = pd.DataFrame({"event_time": pd.date_range("2026-01-01", periods=10, freq="D")})
    >>> train, holdout = split_by_time(frame, 0.2)
    >>> len(train), len(holdout), str(holdout["event_time"].min().date())
    (8, 2, '2026-01-09')
    """
    cut = len(frame) - max(1, int(round(len(frame) * holdout_fraction)))
    return frame.iloc[:cut].copy(), frame.iloc[cut:].copy()


def _require_broker(config: Config) -> None:
    """Raise BrokerUnreachable (with what to do) unless Kafka answers."""
    from learnscore.core.kafka_io import producer

    producer(config).close(timeout=5)


def _latest_version(spark, config: Config, name: str) -> int:
    try:
        return delta_version(spark, config, name)
    except Exception as exc:  # delta raises AnalysisException subclasses for missing tables
        if "is not a Delta table" in str(exc) or "DELTA_MISSING_DELTA_TABLE" in str(exc) \
                or "PATH_NOT_FOUND" in str(exc):
            raise TrainingDataError(
                f"{name} does not exist at {config.table_path(name)}: the lake holds no data yet. "
                f"{BRING_DATA_IN}\nor run the streaming scorer.") from None
        raise


def _check_training_frame(frame: pd.DataFrame, versions, since, until) -> None:
    where = ", ".join(f"{k}@v{v}" for k, v in versions.items())
    window = f" between {since or 'the start'} and {until or 'now'}" if since or until else ""
    if len(frame) < MIN_TRAINING_ROWS:
        raise TrainingDataError(
            f"only {len(frame)} submissions with an observed outcome in {where}{window}; training "
            f"needs at least {MIN_TRAINING_ROWS}. Widen --since/--until, or bring more history in "
            f'with "learnscore import".')
    levels = frame["observed_comprehension_level"].nunique()
    if levels < 2:
        raise TrainingDataError(f"every outcome in {where}{window} has the same level; the level "
                                f"model needs at least two of {', '.join(LEVELS)}")


# -- evaluation ------------------------------------------------------------------------------


@dataclass
class Evaluation:
    metrics: dict[str, float]
    holdout_features: pd.DataFrame
    holdout_predictions: pd.DataFrame


def evaluate_model(model: DiagnosticModel, train: pd.DataFrame, holdout: pd.DataFrame,
                   truth: pd.DataFrame | None) -> Evaluation:
    """Holdout metrics of the model, the naive baseline and (with truth) the oracle."""
    features = model.features(holdout)
    predictions = model.predict_features(features)
    probabilities = predictions[[f"p_{level}" for level in LEVELS]].to_numpy()
    score, level = holdout["observed_progress_score"], holdout["observed_comprehension_level"]
    metrics = {
        **prefixed("holdout", score_metrics(score, predictions["progress_score"])),
        **prefixed("holdout", level_metrics(level, predictions["comprehension_level"], probabilities)),
        **prefixed("baseline", baseline_metrics(train["observed_progress_score"],
                                                train["observed_comprehension_level"], score, level)),
        "rows_train": float(len(train)), "rows_holdout": float(len(holdout)),
    }
    metrics.update(_oracle(train, holdout, predictions, truth))
    return Evaluation(metrics, features, predictions)


def _oracle(train, holdout, predictions, truth) -> dict[str, float]:
    """Oracle metrics on the rows the truth covers, and the model's share of the oracle's R²."""
    if truth is None or truth.empty:
        log.info("no simulator truth found: oracle metrics skipped")
        return {}
    ability = truth.set_index("event_id")["true_ability"]
    train_ability = train["event_id"].map(ability)
    holdout_ability = holdout["event_id"].map(ability)
    known_train, known_holdout = train_ability.notna().to_numpy(), holdout_ability.notna().to_numpy()
    if known_train.sum() < MIN_TRAINING_ROWS or known_holdout.sum() < 10:
        log.info("the simulator truth covers too few rows (%d train, %d holdout): oracle skipped",
                 known_train.sum(), known_holdout.sum())
        return {}
    oracle = oracle_metrics(
        train_ability[known_train], train["observed_progress_score"][known_train],
        train["observed_comprehension_level"][known_train], holdout_ability[known_holdout],
        holdout["observed_progress_score"][known_holdout],
        holdout["observed_comprehension_level"][known_holdout])
    model_r2 = score_metrics(holdout["observed_progress_score"][known_holdout],
                             predictions["progress_score"].to_numpy()[known_holdout])["r2"]
    return {**prefixed("oracle", oracle),
            "r2_share_of_oracle": round(model_r2 / oracle["r2"], 4) if oracle["r2"] > 0 else 0.0,
            "oracle_rows_holdout": float(known_holdout.sum())}


# -- MLflow ----------------------------------------------------------------------------------


def _log_run(spark, config: Config, model: DiagnosticModel, train, holdout, evaluation: Evaluation,
             metrics: dict[str, float], versions: dict[str, int], tags: dict[str, str],
             since, until) -> tuple[str, str]:
    import mlflow

    from learnscore.batch import figures
    from learnscore.model.packaging import log_diagnostic_model

    with mlflow.start_run(run_name=f"train-{tags['trigger']}") as run:
        mlflow.set_tags(tags)
        mlflow.log_params(_params(config, model, versions, since, until, len(train), len(holdout)))
        mlflow.log_metrics(metrics)
        for name, version in versions.items():
            mlflow.log_input(_delta_dataset(config, name, version), context="training")
        log.info("computing permutation feature importance")
        importance = figures.permutation_importance_table(
            model, evaluation.holdout_features, holdout["observed_progress_score"],
            holdout["observed_comprehension_level"], seed=config.model.random_state)
        mlflow.log_table(importance, "evaluation/feature_importance.json")
        if figures.matplotlib_available():
            import matplotlib.pyplot as plt

            for name, figure in (
                ("feature_importance.png", figures.feature_importance_figure(importance)),
                ("confusion_matrix.png", figures.confusion_matrix_figure(
                    holdout["observed_comprehension_level"],
                    evaluation.holdout_predictions["comprehension_level"])),
            ):
                mlflow.log_figure(figure, f"evaluation/{name}")
                plt.close(figure)
        else:
            log.warning("matplotlib is not installed: figures skipped (the numbers are logged)")
        log.info("logging the model (skops)")
        model_uri = log_diagnostic_model(model, holdout)
        return run.info.run_id, model_uri


def _delta_dataset(config: Config, name: str, version: int):
    """Lineage for one input table at its pinned version: metadata only (the SparkDataset MLflow
    builds by default runs a Spark job per table just to estimate a row count)."""
    import hashlib

    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    path = config.table_path(name)
    digest = hashlib.sha256(f"{path}@{version}".encode()).hexdigest()[:8]
    return MetaDataset(DeltaDatasetSource(path=path, delta_table_version=version), name=name,
                       digest=digest)


def _params(config: Config, model: DiagnosticModel, versions, since, until, rows_train,
            rows_holdout) -> dict[str, Any]:
    params: dict[str, Any] = {
        **{f"score.{k}": v for k, v in config.model.score.model_dump().items()},
        **{f"level.{k}": v for k, v in config.model.level.model_dump().items()},
        "holdout_fraction": config.model.holdout_fraction,
        "random_state": config.model.random_state,
        "irt_iterations": config.model.irt_iterations,
        "irt_min_responses": config.model.irt_min_responses,
        "n_features": len(model.feature_names_),
        "item_bank_items": len(model.item_bank_.item_ids),
        "item_bank_skills": len(model.item_bank_.skills),
        "rows_train": rows_train,
        "rows_holdout": rows_holdout,
        "since": since.isoformat() if since else "",
        "until": until.isoformat() if until else "",
    }
    params.update({f"data.{name}.version": version for name, version in versions.items()})
    return params


def _utc(moment) -> pd.Timestamp:
    """A timestamp in UTC (Spark hands naive ones in the session time zone, which is UTC)."""
    moment = pd.Timestamp(moment)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def code_version() -> str:
    """The git commit of the code that trained (``-dirty`` with uncommitted changes), if known."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"learnscore-{version('learnscore')}"
        except PackageNotFoundError:
            return "unknown"
    return sha + ("-dirty" if dirty else "")
