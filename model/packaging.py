"""Log a DiagnosticModel to MLflow as a pyfunc that loads through skops, never pickle.

The streaming scorer and every other Spark job score with exactly this call::

    import mlflow
    from learnscore.schemas.scoring import PREDICTION_RESULT_TYPE   # the string below
    from learnscore.model.features import spark_model_input_columns

    predict = mlflow.pyfunc.spark_udf(
        spark, "models:/<model_name>@production",         # registry.aliases.production_model_uri(config)
        result_type="progress_score double, comprehension_level string, p_beginner double, "
                    "p_developing double, p_proficient double, p_advanced double",
        env_manager="local")
    scored = submissions.withColumn("prediction", predict(*spark_model_input_columns()))
    # prediction.progress_score, prediction.comprehension_level, prediction.p_beginner, ...

``submissions`` is shaped like ``silver.submissions``; ``spark_model_input_columns()`` selects
``subject``, ``grade_level`` and the six ARRAY columns (``responses.item_id`` …) in the
signature's order, which is how ``spark_udf`` names positional arguments. No struct packing is
needed.

Two MLflow details decided here:

* Serialization: MLflow 3.17 refuses every sklearn-flavour model (skops included) while
  ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``, which all our processes set. So the model is a
  pyfunc with ``loader_module="learnscore.model.loader"``: the data folder holds ``model.skops`` and
  the loader checks it against a type list kept in our code (see that module).
* Input checking: the signature declares the list columns as ``Array`` types (the contract,
  checked by the registry gates). MLflow's own enforcement of Array columns walks every cell in
  Python (≈3.8k rows/s measured), slower than the stream must run, so the signature is marked as
  checked by the model itself: :func:`learnscore.model.features.flatten_model_input` validates the whole
  batch vectorised and raises :class:`learnscore.model.features.ModelInputError` naming row and column.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from importlib.metadata import version as package_version
from pathlib import Path

import pandas as pd

from learnscore.model.diagnostic import DiagnosticModel
from learnscore.model.loader import save_model_file
from learnscore.schemas.events import LEVELS
from learnscore.schemas.scoring import MODEL_INPUT_COLUMNS, RESPONSE_COLUMNS

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model"
_RUNTIME_PACKAGES = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "pyarrow")


def model_signature():
    """The contract of the pyfunc: model input columns in, prediction columns out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    element = {"item_id": DataType.string, "skill": DataType.string, "correct": DataType.boolean,
               "response_time_ms": DataType.long, "attempts": DataType.long,
               "hint_used": DataType.boolean}
    inputs = Schema([ColSpec(DataType.string, "subject"), ColSpec(DataType.long, "grade_level"),
                     *(ColSpec(Array(element[c]), c) for c in RESPONSE_COLUMNS)])
    outputs = Schema([ColSpec(DataType.double, "progress_score"),
                      ColSpec(DataType.string, "comprehension_level"),
                      *(ColSpec(DataType.double, f"p_{level}") for level in LEVELS)])
    signature = ModelSignature(inputs=inputs, outputs=outputs)
    # The model checks its input itself, vectorised (see the module docstring).
    signature._is_signature_from_type_hint = True
    return signature


def input_example(model_input: pd.DataFrame, rows: int = 3) -> list[dict]:
    """A few rows of model input as JSON-ready records.

    Records rather than a DataFrame: MLflow then writes the serving example as
    ``{"inputs": [...]}``, the payload shape a model that checks its own input receives.
    """
    example = model_input.loc[:, list(MODEL_INPUT_COLUMNS)].head(rows)
    return [{column: ([_plain(v) for v in row[column]] if column in RESPONSE_COLUMNS
                      else _plain(row[column])) for column in MODEL_INPUT_COLUMNS}
            for _, row in example.iterrows()]


def log_diagnostic_model(model: DiagnosticModel, signature_example_df: pd.DataFrame) -> str:
    """Log ``model`` into the active MLflow run (or a new one); return its model URI.

    ``signature_example_df`` is model input; its first rows become the input example.
    """
    import mlflow

    example = input_example(signature_example_df)
    with tempfile.TemporaryDirectory(prefix="learnscore-model-") as scratch:
        data_dir = Path(scratch) / "diagnostic_model"
        save_model_file(model, data_dir)
        with warnings.catch_warnings():
            # MLflow hints that int columns cannot hold NaN; ours never do (the contract forbids it).
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            info = _log_pyfunc(mlflow, data_dir, example)
    log.info("logged the model as %s", info.model_uri)
    return info.model_uri


def _log_pyfunc(mlflow, data_dir: Path, example: list[dict]):
    return mlflow.pyfunc.log_model(
        name=ARTIFACT_NAME,
        loader_module="learnscore.model.loader",
        data_path=str(data_dir),
        signature=model_signature(),
        input_example=example,
        pip_requirements=[f"{p}=={package_version(p)}" for p in _RUNTIME_PACKAGES],
    )


def _plain(value):
    return value.item() if hasattr(value, "item") else value
