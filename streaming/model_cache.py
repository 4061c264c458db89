"""The scoring model of the stream and its hot swap.

``mlflow.pyfunc.spark_udf`` resolves a model URI once, when the UDF is built. So every
``streaming.alias_check_seconds`` the cache asks the registry which version ``production``
points to and, when it moved, builds a new UDF for ``models:/<name>/<version>`` that the next
micro-batch uses — no restart, and each scored row records the version that scored it.

The registry being unreachable never stops the stream: the cache keeps the UDF it has.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from learnscore.core.config import Config
from learnscore.model.item_bank import ItemBank
from learnscore.registry.access import PRODUCTION, RegistryUnreachable, alias_version, version_uri
from learnscore.registry.artifacts import readable_item_bank
from learnscore.registry.trust import check_version_folder
from learnscore.schemas.scoring import PREDICTION_RESULT_TYPE

log = logging.getLogger(__name__)

# model_status values in ops.stream_progress
OK = "ok"
NO_MODEL = "no_model"
LOAD_FAILED = "load_failed"
REGISTRY_UNREACHABLE = "registry_unreachable"
SCORE_FAILED = "score_failed"  # the model loaded but raised while scoring a batch

RETRY_FAILED_LOAD_S = 30.0  # a version that failed to load is tried again after this long




@dataclass(frozen=True)
class ScoringUdf:
    """One registered version as the Spark UDF the stream scores with."""

    name: str
    version: str
    udf: Callable
    local_path: str | None = None
    item_bank: ItemBank | None = None  # its rapid-guess thresholds (streaming.effort); None: none judged


@dataclass(frozen=True)
class ModelState:
    """What the next micro-batch scores with: ``model`` (None: nothing to score with) and why."""

    model: ScoringUdf | None
    status: str
    message: str | None = None



def build_model_udf(spark, config: Config, version: str) -> ScoringUdf:
    """Download ``models:/<name>/<version>``, load it once here, and build its Spark UDF.

    Loading in the driver first makes a model that cannot load (refused format, missing
    artifact) fail here, where the cache can keep the previous one, rather than inside a
    Spark task in the middle of a batch. Before anything of it runs, the downloaded copy must
    pass the trust checks (``registry/trust.py``); the UDF is built from that same copy.
    """
    import mlflow

    name = config.mlflow.model_name
    models_dir = Path(config.state_dir) / "scorer" / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    target = tempfile.mkdtemp(prefix=f"{name}-v{version}-", dir=models_dir)
    try:
        local_path = mlflow.artifacts.download_artifacts(artifact_uri=version_uri(config, version),
                                                         dst_path=target)
        check_version_folder(config, version, local_path)  # UntrustedModel: nothing of it has run
        loaded = mlflow.pyfunc.load_model(local_path)
        bank = readable_item_bank(local_path, str(version), loaded)
        udf = mlflow.pyfunc.spark_udf(spark, local_path, result_type=PREDICTION_RESULT_TYPE, env_manager="local")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return ScoringUdf(name=name, version=str(version), udf=udf, local_path=target, item_bank=bank)


class ModelCache:
    """Holds the UDF of the version ``alias`` (``production`` unless a shadow cache) points to;
    :meth:`refresh` before each batch."""

    def __init__(self, spark, config: Config, *, clock: Callable[[], float] = time.monotonic,
                 builder: Callable[[object, Config, str], ScoringUdf] = build_model_udf,
                 alias: str = PRODUCTION):
        self._spark = spark
        self._config = config
        self.alias = alias
        self._clock = clock
        self._builder = builder
        self._checked_at: float | None = None
        self._failed: tuple[str, float, str] | None = None  # version, when, why
        self.state = ModelState(None, NO_MODEL, "not checked yet")
        # The scoring batch and the runner's idle catch-up both refresh. Without the lock the second
        # caller saw "checked just now" while the first was still building the UDF, and its batch
        # found no model and parked every row (found by the scoring query refreshing before it
        # reads its batch).
        self._lock = threading.Lock()

    @property
    def model(self) -> ScoringUdf | None:
        return self.state.model

    def failed_version(self) -> str | None:
        """The version that failed to load and is not due for another try yet."""
        failed = self._failed
        if failed and self._clock() - failed[1] < RETRY_FAILED_LOAD_S:
            return failed[0]
        return None

    def refresh(self, force: bool = False) -> ModelState:
        """Ask the registry (at most every ``alias_check_seconds``) and swap the UDF if needed; a
        caller that comes while another builds waits for it and gets its result."""
        with self._lock:
            return self._refresh(force)

    def _refresh(self, force: bool) -> ModelState:
        now = self._clock()
        due = (self._checked_at is None
               or now - self._checked_at >= self._config.streaming.alias_check_seconds)
        if not (due or force):
            return self.state
        self._checked_at = now
        current = self.state.model
        try:
            version = alias_version(self._config, self.alias)
        except RegistryUnreachable as exc:
            if self.state.status != REGISTRY_UNREACHABLE:
                log.warning("%s; scoring %s", exc,
                            f"with version {current.version}" if current else "waits")
            self.state = ModelState(current, REGISTRY_UNREACHABLE, str(exc))
            return self.state
        if version is None:
            if current is not None or self.state.status != NO_MODEL:
                log.log(logging.WARNING if self.alias == PRODUCTION else logging.INFO,
                        "no '%s' alias on model %s%s", self.alias, self._config.mlflow.model_name,
                        ": submissions land in silver and wait to be scored" if self.alias == PRODUCTION else "")
            self._drop(current)
            self.state = ModelState(None, NO_MODEL, f"no {self.alias} version of "
                                                    f"{self._config.mlflow.model_name}")
            return self.state
        if current is not None and current.version == version:
            self.state = ModelState(current, OK)
            return self.state
        if self._failed and self._failed[0] == version and now - self._failed[1] < RETRY_FAILED_LOAD_S:
            self.state = ModelState(current, LOAD_FAILED, self._failed[2])
            return self.state
        return self._swap(current, version, now)

    def _swap(self, current: ScoringUdf | None, version: str, now: float) -> ModelState:
        started = time.monotonic()
        try:
            loaded = self._builder(self._spark, self._config, version)
        except Exception as exc:  # noqa: BLE001 - any load failure keeps the stream running
            why = (f"version {version} of {self._config.mlflow.model_name} failed to load: "
                   f"{type(exc).__name__}: {str(exc)[:300]}")
            self._failed = (version, now, why)
            log.error("%s; %s", why, f"still scoring with version {current.version}" if current
                      else "submissions wait in silver")
            self.state = ModelState(current, LOAD_FAILED, why)
            return self.state
        self._failed = None
        log.info("scoring with %s version %s from the next rows on (was %s; built in %.1fs)",
                 loaded.name, loaded.version, current.version if current else "none",
                 time.monotonic() - started)
        self._drop(current)
        self.state = ModelState(loaded, OK)
        return self.state

    @staticmethod
    def _drop(model: ScoringUdf | None) -> None:
        # Batches run one after another, so no task still reads the previous model's files.
        if model is not None and model.local_path:
            shutil.rmtree(model.local_path, ignore_errors=True)
