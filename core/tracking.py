"""Point MLflow at the configured tracking server / registry (called at entry points)."""

from __future__ import annotations

import os
from pathlib import Path

from learnscore.core.config import Config


def use_mlflow(config: Config) -> str:
    """Configure the MLflow client for ``config``; return the experiment id (created if new)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # skops only, never pickle
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
