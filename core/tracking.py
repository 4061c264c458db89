"""Point MLflow at the configured tracking server / registry (called at entry points)."""

from __future__ import annotations

import os
from pathlib import Path

from learnscore.core.config import Config

PICKLE_VARIABLE = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


def pickle_setting(config: Config) -> str:
    """MLflow's own pickle gate for this process: ``"false"`` (skops only) unless the operator
    set ``models.allow_pickle`` (docs/security.md says what that risks)."""
    return "true" if config.models.allow_pickle else "false"


def apply_pickle_setting(config: Config) -> None:
    """Set MLflow's pickle gate in this process's environment (children inherit it)."""
    os.environ[PICKLE_VARIABLE] = pickle_setting(config)


def use_mlflow(config: Config) -> str:
    """Configure the MLflow client for ``config``; return the experiment id (created if new)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    apply_pickle_setting(config)  # skops only, never pickle, unless models.allow_pickle
    prepare_store(config)
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    mlflow.set_registry_uri(config.registry_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(config.mlflow.experiment)
    if experiment is None:
        # Explicit artifact location: without it a SQLite store writes ./mlruns in the cwd.
        experiment_id = client.create_experiment(config.mlflow.experiment,
                                                 artifact_location=config.mlflow.artifact_root)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def prepare_store(config: Config) -> None:
    """Create the folders of an embedded (sqlite + file) store; remote stores are left alone."""
    if config.mlflow.tracking_uri.startswith("sqlite:///"):
        Path(config.mlflow.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if "://" not in config.mlflow.artifact_root:
        Path(config.mlflow.artifact_root).mkdir(parents=True, exist_ok=True)
