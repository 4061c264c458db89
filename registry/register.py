"""Register a logged model as a new version: tags, alias ``staging``, and the lifecycle record."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from learnscore.config import Config
from registry.aliases import STAGING, current_version
from registry.history import REGISTERED, LifecycleRecorder

log = logging.getLogger(__name__)

# Tag on a version: the event time of its newest training submission (ISO 8601, UTC).
TRAIN_UNTIL_TAG = "data.train_until"


def register_version(config: Config, model_uri: str, *, tags: dict[str, str],
                     metrics: dict[str, float], actor: str, reason: str) -> str:
    """Register ``model_uri`` under ``mlflow.model_name``; point ``staging`` at it; return the version.

    ``tags`` land on the version (trigger, request id, data versions, code version, run id);
    ``metrics`` (holdout figures) travel with the ModelRegistered event as ``after_*``.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    with LifecycleRecorder(config) as recorder:
        previous = current_version(config, STAGING)
        registered = mlflow.register_model(model_uri, config.mlflow.model_name,
                                           tags={k: str(v) for k, v in tags.items()})
        version = str(registered.version)
        MlflowClient().set_registered_model_alias(config.mlflow.model_name, STAGING, version)
        recorder.record(REGISTERED, version=version, alias=STAGING, previous_version=previous,
                        actor=actor, reason=reason,
                        metrics={f"after_{name}": value for name, value in metrics.items()})
    log.info("registered %s version %s as %s", config.mlflow.model_name, version, STAGING)
    return version


def training_cutoff(config: Config, version: str) -> datetime | None:
    """When the training data of ``version`` ends (its :data:`TRAIN_UNTIL_TAG`), None if untold.

    Raises ``MlflowException`` (or a connection error) when the registry does not answer.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.mlflow.tracking_uri, registry_uri=config.registry_uri)
    value = client.get_model_version(config.mlflow.model_name, str(version)).tags.get(TRAIN_UNTIL_TAG)
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
