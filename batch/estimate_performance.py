"""``learnscore monitor performance``: performance per model version, segment and window,
estimated before the outcomes arrive → ``ops.estimated_performance``.

Spark-free (``deltalake`` readers), meant to run on a schedule next to ``monitor drift``:

* **Windows**: the last ``windows`` complete windows of ``window`` length (aligned to multiples
  of the window since the epoch), by submission event time.
* **Rows**: each version's predictions in the window (``gold.predictions``), per segment
  (subject × grade band, :mod:`learnscore.schemas.segments`) and ``all``; a cell with fewer
  than ``estimation.min_window_rows`` predictions is left out.
* **Estimate** (:mod:`learnscore.model.estimation`): CBPE for accuracy and macro-F1, DLE for the
  MAE, both fitted on the version's own labelled rows *before* the window
  (``gold.prediction_outcomes`` ⋈ ``gold.predictions`` for the probabilities), the newest
  ``estimation.reference_rows`` of them. A version with fewer than
  ``estimation.min_reference_rows`` such rows gets no estimate for that window (its row says
  how many predictions and outcomes it had). Refitting for every window would cost a fit per
  window; the estimators are refitted when the reference grew by a tenth since the last fit
  (an older reference is still one from before the window).
* **Realized**: once at least ``estimation.min_labelled_rows`` of a cell's predictions have
  their outcome, the realized accuracy, macro-F1 and MAE of those rows, next to the estimate.
* **Alert**: in the newest window, a version whose estimated macro-F1 or MAE is past the gates'
  floors (``gates.min_macro_f1``, ``gates.max_mae``) raises ``performance_below_floor``.

Rows are MERGEd on (model_version, segment, window_start, window_end): running the report again
replaces its rows (realized figures fill in as outcomes arrive).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

from learnscore.batch.drift_report import window_starts
from learnscore.core.config import Config
from learnscore.model.estimation import OUTCOME_COLUMNS, PREDICTION_COLUMNS, PerformanceEstimator, realized_metrics
from learnscore.schemas.segments import segment_labels
from learnscore.schemas.tables import ESTIMATED_PERFORMANCE, PREDICTION_OUTCOMES, PREDICTIONS

log = logging.getLogger(__name__)

ALL_SEGMENTS = "all"
KEYS = ("model_version", "segment", "window_start", "window_end")
REFIT_GROWTH = 0.1
_METRICS = ("accuracy", "macro_f1", "mae")


class PerformanceReportError(RuntimeError):
    """The report cannot run; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class PerformanceSummary:
    window_starts: list[datetime]
    rows: list[dict[str, Any]]
    alerts: list[str]


# -- pure parts ---------------------------------------------------------------------------------
def estimate_windows(predictions: pd.DataFrame, pairs: pd.DataFrame, starts: list[datetime],
                     window: timedelta, *, config: Config, computed_at: datetime) -> list[dict[str, Any]]:
    """``ops.estimated_performance`` rows for every version with predictions in the windows.

    ``predictions``: ``gold.predictions`` rows (at least ``event_id``, ``model_version``,
    ``event_time`` and :data:`learnscore.model.estimation.PREDICTION_COLUMNS`) covering the windows
    and the reference rows; ``pairs``: ``gold.prediction_outcomes`` rows (``event_id``,
    ``model_version``, ``event_time`` and the observed columns) up to the last window's end.
    """
    settings = config.estimation
    predictions = predictions.assign(event_time=pd.to_datetime(predictions["event_time"], utc=True))
    pairs = pairs.assign(event_time=pd.to_datetime(pairs["event_time"], utc=True))
    # The pairs with the prediction columns of the score they pair (probabilities are in gold only).
    labelled = pairs[["event_id", "model_version", *OUTCOME_COLUMNS]].merge(
        predictions[["event_id", "model_version", "event_time", *PREDICTION_COLUMNS]],
        on=["event_id", "model_version"], how="inner").sort_values("event_time", kind="stable")
    segments = segment_labels(predictions, config.drift.grade_bands)
    rows: list[dict[str, Any]] = []
    for version, scored in predictions.groupby("model_version", sort=True):
        version_labelled = labelled[labelled["model_version"] == version]
        estimator, fitted_on, fitted_until = None, 0, None
        for start in starts:
            end = start + window
            inside = scored[(scored["event_time"] >= start) & (scored["event_time"] < end)]
            if inside.empty:
                continue
            reference = version_labelled[version_labelled["event_time"] < start].tail(settings.reference_rows)
            if len(reference) < settings.min_reference_rows:
                estimator, fitted_on, fitted_until = None, 0, None
            elif estimator is None or (reference["event_time"] > fitted_until).sum() >= REFIT_GROWTH * fitted_on:
                estimator = PerformanceEstimator().fit(reference)
                fitted_on, fitted_until = len(reference), reference["event_time"].max()
            window_pairs = version_labelled[version_labelled["event_id"].isin(inside["event_id"])]
            cells = [(ALL_SEGMENTS, inside, window_pairs)]
            inside_segments = segments.loc[inside.index]
            pair_segments = segment_labels(window_pairs, config.drift.grade_bands)
            for label in sorted(inside_segments.dropna().unique()):
                cells.append((label, inside[inside_segments == label], window_pairs[pair_segments == label]))
            for label, cell, cell_pairs in cells:
                if len(cell) < settings.min_window_rows:
                    continue
                rows.append(_row(str(version), label, start, end, cell, cell_pairs, estimator, fitted_on,
                                 settings.min_labelled_rows, computed_at))
    return rows


def _row(version: str, segment: str, start: datetime, end: datetime, cell: pd.DataFrame,
         cell_pairs: pd.DataFrame, estimator: PerformanceEstimator | None, n_reference: int,
         min_labelled: int, computed_at: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {"model_version": version, "segment": segment, "window_start": start,
                           "window_end": end, "n_rows": len(cell), "n_reference": n_reference,
                           "n_labelled": len(cell_pairs), "computed_at": computed_at}
    estimate = estimator.estimate(cell) if estimator is not None else None
    realized = realized_metrics(cell_pairs) if len(cell_pairs) >= min_labelled else None
    for metric in _METRICS:
        row[f"estimated_{metric}"] = _finite(getattr(estimate, metric)) if estimate else None
        row[f"realized_{metric}"] = _finite(realized[metric]) if realized else None
    return row


def floor_breaches(rows: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    """The rows of the newest window whose estimate is past a gates floor, each with ``why``.

    >>> from learnscore.core.config import Config
    >>> row = {"model_version": "3", "segment": "all", "window_start": 1, "estimated_macro_f1": 0.31,
    ...        "estimated_mae": 6.0}
    >>> [r["why"] for r in floor_breaches([row], Config())]
    ['estimated macro-F1 0.310 is below the floor 0.400']
    """
    if not rows:
        return []
    newest = max(row["window_start"] for row in rows)
    gates = config.gates
    breaches = []
    for row in rows:
        if row["window_start"] != newest:
            continue
        why = []
        f1, mae = row.get("estimated_macro_f1"), row.get("estimated_mae")
        if f1 is not None and f1 < gates.min_macro_f1:
            why.append(f"estimated macro-F1 {f1:.3f} is below the floor {gates.min_macro_f1:.3f}")
        if mae is not None and mae > gates.max_mae:
            why.append(f"estimated MAE {mae:.2f} is above the limit {gates.max_mae:.2f}")
        if why:
            breaches.append({**row, "why": "; ".join(why)})
    return breaches


def _finite(value) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# -- the job (I/O) --------------------------------------------------------------------------------
def run_performance_report(config: Config, *, window: timedelta, windows: int,
                           now: datetime | None = None) -> PerformanceSummary:
    """Estimate the last ``windows`` windows, MERGE them into ``ops.estimated_performance`` and
    alert on floors (module docstring)."""
    from learnscore.core.alerts import alert
    from learnscore.core.lake import upsert_rows

    now = now or datetime.now(timezone.utc)
    starts = window_starts(now, window, windows)[1:]
    end = starts[-1] + window
    predictions, pairs = read_report_inputs(config, starts[0], end, config.estimation.reference_rows)
    log.info("performance report: %d predictions and %d labelled rows for %d windows of %s from %s",
             len(predictions), len(pairs), windows, window, starts[0].isoformat())
    rows = estimate_windows(predictions, pairs, starts, window, config=config, computed_at=now)
    upsert_rows(config, ESTIMATED_PERFORMANCE.name, rows, KEYS)
    sent = []
    for breach in floor_breaches(rows, config):
        text = (f"version {breach['model_version']}, segment {breach['segment']}, window from "
                f"{breach['window_start'].isoformat()}: {breach['why']} ({breach['n_rows']} predictions, "
                f"{breach['n_labelled']} with outcomes)")
        if alert("performance_below_floor", text, key=f"{breach['model_version']}/{breach['segment']}/"
                                                      f"{breach['window_start'].isoformat()}",
                 version=breach["model_version"], segment=breach["segment"],
                 estimated_macro_f1=breach["estimated_macro_f1"], estimated_mae=breach["estimated_mae"],
                 n_rows=breach["n_rows"]):
            sent.append(text)
    return PerformanceSummary(starts, rows, sent)


def read_report_inputs(config: Config, since: datetime, until: datetime,
                       reference_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(predictions, pairs)`` for windows in ``[since, until)``: the pairs of every version up to
    ``until`` (their reference lies before the windows) and the predictions of the windows plus
    those the newest ``reference_rows`` pairs of each version refer to."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pairs_columns = ["event_id", "model_version", "event_time", "subject", "grade_level",
                     "progress_score", "comprehension_level", *OUTCOME_COLUMNS]
    pairs = _read(config, PREDICTION_OUTCOMES.name, pairs_columns, pc.field("event_time") < _ts(until))
    if pairs is None:
        pairs = pd.DataFrame(columns=pairs_columns)
    # Each version's newest reference rows before the first window; the later windows' references
    # are newer still, so they are among the pairs inside the windows.
    before = pairs[pd.to_datetime(pairs["event_time"], utc=True) < since]
    needed = (before.sort_values("event_time", kind="stable").groupby("model_version").tail(reference_rows)
              ["event_id"].tolist())
    columns = ["event_id", "model_version", "event_time", *PREDICTION_COLUMNS]
    in_windows = (pc.field("event_time") >= _ts(since)) & (pc.field("event_time") < _ts(until))
    if needed:
        in_windows = in_windows | pc.field("event_id").isin(pa.array(needed, pa.string()))
    predictions = _read(config, PREDICTIONS.name, columns, in_windows)
    if predictions is None:
        raise PerformanceReportError(
            f"{PREDICTIONS.name} does not exist at {config.table_path(PREDICTIONS.name)}: run the "
            f'streaming scorer ("learnscore stream start") so that there are predictions to judge')
    return predictions, pairs


def _read(config: Config, name: str, columns: list[str], where) -> pd.DataFrame | None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        dataset = DeltaTable(config.table_path(name)).to_pyarrow_dataset()
    except TableNotFoundError:
        return None
    return dataset.to_table(columns=columns, filter=where).to_pandas()


def _ts(moment: datetime):
    import pyarrow as pa

    return pa.scalar(pd.Timestamp(moment).tz_convert("UTC").to_pydatetime(), type=pa.timestamp("us", tz="UTC"))


def summary_lines(summary: PerformanceSummary) -> list[str]:
    """What ``learnscore monitor performance`` prints: the ``all`` rows, newest window last."""
    lines = []
    for row in sorted((r for r in summary.rows if r["segment"] == ALL_SEGMENTS),
                      key=lambda r: (r["window_start"], r["model_version"])):
        estimate = ("no estimate (reference too small)" if row["estimated_macro_f1"] is None else
                    f"estimated acc {row['estimated_accuracy']:.3f} F1 {row['estimated_macro_f1']:.3f} "
                    f"MAE {row['estimated_mae']:.2f}")
        realized = ("" if row["realized_macro_f1"] is None else
                    f" | realized acc {row['realized_accuracy']:.3f} F1 {row['realized_macro_f1']:.3f} "
                    f"MAE {row['realized_mae']:.2f}")
        lines.append(f"{row['window_start']:%Y-%m-%d %H:%M} v{row['model_version']:<4} "
                     f"{row['n_rows']:>7} rows {row['n_labelled']:>7} labelled  {estimate}{realized}")
    return lines

