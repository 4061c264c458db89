"""What the system reads from a registered version beyond ``predict``: its item bank."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def item_bank_loader(config) -> Callable[[str], Any]:
    """``version → ItemBank`` of a registered version, each loaded once (safe skops loader)."""
    cache: dict[str, Any] = {}

    def item_bank(version: str):
        if version not in cache:
            from learnscore.registry.trust import load_trusted_version

            cache[version] = raw_model(load_trusted_version(config, version)).item_bank
            log.info("drift: loaded the item bank of version %s for the covariate signals", version)
        return cache[version]

    return item_bank


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
