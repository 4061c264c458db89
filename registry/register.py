"""Register a logged model as a new version: tags, alias ``staging``, and the lifecycle record."""

from __future__ import annotations

import logging
import shutil
import tempfile

from learnscore.core.config import Config
from learnscore.registry.access import STAGING, alias_version, registry_client, set_alias
from learnscore.registry.history import REGISTERED, LifecycleRecorder
from learnscore.registry.trust import UntrustedModel, content_tags, structure_problems

log = logging.getLogger(__name__)


def register_version(config: Config, model_uri: str, *, tags: dict[str, str],
                     metrics: dict[str, float], actor: str, reason: str) -> str:
    """Register ``model_uri`` under ``mlflow.model_name``; point ``staging`` at it; return the version.

    ``tags`` land on the version (trigger, request id, data versions, code version, run id),
    with the SHA-256 of its files (``registry/trust.py``: every later load checks them);
    ``metrics`` (holdout figures) travel with the ModelRegistered event as ``after_*``.
    Raises :class:`~learnscore.registry.trust.UntrustedModel` for a model no process would load.
    """
    import mlflow

    pinned = pinned_content_tags(config, model_uri)
    with LifecycleRecorder(config) as recorder:
        client = registry_client(config)
        previous = alias_version(config, STAGING, client)
        registered = mlflow.register_model(model_uri, config.mlflow.model_name,
                                           tags={**{k: str(v) for k, v in tags.items()}, **pinned})
        version = str(registered.version)
        set_alias(config, STAGING, version, client)
        recorder.record(REGISTERED, version=version, alias=STAGING, previous_version=previous,
                        actor=actor, reason=reason,
                        metrics={f"after_{name}": value for name, value in metrics.items()})
    log.info("registered %s version %s as %s", config.mlflow.model_name, version, STAGING)
    return version


def pinned_content_tags(config: Config, model_uri: str) -> dict[str, str]:
    """Check the logged model as a load would, and return the tags that pin its files.

    Raises :class:`~learnscore.registry.trust.UntrustedModel` for a model no process would load."""
    import mlflow

    scratch = tempfile.mkdtemp(prefix="learnscore-register-")
    try:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=scratch)
        problems = structure_problems(folder, config.models)
        if problems:
            raise UntrustedModel(f"{model_uri} (to be registered)", problems)
        return content_tags(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
