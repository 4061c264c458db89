"""Load a saved :class:`~batch.model.DiagnosticModel` safely: skops with a reviewed type list.

MLflow's pyfunc calls :func:`_load_pyfunc` (the model is logged with
``loader_module="learnscore.model.loader"``, see :mod:`learnscore.model.packaging`).

Why our own loader: a skops file can name any Python type to rebuild, and loading it runs that
type's code, so the list of trusted types must live in reviewed code here — not in the model
artifact, which anyone with write access to the registry could change.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)

MODEL_FILE = "model.skops"

#: Types beyond skops' own safe defaults (numpy, builtins, scikit-learn estimators) that a
#: DiagnosticModel is made of. Reviewed: our two classes hold only lists, floats and arrays;
#: TreePredictor holds the fitted trees of a HistGradientBoosting model as numpy arrays.
#: Adding a type here is a code change that goes through review, on purpose.
TRUSTED_TYPES = (
    "learnscore.model.diagnostic.DiagnosticModel",
    "learnscore.model.item_bank.ItemBank",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)


class UntrustedModelError(ValueError):
    """The model file asks for types that are not on :data:`TRUSTED_TYPES`."""


def save_model_file(model, directory: str | Path) -> Path:
    """Write ``model`` to ``<directory>/model.skops`` (no pickle) and check it can be loaded."""
    import skops.io

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILE
    skops.io.dump(model, path)
    _refuse_untrusted(path)  # fail at save time, not when the stream tries to load it
    return path


def load_model_file(path: str | Path):
    """Load a model saved by :func:`save_model_file`; ``path`` is the file or its folder.

    Raises :class:`UntrustedModelError` naming every type that is not on
    :data:`TRUSTED_TYPES`, before any of them is built.
    """
    import skops.io

    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {MODEL_FILE} at {path}: this is not a learnscore model folder")
    _refuse_untrusted(path)
    return skops.io.load(path, trusted=list(TRUSTED_TYPES))


def untrusted_types(path: str | Path) -> list[str]:
    """The types a skops file asks for that are not on :data:`TRUSTED_TYPES` (read from the
    file's schema; nothing in it is built or run)."""
    import skops.io

    return sorted(set(skops.io.get_untrusted_types(file=Path(path))) - set(TRUSTED_TYPES))


def _refuse_untrusted(path: Path) -> None:
    untrusted = untrusted_types(path)
    if untrusted:
        raise UntrustedModelError(
            f"refusing to load {path}: it asks for type(s) {', '.join(untrusted)} which are not on "
            f"the reviewed list learnscore.model.loader.TRUSTED_TYPES. If the model is genuine, review "
            f"those types and add them to the list in code.")


_CACHE: OrderedDict[str, object] = OrderedDict()
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()


def _load_pyfunc(path: str):
    """MLflow pyfunc entry point: ``path`` is the model's data folder holding model.skops.

    ``mlflow.pyfunc.spark_udf`` loads the model again in every task; a Python worker keeps the
    last few models it loaded, keyed by the file's SHA-256 (so a changed file is never served
    from memory, and the trust check ran when it was first loaded).
    """
    file = Path(path) / MODEL_FILE if Path(path).is_dir() else Path(path)
    digest = hashlib.sha256(file.read_bytes()).hexdigest() if file.exists() else ""
    with _CACHE_LOCK:
        if digest in _CACHE:
            _CACHE.move_to_end(digest)
            return _CACHE[digest]
    model = load_model_file(path)
    log.info("loaded %r from %s", model, path)
    with _CACHE_LOCK:
        _CACHE[digest] = model
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return model
