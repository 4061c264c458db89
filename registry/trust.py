"""Which registered versions may be loaded at all, decided before anything of theirs runs.

Loading an MLflow pyfunc runs code the version itself names: ``code:`` folders go to the front
of ``sys.path`` for good, the ``loader_module`` is imported, a ``python_model`` is unpickled, a
sklearn flavour trusts whatever skops types its own MLmodel lists. Whoever can write to the
registry's artifact store could change any of these. So every load of a registered version
(the endpoint, the stream's model cache, the gates, the item-bank and rollback readers) first
downloads the version and reads its folder as data only — ``MLmodel`` through
``mlflow.models.Model.load`` (YAML), ``model.skops`` through its schema — and refuses it with
:class:`UntrustedModel`, naming every problem, when:

- the pyfunc ``loader_module`` is neither :data:`OUR_LOADER` nor on ``models.allowed_loader_modules``
  (nor, with ``models.allow_pickle``, one of MLflow's own :data:`MLFLOW_PICKLE_LOADERS`; a version
  logged by an earlier learnscore is told to run ``learnscore registry upgrade``);
- a flavour has a ``code`` path, or the pyfunc a ``model_code_path`` (code that runs while loading);
- it uses a pickle-based format (a cloudpickled ``python_model`` too) and ``models.allow_pickle``
  is false;
- our loader's data is anything but one ``model.skops`` inside the folder, or a skops file asks
  for a type outside :data:`learnscore.model.loader.TRUSTED_TYPES`; a file is a symbolic link;
- its files differ from those registered: :func:`learnscore.registry.register.register_version`
  records a SHA-256 of every file (:data:`CONTENT_MANIFEST_TAG`) and over all of them
  (:data:`CONTENT_SHA256_TAG`); a changed, added or removed file is named.

A version registered before these tags existed is accepted with a warning when everything else
checks out (docs/security.md). The caller keeps serving what it has when a version is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from learnscore.core.config import Config, ModelsConfig
from learnscore.registry.access import registry_client, unreachable, version_uri

log = logging.getLogger(__name__)

OUR_LOADER = "learnscore.model.loader"
#: MLflow's loaders of pickle-based models (a ``python_model``, a scikit-learn flavour): allowed
#: with ``models.allow_pickle``, as what they load is then the operator's stated risk.
MLFLOW_PICKLE_LOADERS = ("mlflow.pyfunc.model", "mlflow.sklearn")
#: Loader modules of earlier learnscore releases.
LEGACY_LOADERS = frozenset({"batch.model_loader"})
CONTENT_SHA256_TAG = "learnscore.content_sha256"
CONTENT_MANIFEST_TAG = "learnscore.content_manifest"
#: Written by MLflow's own download (the registry's name and version), not part of the artifacts.
DOWNLOAD_FILES = frozenset({"registered_model_meta"})
_PICKLE_FORMATS = ("pickle", "cloudpickle")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib")
_MAX_MANIFEST_TAG = 7000  # MLflow allows 8000 characters in a tag value


class UntrustedModel(RuntimeError):
    """A version may not be loaded; ``problems`` says why, one reason each."""

    def __init__(self, what: str, problems: Iterable[str]):
        self.problems = tuple(problems)
        super().__init__(f"{what} is not loaded: {'; '.join(self.problems)}")


def legacy_fix(loader: str) -> str:
    """What to do about a version whose ``MLmodel`` names the legacy ``loader`` (a sentence tail).

    >>> legacy_fix("batch.model_loader")[:52]
    'was logged by an earlier learnscore (loader batch.mo'
    """
    return (f"was logged by an earlier learnscore (loader {loader}); run `learnscore registry upgrade` "
            f"once to re-register it under {OUR_LOADER} (its aliases move to the new version)")


# -- content -------------------------------------------------------------------------------------


def content_manifest(folder: str | os.PathLike) -> dict[str, str]:
    """Relative path (``/``-separated) → SHA-256 of every file of a model folder, sorted.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "data").mkdir()
    >>> for name in ("MLmodel", "data/model.skops", "registered_model_meta"):
    ...     _ = (folder / name).write_text(name)
    >>> manifest = content_manifest(folder)
    >>> list(manifest), manifest["MLmodel"] == hashlib.sha256(b"MLmodel").hexdigest()
    (['MLmodel', 'data/model.skops'], True)
    """
    root = Path(folder)
    manifest = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not path.is_symlink() and relative not in DOWNLOAD_FILES:
            manifest[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return manifest


def content_digest(manifest: dict[str, str]) -> str:
    """One SHA-256 over a manifest (sorted paths and their hashes).

    >>> content_digest({"b": "2", "a": "1"}) == content_digest({"a": "1", "b": "2"})
    True
    """
    digest = hashlib.sha256()
    for relative in sorted(manifest):
        digest.update(f"{relative}\0{manifest[relative]}\n".encode())
    return digest.hexdigest()


def content_tags(folder: str | os.PathLike) -> dict[str, str]:
    """The version tags that pin a model folder's content (recorded at registration)."""
    manifest = content_manifest(folder)
    tags = {CONTENT_SHA256_TAG: content_digest(manifest)}
    listed = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    if len(listed) <= _MAX_MANIFEST_TAG:  # else only the digest: a change is found, not named
        tags[CONTENT_MANIFEST_TAG] = listed
    return tags


def content_problems(manifest: dict[str, str], tags: dict[str, str]) -> list[str]:
    """What differs between a folder's ``manifest`` and the content ``tags`` of its version;
    empty when they agree or when the version has no content tags (see :func:`check_folder`).

    >>> recorded = {CONTENT_SHA256_TAG: content_digest({"MLmodel": "a", "x": "b"}),
    ...             CONTENT_MANIFEST_TAG: '{"MLmodel":"a","x":"b"}'}
    >>> content_problems({"MLmodel": "a", "x": "b"}, recorded)
    []
    >>> content_problems({"MLmodel": "c", "y": "d"}, recorded)
    ['its files differ from those registered: MLmodel changed, y added, x removed']
    """
    recorded = tags.get(CONTENT_SHA256_TAG)
    if not recorded or content_digest(manifest) == recorded:
        return []
    listed = tags.get(CONTENT_MANIFEST_TAG)
    if not listed:
        return ["its files differ from those registered (SHA-256 over all files changed)"]
    before = json.loads(listed)
    changes = ([f"{name} changed" for name in sorted(before.keys() & manifest.keys())
                if before[name] != manifest[name]]
               + [f"{name} added" for name in sorted(manifest.keys() - before.keys())]
               + [f"{name} removed" for name in sorted(before.keys() - manifest.keys())])
    return [f"its files differ from those registered: {', '.join(changes) or 'order changed'}"]


# -- structure -----------------------------------------------------------------------------------


def structure_problems(folder: str | os.PathLike, models: ModelsConfig) -> list[str]:
    """Why the model in ``folder`` may not be loaded, read from its files without running any."""
    from mlflow.models import Model

    root = Path(folder).resolve()
    links = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_symlink())
    if links:
        return [f"it holds symbolic links ({', '.join(links)}), which may point anywhere"]
    try:
        flavors = Model.load(str(root)).flavors or {}
    except Exception as exc:  # noqa: BLE001 - any unreadable MLmodel is a refusal, with the reason
        return [f"its MLmodel cannot be read: {type(exc).__name__}: {str(exc)[:200]}"]
    pyfunc = flavors.get("python_function")
    if not isinstance(pyfunc, dict):
        return ["its MLmodel has no python_function flavour"]
    problems = []
    loader = pyfunc.get("loader_module")
    # MLflow's own loaders for pickled models run only MLflow's (pinned) code when imported;
    # what they unpickle is the risk, and models.allow_pickle decides it (below).
    allowed = (OUR_LOADER, *models.allowed_loader_modules, *(MLFLOW_PICKLE_LOADERS if models.allow_pickle else ()))
    if loader in LEGACY_LOADERS:  # ours, from before the learnscore.* names: say how to fix it
        problems.append(f"it {legacy_fix(loader)}")
    elif loader not in allowed:
        problems.append(f"python_function.loader_module is {loader!r}, neither {OUR_LOADER} nor on "
                        f"models.allowed_loader_modules ({', '.join(models.allowed_loader_modules) or 'empty'})")
    for name, flavor in flavors.items():
        if isinstance(flavor, dict) and flavor.get("code"):
            problems.append(f"{name}.code is {flavor['code']!r}: a code path goes onto sys.path and runs")
    if pyfunc.get("model_code_path"):
        problems.append(f"python_function.model_code_path is {pyfunc['model_code_path']!r}: a Python file "
                        f"that runs while loading")
    pickled = _pickle_uses(root, flavors)
    if pickled and not models.allow_pickle:
        problems += [f"{use}: pickle runs code while loading (models.allow_pickle is false)" for use in pickled]
    if loader == OUR_LOADER:
        problems += _our_data_problems(root, pyfunc.get("data"))
    problems += _skops_problems(root)
    return problems


def _pickle_uses(root: Path, flavors: dict) -> list[str]:
    uses = []
    pyfunc = flavors.get("python_function") or {}
    if pyfunc.get("python_model"):
        uses.append(f"python_function.python_model is {pyfunc['python_model']!r} (cloudpickle)")
    for name, flavor in flavors.items():
        if isinstance(flavor, dict) and flavor.get("serialization_format") in _PICKLE_FORMATS:
            uses.append(f"{name}.serialization_format is {flavor['serialization_format']!r}")
    uses += [f"{p.relative_to(root).as_posix()} is a pickle file" for p in sorted(root.rglob("*"))
             if p.suffix.lower() in _PICKLE_SUFFIXES]
    return uses


def _our_data_problems(root: Path, data: object) -> list[str]:
    from learnscore.model.loader import MODEL_FILE

    if not isinstance(data, str) or not data:
        return [f"python_function.data is {data!r}; {OUR_LOADER} needs the folder holding {MODEL_FILE}"]
    folder = (root / data).resolve()
    if folder != root and root not in folder.parents:
        return [f"python_function.data {data!r} points outside the model folder"]
    if not folder.is_dir():
        return [f"python_function.data {data!r} is not a folder of the model"]
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    if files != [MODEL_FILE]:
        return [f"python_function.data {data!r} must hold {MODEL_FILE} alone, holds {', '.join(files) or 'nothing'}"]
    return []


def _skops_problems(root: Path) -> list[str]:
    from learnscore.model.loader import untrusted_types

    problems = []
    for path in sorted(root.rglob("*.skops")):
        relative = path.relative_to(root).as_posix()
        try:
            untrusted = untrusted_types(path)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is refused, with the reason
            problems.append(f"{relative} cannot be read as a skops file: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if untrusted:
            problems.append(f"{relative} asks for type(s) {', '.join(untrusted)}, not on the reviewed "
                            f"list learnscore.model.loader.TRUSTED_TYPES")
    return problems


# -- the checks callers make -----------------------------------------------------------------------


def check_folder(folder: str | os.PathLike, models: ModelsConfig, tags: dict[str, str], what: str) -> None:
    """Raise :class:`UntrustedModel` unless the downloaded version in ``folder`` may be loaded.

    ``tags`` are the version's registry tags (its recorded content); ``what`` names it in messages.
    """
    problems = structure_problems(folder, models)
    problems += content_problems(content_manifest(folder), tags)
    if models.require_content_hash and not tags.get(CONTENT_SHA256_TAG):
        problems.append(f"no content hash was recorded at registration ({CONTENT_SHA256_TAG}) and "
                        "models.require_content_hash is true; run `learnscore registry upgrade` to "
                        "re-register it with one")
    if problems:
        raise UntrustedModel(what, problems)
    if not tags.get(CONTENT_SHA256_TAG):
        log.warning("%s has no recorded content hash (registered before learnscore recorded one): "
                    "loaded on its structure checks alone; register it again to pin its content", what)


def check_version_folder(config: Config, version: str, folder: str | os.PathLike, client=None) -> None:
    """:func:`check_folder` for ``version`` of the configured model, downloaded to ``folder``.

    Raises :class:`UntrustedModel`, or ``RegistryUnreachable`` when its tags cannot be read.
    """
    try:
        tags = dict((client or registry_client(config)).get_model_version(
            config.mlflow.model_name, str(version)).tags or {})
    except Exception as exc:  # noqa: BLE001 - every failure here means: cannot ask
        raise unreachable(config, exc) from None
    check_folder(folder, config.models, tags, f"version {version} of {config.mlflow.model_name}")


@contextmanager
def trusted_version_folder(config: Config, version: str, client=None) -> Iterator[Path]:
    """Download ``version``, check it (:func:`check_version_folder`) and yield that copy's
    folder; it is removed afterwards."""
    import mlflow

    scratch = tempfile.mkdtemp(prefix=f"learnscore-v{version}-")
    try:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=version_uri(config, version), dst_path=scratch)
        check_version_folder(config, version, folder, client)
        yield Path(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load_trusted_version(config: Config, version: str, client=None, *, with_item_bank: bool = False):
    """Load a checked copy of ``version`` (:func:`trusted_version_folder`) as an MLflow pyfunc
    (our loader reads the file into memory, so the copy may go); ``with_item_bank``: the pyfunc
    and the version's item bank (``registry/artifacts.py``), read from the same checked copy."""
    import mlflow

    with trusted_version_folder(config, version, client) as folder:
        model = mlflow.pyfunc.load_model(str(folder))
        if not with_item_bank:
            return model
        from learnscore.registry.artifacts import readable_item_bank

        return model, readable_item_bank(folder, version, model)
