"""Register a logged model as a new version: tags, alias ``staging``, and the lifecycle record."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

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


class ContractMismatch(ValueError):
    """A model brought to ``learnscore register`` does not fit the scoring contract; the message
    names every mismatch."""


def register_own_model(config: Config, model_uri: str, *, actor: str, reason: str) -> str:
    """Register a model a team trained and logged itself (any MLflow pyfunc); return its version.

    Checked before anything of it runs, as every load is (``registry/trust.py``), then its
    signature against the scoring contract (``schemas/scoring.py``) and, when it carries one, its
    ``item_bank.json``. It becomes ``staging``; ``learnscore promote`` runs the gates on it.
    Raises :class:`UntrustedModel` or :class:`ContractMismatch`.
    """
    from mlflow.models import get_model_info

    from learnscore.registry.artifacts import ITEM_BANK_FILE, read_item_bank
    from learnscore.registry.gates import check_signature

    try:
        signature = get_model_info(model_uri).signature
    except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds for a wrong URI
        raise ContractMismatch(f"{model_uri} is not a logged MLflow model ({exc}); pass the URI that "
                               f"mlflow.pyfunc.log_model returned (runs:/<run id>/<name> or models:/…)") from None
    result = check_signature(signature)
    if not result.passed:
        raise ContractMismatch(f"{model_uri} does not fit the scoring contract: {result.message}. Log it with "
                               f"signature=learnscore.model.packaging.model_signature() and a predict that "
                               f"returns those columns (docs/bring-your-own-model.md)")
    scratch = tempfile.mkdtemp(prefix="learnscore-register-")
    try:
        import mlflow

        folder = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=scratch)
        for bank in sorted(Path(folder).rglob(ITEM_BANK_FILE)):
            try:
                read_item_bank(bank)
            except ValueError as exc:
                raise ContractMismatch(str(exc)) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return register_version(config, model_uri, tags={"trigger": "registered", "source_uri": model_uri},
                            metrics={}, actor=actor, reason=reason)
