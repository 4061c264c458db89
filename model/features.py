"""The feature contract: the ONE place that turns submissions into model features.

Training (Spark → pandas), the streaming scorer (the MLflow pyfunc Spark UDF) and the REST
endpoint all hand the model the same *model input* — one row per submission:

=====================  =========================================================
column                 type
=====================  =========================================================
``subject``            str, one of the domain's subjects (``domain.subjects``)
``grade_level``        int64
``item_id``            list[str]   one value per response, in answer order
``skill``              list[str]
``correct``            list[bool]
``response_time_ms``   list[int64]
``attempts``           list[int64]
``hint_used``          list[bool]
=====================  =========================================================

Three builders produce it: :func:`spark_model_input_columns` (a Spark ``select`` over a
``silver.submissions``-shaped DataFrame), :func:`model_input_from_events` (validated
``DiagnosticSubmitted`` dicts, for tests and batch callers) and :func:`model_input_from_arrow`
(an Arrow table of ``silver.submissions``, for Spark-free readers such as the registry gates).
:func:`compute_features` turns it into features, vectorised over the flattened lists, so the
three paths cannot disagree (``tests/schemas/test_feature_parity.py`` proves it).

The REST endpoint scores one submission per request, where building a one-row DataFrame costs
more than the features themselves. Its fast path, :func:`flatten_events`, goes from validated
events straight to the flat arrays that :func:`compute_features` builds internally, and
:func:`feature_matrix` computes the very same features from them as a plain array; the parity
test holds this path to the others, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from learnscore.model.item_bank import ItemBank, estimate_ability, index_of
from learnscore.schemas.scoring import MODEL_INPUT_COLUMNS, RESPONSE_COLUMNS

_STRING_LISTS = ("item_id", "skill")
_LIST_DTYPES = {"correct": np.bool_, "response_time_ms": np.int64, "attempts": np.int64,
                "hint_used": np.bool_}

#: Features every model has. A one-hot slot per subject of the model's item bank follows them,
#: then a per-skill accuracy per skill of the bank: see :func:`feature_names`. The subjects and
#: skills are the ones the model was trained on (the bank is learned from its training data), so
#: a subject added to ``domain.subjects`` becomes a feature of the next model trained on it.
FEATURE_NAMES = (
    "n_responses", "accuracy", "first_try_accuracy", "mean_attempts", "multi_attempt_share",
    "hint_share", "mean_log_time", "median_log_time", "std_log_time", "log_time_residual",
    "ability", "ability_se", "mean_item_difficulty", "unknown_item_share", "grade_level",
)
SUBJECT_FEATURE_PREFIX = "subject_"
SKILL_FEATURE_PREFIX = "skill_accuracy__"


class ModelInputError(ValueError):
    """The model input does not follow the contract above; the message says where and how."""


def feature_names(item_bank: ItemBank) -> list[str]:
    """All feature columns for a model with this item bank, in order."""
    return [*FEATURE_NAMES, *(SUBJECT_FEATURE_PREFIX + subject for subject in item_bank.subjects),
            *(SKILL_FEATURE_PREFIX + skill for skill in item_bank.skills)]


# -- building the model input -----------------------------------------------------------------


def model_input_from_events(events: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Model input from validated ``DiagnosticSubmitted`` events (decoded JSON dicts).

    >>> event = {"subject": "math", "grade_level": 4, "responses": [
    ...     {"item_id": "m-1", "skill": "fractions", "correct": True, "response_time_ms": 5200,
    ...      "attempts": 1, "hint_used": False}]}
    >>> model_input_from_events([event]).iloc[0].to_dict()["item_id"]
    ['m-1']
    """
    events = list(events)
    data: dict[str, Any] = {
        "subject": [event["subject"] for event in events],
        "grade_level": np.array([event["grade_level"] for event in events], dtype=np.int64),
    }
    for column in RESPONSE_COLUMNS:
        data[column] = [[response[column] for response in event["responses"]] for event in events]
    return pd.DataFrame(data, columns=list(MODEL_INPUT_COLUMNS))


def as_model_input(data: Any) -> pd.DataFrame:
    """Accept model input as a DataFrame, a list of row dicts or a dict of columns.

    MLflow hands a pyfunc whatever its caller sent (the serving example is a list of records).

    >>> as_model_input([{"subject": "math", "grade_level": 3, "item_id": ["a"]}]).shape
    (1, 3)
    """
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, list):
        return pd.DataFrame.from_records(data)
    if isinstance(data, dict):
        return pd.DataFrame(data)
    raise ModelInputError(f"model input must be a DataFrame, a list of rows or a dict of columns, "
                          f"got {type(data).__name__}")


def model_input_from_arrow(submissions: pa.Table) -> pd.DataFrame:
    """Model input from an Arrow table shaped like ``silver.submissions`` (``responses`` list).

    The response fields are split into list columns without touching Python objects.
    """
    responses = submissions.column("responses").combine_chunks()
    if responses.null_count:
        raise ModelInputError(f"{responses.null_count} submission(s) have no responses list")
    lengths = pc.list_value_length(responses).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    flat = pc.list_flatten(responses)
    data: dict[str, Any] = {
        "subject": submissions.column("subject").to_pandas(),
        "grade_level": submissions.column("grade_level").to_numpy().astype(np.int64),
    }
    for column in RESPONSE_COLUMNS:
        data[column] = pa.ListArray.from_arrays(offsets, flat.field(column)).to_pandas()
    return pd.DataFrame(data, columns=list(MODEL_INPUT_COLUMNS))


def spark_model_input_columns() -> list:
    """Spark columns selecting the model input from a ``silver.submissions``-shaped DataFrame.

    ``responses.item_id`` on an array of structs is the array of that field, in order.
    """
    from pyspark.sql import functions as F

    return [F.col("subject"), F.col("grade_level").cast("bigint").alias("grade_level"),
            *(F.col(f"responses.{column}").alias(column) for column in RESPONSE_COLUMNS)]


# -- flattening --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlatResponses:
    """Every response of a batch in flat arrays; ``row`` says which submission each is from.

    Responses of one submission are contiguous, in answer order; ``offsets[r]:offsets[r+1]``
    are the responses of row ``r``.
    """

    n_rows: int
    row: np.ndarray
    offsets: np.ndarray
    subject: pa.Array  # per row
    grade_level: np.ndarray  # per row
    item_id: pa.Array
    skill: pa.Array
    correct: np.ndarray
    response_time_ms: np.ndarray
    attempts: np.ndarray
    hint_used: np.ndarray

    @property
    def response_subject(self) -> pa.Array:
        return self.subject.take(pa.array(self.row))

    @property
    def log_time(self) -> np.ndarray:
        return np.log1p(self.response_time_ms.astype(np.float64))


def flatten_model_input(model_input: pd.DataFrame) -> FlatResponses:
    """Check the model input against the contract and flatten its response lists.

    Raises :class:`ModelInputError` naming the column and row of the first problem.
    """
    missing = [c for c in MODEL_INPUT_COLUMNS if c not in model_input.columns]
    if missing:
        raise ModelInputError(
            f"model input lacks column(s) {', '.join(missing)}; it needs "
            f"{', '.join(MODEL_INPUT_COLUMNS)} (see learnscore/schemas/scoring.py)")
    n_rows = len(model_input)
    cells = {column: model_input[column].to_numpy() for column in RESPONSE_COLUMNS}
    lengths = _list_lengths("item_id", cells["item_id"])
    if n_rows and lengths.min() == 0:
        raise ModelInputError(f"row {int(np.argmin(lengths))} has no responses; a submission "
                              f"needs at least one")
    for column in RESPONSE_COLUMNS[1:]:
        other = _list_lengths(column, cells[column])
        if not np.array_equal(other, lengths):
            bad = int(np.flatnonzero(other != lengths)[0])
            raise ModelInputError(
                f"row {bad}: {column!r} has {other[bad]} values but 'item_id' has {lengths[bad]}; "
                f"every response list needs one value per response")
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = {column: _concatenate(column, cells[column], int(offsets[-1])) for column in RESPONSE_COLUMNS}
    subject = _strings("subject", model_input["subject"].to_numpy())
    grade = pd.to_numeric(model_input["grade_level"], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(grade).any():
        raise ModelInputError(f"row {int(np.flatnonzero(np.isnan(grade))[0])}: grade_level is "
                              f"missing or not a number")
    return FlatResponses(n_rows=n_rows, row=np.repeat(np.arange(n_rows), lengths), offsets=offsets,
                         subject=subject, grade_level=grade, **flat)


def flatten_events(events: Sequence[dict[str, Any]]) -> FlatResponses:
    """Flat responses straight from ``DiagnosticSubmitted`` dicts the contract accepted.

    The endpoint's fast path: the same arrays as
    ``flatten_model_input(model_input_from_events(events))`` without the DataFrame in between.
    It checks nothing that the contract (``learnscore.schemas.events.validate_event``) already checked —
    at least one response, the types of every field — so only validated events may come here.

    >>> event = {"subject": "math", "grade_level": 4, "responses": [
    ...     {"item_id": "m-1", "skill": "fractions", "correct": True, "response_time_ms": 5200,
    ...      "attempts": 1, "hint_used": False}]}
    >>> flat = flatten_events([event, event])
    >>> flat.n_rows, flat.offsets.tolist(), flat.item_id.to_pylist()
    (2, [0, 1, 2], ['m-1', 'm-1'])
    """
    n_rows = len(events)
    lengths = np.fromiter((len(event["responses"]) for event in events), dtype=np.int64, count=n_rows)
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    responses = [response for event in events for response in event["responses"]]
    flat: dict[str, Any] = {
        column: pa.array([response[column] for response in responses], type=pa.string())
        for column in _STRING_LISTS}
    for column, dtype in _LIST_DTYPES.items():
        flat[column] = np.fromiter((response[column] for response in responses), dtype=dtype, count=total)
    return FlatResponses(
        n_rows=n_rows, row=np.repeat(np.arange(n_rows), lengths), offsets=offsets,
        subject=pa.array([event["subject"] for event in events], type=pa.string()),
        grade_level=np.fromiter((event["grade_level"] for event in events), dtype=np.float64, count=n_rows),
        **flat)


def _list_lengths(column: str, cells: np.ndarray) -> np.ndarray:
    try:
        return np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))
    except TypeError:
        bad = next(i for i, cell in enumerate(cells) if not hasattr(cell, "__len__") or isinstance(cell, str))
        raise ModelInputError(f"row {bad}: {column!r} must be a list, got "
                              f"{type(cells[bad]).__name__}") from None


def _concatenate(column: str, cells: np.ndarray, total: int):
    if column in _STRING_LISTS:
        values = np.concatenate(cells) if total else np.array([], dtype=object)
        return _strings(column, values)
    if not total:
        return np.array([], dtype=_LIST_DTYPES[column])
    values = np.concatenate(cells)
    if values.dtype == object or values.dtype.kind not in "biuf":
        nulls = pd.isna(values)
        if nulls.any():
            raise ModelInputError(f"{column!r} has a missing value in response {int(np.argmax(nulls))} "
                                  f"(counting across the batch); every response needs one")
        if _LIST_DTYPES[column] is np.bool_ and not all(isinstance(v, (bool, np.bool_)) for v in values):
            raise ModelInputError(f"{column!r} must hold true/false values")
    try:
        return values.astype(_LIST_DTYPES[column])
    except (TypeError, ValueError):
        raise ModelInputError(f"{column!r} must hold {_LIST_DTYPES[column].__name__} values") from None


def _strings(column: str, values: np.ndarray) -> pa.Array:
    try:
        array = pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise ModelInputError(f"{column!r} must hold strings") from None
    if array.null_count:
        raise ModelInputError(f"{column!r} has {array.null_count} missing value(s)")
    return array


# -- features ----------------------------------------------------------------------------------


def compute_features(model_input: pd.DataFrame, item_bank: ItemBank) -> pd.DataFrame:
    """Features of each submission (columns :func:`feature_names`, float64, same row order).

    Skill accuracies are NaN for skills a submission did not touch (the tree models treat
    missing values natively).
    """
    return features_from_flat(flatten_model_input(model_input), item_bank, index=model_input.index)


def features_from_flat(flat: FlatResponses, item_bank: ItemBank, index=None) -> pd.DataFrame:
    """:func:`compute_features` on already flattened responses."""
    return pd.DataFrame(feature_matrix(flat, item_bank), columns=feature_names(item_bank), index=index)


def feature_matrix(flat: FlatResponses, item_bank: ItemBank) -> np.ndarray:
    """The features of each row as one float64 array, columns in :func:`feature_names` order.

    What :func:`features_from_flat` wraps in a DataFrame; the endpoint hands it to the model as is.
    """
    n, row = flat.n_rows, flat.row
    count = np.diff(flat.offsets).astype(np.float64)

    def per_row_mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(row, weights=values, minlength=n) / count if n else np.zeros(0)

    correct = flat.correct.astype(np.float64)
    log_time = flat.log_time
    a, b, expected_log_time, known = item_bank.lookup(flat.item_id, flat.skill, flat.subject, row)
    ability, ability_se = estimate_ability(flat.correct, a, b, row, n)
    mean_log_time = per_row_mean(log_time)
    variance = per_row_mean(log_time * log_time) - mean_log_time ** 2

    columns = {
        "n_responses": count,
        "accuracy": per_row_mean(correct),
        "first_try_accuracy": per_row_mean(correct * (flat.attempts == 1) * ~flat.hint_used),
        "mean_attempts": per_row_mean(flat.attempts.astype(np.float64)),
        "multi_attempt_share": per_row_mean((flat.attempts > 1).astype(np.float64)),
        "hint_share": per_row_mean(flat.hint_used.astype(np.float64)),
        "mean_log_time": mean_log_time,
        "median_log_time": _per_row_median_log_time(flat),
        "std_log_time": np.sqrt(np.maximum(variance, 0.0)),
        "log_time_residual": per_row_mean(log_time - expected_log_time),
        "ability": ability,
        "ability_se": ability_se,
        "mean_item_difficulty": per_row_mean(b),
        "unknown_item_share": per_row_mean((~known).astype(np.float64)),
        "grade_level": flat.grade_level,
    }
    n_subjects, n_skills = len(item_bank.subjects), len(item_bank.skills)
    matrix = np.empty((n, len(FEATURE_NAMES) + n_subjects + n_skills))
    for position, name in enumerate(FEATURE_NAMES):
        matrix[:, position] = columns[name]
    subject_index, _ = index_of(flat.subject, item_bank.subjects)  # −1: a subject the model never saw
    for position in range(n_subjects):
        matrix[:, len(FEATURE_NAMES) + position] = (subject_index == position).astype(np.float64)
    skill_index, skill_known = index_of(flat.skill, item_bank.skills)
    key = row[skill_known] * n_skills + skill_index[skill_known]
    seen = np.bincount(key, minlength=n * n_skills).reshape(n, n_skills)
    right = np.bincount(key, weights=correct[skill_known], minlength=n * n_skills).reshape(n, n_skills)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix[:, len(FEATURE_NAMES) + n_subjects:] = np.where(seen > 0, right / seen, np.nan)  # skill accuracies
    return matrix


def _per_row_median_log_time(flat: FlatResponses) -> np.ndarray:
    """Median log response time of each row (rows are contiguous runs of responses).

    log1p is monotone, so the median of log times is the log of the middle time(s). One sort
    of ``row · 2²³ + time`` orders every row at once; times are clipped at 2²³ − 1 ms
    (2.3 hours, beyond the contract's one-hour limit).
    """
    if flat.n_rows == 0:
        return np.zeros(0)
    mask = (1 << 23) - 1
    keys = np.sort((flat.row.astype(np.int64) << 23)
                   | np.clip(flat.response_time_ms, 0, mask).astype(np.int64))
    ordered = np.log1p((keys & mask).astype(np.float64))
    count, start = np.diff(flat.offsets), flat.offsets[:-1]
    return 0.5 * (ordered[start + count // 2] + ordered[start + (count - 1) // 2])
