"""The covariate signals of scored rows, from the shared feature code.

The detectors watch three features (accuracy, ability estimate, mean log response time). When
the stream hands the drift hook its scored rows *with* those columns they are used as they are;
when it hands the model input instead (the ``responses`` of ``silver.submissions``, or its
flattened list columns), they are computed here with :func:`learnscore.model.features.compute_features`
and the item bank of the model version that scored each row — the same numbers the model saw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

DRIFT_FEATURES = ("accuracy", "ability", "mean_log_time")
#: pandas holds timestamps in nanoseconds (from 1677-09-22); the contract accepts event times from
#: year 1. Drift reads event times only to order and window rows, so older ones are raised to this
#: bound before a Spark frame is collected (else Arrow's conversion fails and the batch with it).
PANDAS_MIN_SECONDS = -9_223_372_035


def pandas_safe_times(frame):
    """A Spark frame whose timestamp columns pandas can hold (see :data:`PANDAS_MIN_SECONDS`)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampType

    floor = F.timestamp_seconds(F.lit(PANDAS_MIN_SECONDS))
    return frame.select(*[F.greatest(F.col(f.name), floor).alias(f.name) if isinstance(f.dataType, TimestampType)
                          else F.col(f.name) for f in frame.schema.fields])


KEY_COLUMNS = ("event_id", "event_time", "subject", "grade_level", "model_version",
               "progress_score")


class MissingModelInput(KeyError):
    """Scored rows carry neither the drift features nor the model input to compute them."""


def with_drift_features(frame, item_bank: Callable[[str], Any],
                        submissions: Callable[[], Any] | None = None) -> pd.DataFrame:
    """Scored rows as pandas with :data:`KEY_COLUMNS` and :data:`DRIFT_FEATURES`.

    ``frame`` is pandas or Spark; Spark frames are reduced on the executors and only those
    columns reach the driver. A Spark frame with neither the features nor the model input
    (``gold.predictions`` rows) is joined on ``event_id`` with ``submissions()`` (a
    ``silver.submissions`` DataFrame) for its responses — a fallback that reads that table
    once per batch; passing the model input along avoids it.
    """
    columns = list(frame.columns)
    missing_keys = [c for c in KEY_COLUMNS if c not in columns]
    if missing_keys:
        raise MissingModelInput(f"scored rows for drift detection lack {missing_keys}; they have "
                                f"{sorted(columns)}")
    if all(feature in columns for feature in DRIFT_FEATURES):
        if isinstance(frame, pd.DataFrame):
            return frame[[*KEY_COLUMNS, *DRIFT_FEATURES]]
        return pandas_safe_times(frame.select(*KEY_COLUMNS, *DRIFT_FEATURES)).toPandas()
    if isinstance(frame, pd.DataFrame):
        return _features_pandas(_model_input_pandas(frame), item_bank)
    from learnscore.schemas.scoring import MODEL_INPUT_COLUMNS

    has_input = "responses" in columns or all(c in columns for c in MODEL_INPUT_COLUMNS)
    if not has_input and submissions is not None:
        _warn_join_once()
        frame = frame.join(submissions().select("event_id", "responses"), "event_id")
    return _features_spark(frame, item_bank)


_warned: list[bool] = []


def _warn_join_once() -> None:
    if not _warned:
        _warned.append(True)
        log.warning("drift: scored rows come without features or model input; joining "
                    "silver.submissions for their responses on every batch (pass the responses "
                    "to the after-scoring hooks to avoid this read)")


def _model_input_pandas(frame: pd.DataFrame) -> pd.DataFrame:
    from learnscore.schemas.scoring import MODEL_INPUT_COLUMNS, RESPONSE_COLUMNS

    if all(column in frame.columns for column in MODEL_INPUT_COLUMNS):
        return frame
    if "responses" not in frame.columns:
        raise MissingModelInput(
            f"scored rows for drift detection need the features {list(DRIFT_FEATURES)} or the "
            f"model input (a 'responses' column, or {list(MODEL_INPUT_COLUMNS)}); they have "
            f"{sorted(frame.columns)}")
    flat = {column: [[r[column] for r in responses] for responses in frame["responses"]]
            for column in RESPONSE_COLUMNS}
    return frame.assign(**flat)


def _features_pandas(frame: pd.DataFrame, item_bank: Callable[[str], Any]) -> pd.DataFrame:
    from learnscore.model.features import compute_features
    from learnscore.schemas.scoring import MODEL_INPUT_COLUMNS

    parts = []
    for version, rows in frame.groupby(frame["model_version"].astype(str), sort=False):
        features = compute_features(rows[list(MODEL_INPUT_COLUMNS)], item_bank(version))
        parts.append(rows[list(KEY_COLUMNS)].assign(
            **{feature: features[feature].to_numpy() for feature in DRIFT_FEATURES}))
    if not parts:
        return pd.DataFrame(columns=[*KEY_COLUMNS, *DRIFT_FEATURES])
    return pd.concat(parts).loc[frame.index]


def _features_spark(frame, item_bank: Callable[[str], Any]) -> pd.DataFrame:
    """One Spark job: the keys and the model input reach the driver, features are computed
    there with the vectorised shared code (cheaper than a second job for per-version banks)."""
    from pyspark.sql import functions as F

    from learnscore.model.features import spark_model_input_columns
    from learnscore.schemas.scoring import MODEL_INPUT_COLUMNS

    columns = list(frame.columns)
    keys = [F.col(c) for c in KEY_COLUMNS if c not in ("subject", "grade_level", "model_version")]
    version = F.col("model_version").cast("string").alias("model_version")
    if "responses" in columns:
        selected = frame.select(*keys, version, *spark_model_input_columns())
    elif all(column in columns for column in MODEL_INPUT_COLUMNS):
        selected = frame.select(*keys, version, *MODEL_INPUT_COLUMNS)
    else:
        raise MissingModelInput(
            f"scored rows for drift detection need the features {list(DRIFT_FEATURES)} or the "
            f"model input (a 'responses' column, or {list(MODEL_INPUT_COLUMNS)}); they have "
            f"{sorted(columns)}")
    return _features_pandas(pandas_safe_times(selected).toPandas(), item_bank)
