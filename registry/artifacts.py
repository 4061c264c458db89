"""What the system reads from a registered version beyond ``predict``: its item bank.

The drift detectors compute an ability estimate with the item parameters of the version that
scored each row. learnscore's own model carries them (its ``item_bank``); a model a team brings
(``learnscore register``) may carry them as a file ``item_bank.json`` anywhere among its
artifacts (:meth:`learnscore.model.item_bank.ItemBank.to_dict`); one with neither is watched
with a neutral bank (every item slope 1, difficulty 0), which still tracks ability shifts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ITEM_BANK_FILE = "item_bank.json"
RETRY_FAILED_BANK_S = 30.0


def item_bank_loader(config) -> Callable[[str], Any]:
    """``version → ItemBank`` of a registered version, each loaded once (from checked files only)."""
    cache: dict[str, Any] = {}

    def item_bank(version: str):
        if version not in cache:
            cache[version] = version_item_bank(config, version)
        return cache[version]

    return item_bank


def production_item_bank(config) -> Callable[[], Any]:
    """``() → (version, ItemBank)`` of the version ``production`` points to, or None without one.

    The registry is asked at most every ``streaming.alias_check_seconds`` (as the scorer asks it);
    when it does not answer, the version known last is kept.
    """
    import time

    from learnscore.registry.access import PRODUCTION, RegistryUnreachable, alias_version

    banks = item_bank_loader(config)
    asked: dict[str, Any] = {"at": None, "version": None, "failed": {}}

    def production_bank():
        now = time.monotonic()
        if asked["at"] is None or now - asked["at"] >= config.streaming.alias_check_seconds:
            try:
                asked["version"] = alias_version(config, PRODUCTION)
                asked["at"] = now
            except RegistryUnreachable as exc:
                log.warning("%s; the item bank of version %s stays in use", exc, asked["version"])
        version = asked["version"]
        if version is None:
            return None
        # A bank that cannot be read (store down, refused copy, a broken item_bank.json) means no
        # flags and no item watch for a while, never a failed landing batch; tried again after 30 s.
        failed_at = asked["failed"].get(version)
        if failed_at is not None and now - failed_at < RETRY_FAILED_BANK_S:
            return None
        try:
            return str(version), banks(str(version))
        except Exception as exc:  # noqa: BLE001 - see above
            asked["failed"][version] = now
            log.error("the item bank of version %s could not be read (%s: %s); effort flags and the item "
                      "watch pause, tried again in %.0f s", version, type(exc).__name__, str(exc)[:300],
                      RETRY_FAILED_BANK_S)
            return None

    return production_bank


def version_item_bank(config, version: str):
    """The item bank of ``version``: its ``item_bank.json``, else our model's own, else neutral."""
    from learnscore.registry.trust import trusted_version_folder

    with trusted_version_folder(config, version) as folder:
        return folder_item_bank(folder, version)


def folder_item_bank(folder: str | Path, version: str, pyfunc_model=None):
    """The item bank of the (checked) model copy in ``folder``; ``pyfunc_model``: that copy
    already loaded, so it is not loaded twice."""
    import mlflow

    from learnscore.model.item_bank import ItemBank

    folder = Path(folder)
    bank_file = next(iter(sorted(folder.rglob(ITEM_BANK_FILE))), None)
    if bank_file is not None:
        log.info("the item bank of version %s from its %s", version, bank_file.relative_to(folder))
        return read_item_bank(bank_file)
    own = getattr(raw_model(pyfunc_model or mlflow.pyfunc.load_model(str(folder))), "item_bank", None)
    if isinstance(own, ItemBank):
        log.info("loaded the item bank of version %s", version)
        return own
    log.warning("version %s carries no item bank (%s): its ability signal uses a neutral bank "
                "(every item slope 1, difficulty 0) and no response is called a rapid guess",
                version, ITEM_BANK_FILE)
    return ItemBank.neutral()


def readable_item_bank(folder: str | Path, version: str, pyfunc_model=None):
    """:func:`folder_item_bank`, or None when the version's ``item_bank.json`` cannot be read: the
    version still scores (and serves), without effort flags."""
    try:
        return folder_item_bank(folder, version, pyfunc_model)
    except ValueError as exc:
        log.error("version %s: %s; it scores without effort flags", version, exc)
        return None


def read_item_bank(path: str | Path):
    """An ``item_bank.json``; an unreadable one raises ``ValueError`` naming the file."""
    from learnscore.model.item_bank import ItemBank

    try:
        return ItemBank.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not an item bank: {exc}") from None


def raw_model(pyfunc_model):
    """The object a pyfunc model wraps (our ``DiagnosticModel``, built by its safe loader).

    ``get_raw_model()`` is MLflow's public way, but models logged with a ``loader_module``
    (ours: ``learnscore.model.loader``) do not implement it in MLflow 3; the wrapped object is then
    the pyfunc's ``_model_impl`` (MLflow is pinned).
    """
    try:
        return pyfunc_model.get_raw_model()
    except NotImplementedError:
        return pyfunc_model._model_impl
