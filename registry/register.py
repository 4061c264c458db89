"""Register a logged model as a new version: tags, alias ``staging``, and the lifecycle record."""

from __future__ import annotations

import logging

from learnscore.core.config import Config
from learnscore.registry.access import STAGING, alias_version, registry_client, set_alias
from learnscore.registry.history import REGISTERED, LifecycleRecorder

log = logging.getLogger(__name__)



def register_version(config: Config, model_uri: str, *, tags: dict[str, str],
                     metrics: dict[str, float], actor: str, reason: str) -> str:
    """Register ``model_uri`` under ``mlflow.model_name``; point ``staging`` at it; return the version.

    ``tags`` land on the version (trigger, request id, data versions, code version, run id);
    ``metrics`` (holdout figures) travel with the ModelRegistered event as ``after_*``.
    """
    import mlflow

    with LifecycleRecorder(config) as recorder:
        client = registry_client(config)
        previous = alias_version(config, STAGING, client)
        registered = mlflow.register_model(model_uri, config.mlflow.model_name,
                                           tags={k: str(v) for k, v in tags.items()})
        version = str(registered.version)
        set_alias(config, STAGING, version, client)
        recorder.record(REGISTERED, version=version, alias=STAGING, previous_version=previous,
                        actor=actor, reason=reason,
                        metrics={f"after_{name}": value for name, value in metrics.items()})
    log.info("registered %s version %s as %s", config.mlflow.model_name, version, STAGING)
    return version
