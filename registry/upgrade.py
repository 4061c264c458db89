"""Re-register model versions logged before the ``learnscore.*`` namespace.

A version logged by learnscore before the rename names ``loader_module: batch.model_loader`` in
its ``MLmodel`` and the types ``batch.model.DiagnosticModel`` / ``schemas.irt.ItemBank`` inside
its skops file. Neither module exists any more, and we do not bring back generic top-level names
to satisfy them (that shadowing is what the rename removed). Instead ``learnscore registry
upgrade`` reads each such version once — mapping the old type names to the new ones in a copy of
the skops file, then loading it through the reviewed type list as usual — logs the same fitted
model under the current loader, registers it as a new version tagged ``upgraded_from``, and moves
every alias that pointed at the old version to the new one. Registry versions are immutable, so a
re-registration is the honest way to change what a version is loaded with.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from learnscore.core.config import Config
from learnscore.registry.access import registry_client, set_alias, version_uri
from learnscore.registry.trust import LEGACY_LOADERS, legacy_fix

log = logging.getLogger(__name__)

#: Old module of each model type → its module now (the class names did not change).
LEGACY_MODULES = {"batch.model": "learnscore.model.diagnostic", "schemas.irt": "learnscore.model.item_bank"}
UPGRADED_FROM_TAG = "upgraded_from"


class LegacyModelError(RuntimeError):
    """A model version was logged by an earlier learnscore and must be re-registered first."""


@dataclass(frozen=True)
class Upgrade:
    old_version: str
    new_version: str
    aliases: tuple[str, ...]


def loader_module(flavors: dict) -> str | None:
    """The pyfunc loader module a model's ``MLmodel`` flavors name (``None`` if it has none)."""
    return (flavors.get("python_function") or {}).get("loader_module")


def require_current(config: Config, version: str) -> None:
    """Raise :class:`LegacyModelError` with the fix if ``version`` needs ``registry upgrade``."""
    import mlflow

    loader = loader_module(mlflow.models.get_model_info(version_uri(config, version)).flavors)
    if loader in LEGACY_LOADERS:
        raise LegacyModelError(f"model version {version} of {config.mlflow.model_name} {legacy_fix(loader)}.")


def load_legacy_model(model_dir: str | Path):
    """Load the DiagnosticModel in a legacy model folder (the one holding ``MLmodel``)."""
    from learnscore.model.loader import MODEL_FILE, load_model_file

    source = next(Path(model_dir).rglob(MODEL_FILE))
    with tempfile.TemporaryDirectory(prefix="learnscore-upgrade-") as scratch:
        renamed = Path(scratch) / MODEL_FILE
        _rename_types(source, renamed)
        return load_model_file(renamed)


def upgrade_legacy_versions(config: Config, *, dry_run: bool = False) -> list[Upgrade]:
    """Re-register every legacy version of ``mlflow.model_name``; return what was (or would be) done."""
    import mlflow

    client = registry_client(config)
    name = config.mlflow.model_name
    versions = client.search_model_versions(f"name='{name}'")
    upgraded = {v.tags.get(UPGRADED_FROM_TAG) for v in versions}
    done = []
    for version in sorted(versions, key=lambda v: int(v.version)):
        number = str(version.version)
        if number in upgraded:
            continue  # an earlier run already re-registered it
        info = mlflow.models.get_model_info(version_uri(config, number))
        if loader_module(info.flavors) not in LEGACY_LOADERS:
            continue
        aliases = tuple(sorted(client.get_model_version(name, number).aliases))
        if dry_run:
            done.append(Upgrade(number, "", aliases))
            continue
        new = _reregister(config, client, number, dict(version.tags))
        for alias in aliases:
            set_alias(config, alias, new, client)
        log.info("re-registered %s version %s as version %s (aliases moved: %s)",
                 name, number, new, ", ".join(aliases) or "none")
        done.append(Upgrade(number, new, aliases))
    return done


def _reregister(config: Config, client, version: str, tags: dict[str, str]) -> str:
    import mlflow

    from learnscore.model.packaging import log_diagnostic_model
    from learnscore.registry.register import pinned_content_tags

    with tempfile.TemporaryDirectory(prefix="learnscore-upgrade-") as scratch:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version_uri(config, version),
                                                         dst_path=scratch))
        model = load_legacy_model(local)
        example = pd.DataFrame(json.loads((local / "input_example.json").read_text()))
    with mlflow.start_run(run_name=f"upgrade-v{version}"):
        model_uri = log_diagnostic_model(model, example)
    # Pinned like any new version (registry/trust.py), so every later load checks its files.
    pins = pinned_content_tags(config, model_uri)
    registered = mlflow.register_model(model_uri, config.mlflow.model_name,
                                       tags={**tags, UPGRADED_FROM_TAG: version, **pins})
    return str(registered.version)


def _rename_types(source: Path, target: Path) -> None:
    """Copy a skops zip, rewriting the legacy ``__module__`` names in its ``schema.json``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename == "schema.json":
                data = json.dumps(_renamed(json.loads(data))).encode()
            new.writestr(item, data)
    shutil.copystat(source, target)


def _renamed(node):
    if isinstance(node, dict):
        return {key: (LEGACY_MODULES.get(value, value) if key == "__module__" else _renamed(value))
                for key, value in node.items()}
    if isinstance(node, list):
        return [_renamed(value) for value in node]
    return node
