"""Point MLflow at the configured tracking server / registry (called at entry points)."""

from __future__ import annotations

import os

from learnscore.config import Config
from learnscore.stack.mlflow_server import prepare_store


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
