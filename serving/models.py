"""Which model versions the endpoint serves, and moving to new ones without a failed request.

The endpoint holds one immutable :class:`ServedModels` snapshot. A background
:class:`ModelWatcher` asks the registry which version each alias points to, loads a new
version off the request path, and then replaces the snapshot in a single assignment; a
request that already took the old snapshot finishes on the old model.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from learnscore.core.config import Config
from learnscore.registry.access import (
    PRODUCTION,
    STAGING,
    RegistryUnreachable,
    alias_version,
    redact_uri,
    registry_client,
)
from learnscore.registry.trust import UntrustedModel, load_trusted_version

log = logging.getLogger(__name__)




@dataclass(frozen=True)
class ServedVersion:
    """One registered version, loaded and ready to score."""

    name: str
    version: str
    alias: str
    model: Any = field(repr=False)  # an mlflow.pyfunc.PyFuncModel
    loaded_at: datetime
    #: The model behind the pyfunc when it checks its own input and scores flat responses
    #: (batch.model.DiagnosticModel): the endpoint then calls it directly, skipping MLflow's
    #: per-call schema work and the one-row DataFrame. ``None``: score through the pyfunc.
    direct: Any = field(default=None, repr=False)
    #: The version's item bank and the psychometrics settings: each answer's effort flags
    #: (``learnscore.model.effort``), as the stream computes them. ``None``: no flags.
    item_bank: Any = field(default=None, repr=False)
    effort: Any = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias,
                "loaded_at": self.loaded_at.isoformat()}


@dataclass(frozen=True)
class ServedModels:
    """The snapshot requests read: production (may be absent at start) and the canary."""

    production: ServedVersion | None = None
    staging: ServedVersion | None = None


@dataclass(frozen=True)
class RegistryStatus:
    reachable: bool
    checked_at: datetime | None
    error: str | None = None


class Registry:
    """The registry questions the endpoint asks, each bounded by ``serving.registry_timeout_s``."""

    def __init__(self, config: Config):
        self.config = config
        self.model_name = config.mlflow.model_name
        self.where = redact_uri(config.registry_uri)
        self.timeout_s = config.serving.registry_timeout_s
        self._client = registry_client(config)
        # One thread: a call that hangs (retries against a dead server) does not pile up more.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="registry")

    def alias_version(self, alias: str) -> str | None:
        """The version ``alias`` points to, ``None`` when the model or alias does not exist yet."""
        future = self._pool.submit(self._alias_version, alias)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise RegistryUnreachable(
                f"the model registry at {self.where} did not answer within {self.timeout_s:.0f}s"
            ) from None

    def _alias_version(self, alias: str) -> str | None:
        return alias_version(self.config, alias, client=self._client)

    def load(self, version: str, alias: str) -> ServedVersion:
        """Load ``version`` of the model once it passed the trust checks (``registry/trust.py``:
        our skops loader or an allowed one, no code paths, no pickle, its registered content);
        raises :class:`~learnscore.registry.trust.UntrustedModel` otherwise."""
        model, bank = load_trusted_version(self.config, version, client=self._client, with_item_bank=True)
        return ServedVersion(self.model_name, version, alias, model, datetime.now(timezone.utc),
                             direct=self_checking_model(model), item_bank=bank, effort=self.config.psychometrics)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def self_checking_model(pyfunc_model) -> Any:
    """The implementation behind an MLflow pyfunc when it validates its own input, else ``None``.

    Such a model (``checks_own_input``, see batch/packaging.py) is logged with a signature that
    MLflow does not enforce anyway; calling it directly also skips the pyfunc wrapper's per-call
    context, and ``predict_flat`` skips building a DataFrame for one submission.
    """
    implementation = getattr(pyfunc_model, "_model_impl", None)  # MLflow's stable developer API
    if getattr(implementation, "checks_own_input", False) and hasattr(implementation, "predict_flat"):
        return implementation
    return None


class ModelWatcher:
    """Keeps :attr:`served` in step with the registry's aliases, from a background thread.

    ``on_change`` is called after each swap (metrics); a failed load leaves the old model
    serving and is retried on the next check.
    """

    def __init__(self, registry: Registry, check_seconds: float, canary: bool,
                 on_change: Callable[[ServedModels], None] | None = None,
                 on_status: Callable[[RegistryStatus], None] | None = None):
        self.registry = registry
        self.check_seconds = check_seconds
        self.canary = canary
        self.served = ServedModels()
        self.status = RegistryStatus(False, None, "not asked yet")
        self.swaps = 0
        #: Versions the trust checks refused (version → reason), shown by /v1/model.
        self.refused: dict[str, str] = {}
        self._on_change = on_change or (lambda served: None)
        self._on_status = on_status or (lambda status: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed_versions: dict[str, float] = {}

    # -- one check ---------------------------------------------------------------------------
    def check_once(self) -> ServedModels:
        """Ask the registry once and swap in whatever moved. Never raises."""
        now = datetime.now(timezone.utc)
        try:
            wanted = {PRODUCTION: self.registry.alias_version(PRODUCTION)}
            if self.canary:
                wanted[STAGING] = self.registry.alias_version(STAGING)
        except RegistryUnreachable as exc:
            if self.status.reachable or self.status.checked_at is None:
                log.warning("%s; still serving %s", exc, self._describe(self.served.production))
            self._set_status(RegistryStatus(False, now, str(exc)))
            return self.served
        if not self.status.reachable:
            log.info("model registry at %s answers", self.registry.where)
        self._set_status(RegistryStatus(True, now))

        current = self.served
        production = self._resolve(current.production, wanted[PRODUCTION], PRODUCTION)
        staging = self._resolve(current.staging, wanted.get(STAGING), STAGING) if self.canary else None
        if production is not current.production or staging is not current.staging:
            # The one assignment requests observe: old readers keep their snapshot.
            self.served = ServedModels(production, staging)
            self.swaps += 1
            self._on_change(self.served)
        return self.served

    def _resolve(self, loaded: ServedVersion | None, version: str | None, alias: str) -> ServedVersion | None:
        if version is None:
            # The alias was removed: keep serving what we have rather than failing requests.
            return loaded
        if loaded is not None and loaded.version == version:
            return loaded
        retry_at = self._failed_versions.get(version)
        if retry_at is not None and time.monotonic() < retry_at:
            return loaded
        started = time.perf_counter()
        try:
            fresh = self.registry.load(version, alias)
        except UntrustedModel as exc:
            log.error("refusing %s (alias %s); keeping %s", exc, alias, self._describe(loaded))
            self.refused[version] = str(exc)
            self._failed_versions[version] = time.monotonic() + 30
            return loaded
        except Exception:
            log.exception("could not load %s version %s for alias %s; keeping %s",
                          self.registry.model_name, version, alias, self._describe(loaded))
            self._failed_versions[version] = time.monotonic() + 30
            return loaded
        log.info("loaded %s version %s (%s) in %.1fs; was %s", fresh.name, version, alias,
                 time.perf_counter() - started, self._describe(loaded))
        return fresh

    def _set_status(self, status: RegistryStatus) -> None:
        self.status = status
        self._on_status(status)

    @staticmethod
    def _describe(loaded: ServedVersion | None) -> str:
        return f"version {loaded.version}" if loaded else "no model"

    # -- the thread --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_once()
            self._stop.wait(self.check_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.registry.timeout_s + 5)
        self.registry.close()
