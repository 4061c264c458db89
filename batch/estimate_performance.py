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

**On a schedule** (:func:`run_estimation_schedule`, a thread of the retrain worker, every
``estimation.interval_seconds``; 0 or ``learnscore retrain-worker --no-estimate``: never) the same
estimation runs over windows of ``estimation.window_seconds``, but only on the windows that need it
(:func:`estimate_changed_windows`): of the last ``estimation.lookback_windows`` complete windows,
those where a version's prediction or outcome count differs from what its ``all`` row recorded —
a new window, late-scored rows, outcomes that arrived. A quiet interval costs three column-pruned
reads of counts; a busy one costs what the CLI costs for the changed windows. Its floor alert
looks at the newest complete window only, so it fires when that window is first estimated. An
error (a table mid-write, no predictions yet) is logged and the next interval tries again.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
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


def windows_to_estimate(counts: pd.DataFrame, recorded: pd.DataFrame, min_window_rows: int) -> list[datetime]:
    """Starts of the windows to (re-)estimate, oldest first: those where a version with at least
    ``min_window_rows`` predictions has counts other than its recorded ``all`` row (or none).

    ``counts`` and ``recorded`` have columns ``model_version``, ``window_start``, ``n_rows`` and
    ``n_labelled``: what the tables hold now, and what ``ops.estimated_performance`` recorded.

    >>> t = [pd.Timestamp("2026-11-20 09:00", tz="UTC"), pd.Timestamp("2026-11-20 10:00", tz="UTC")]
    >>> now = pd.DataFrame({"model_version": ["1", "1", "2"], "window_start": [t[0], t[1], t[1]],
    ...                     "n_rows": [500, 400, 10], "n_labelled": [300, 0, 0]})
    >>> recorded = pd.DataFrame({"model_version": ["1"], "window_start": [t[0]], "n_rows": [500],
    ...                          "n_labelled": [200]})
    >>> [w.strftime("%H:%M") for w in windows_to_estimate(now, recorded, 200)]  # outcomes came; a new window
    ['09:00', '10:00']
    >>> windows_to_estimate(now, now, 200)
    []
    """
    keys = ["model_version", "window_start"]

    def keyed(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(model_version=frame["model_version"].astype(str),
                            window_start=pd.to_datetime(frame["window_start"], utc=True).astype("datetime64[ns, UTC]"))

    current = keyed(counts[counts["n_rows"] >= min_window_rows])
    merged = current.merge(keyed(recorded[[*keys, "n_rows", "n_labelled"]]), on=keys, how="left",
                           suffixes=("", "_recorded"))
    changed = ((merged["n_rows"] != merged["n_rows_recorded"])
               | (merged["n_labelled"] != merged["n_labelled_recorded"]))
    return sorted({pd.Timestamp(start).to_pydatetime() for start in merged.loc[changed, "window_start"]})


def _finite(value) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# -- the job (I/O) --------------------------------------------------------------------------------
def run_performance_report(config: Config, *, window: timedelta, windows: int,
                           now: datetime | None = None) -> PerformanceSummary:
    """Estimate the last ``windows`` windows, MERGE them into ``ops.estimated_performance`` and
    alert on floors (module docstring)."""
    now = now or datetime.now(timezone.utc)
    starts = window_starts(now, window, windows)[1:]
    return _estimate_and_record(config, starts, window, now, alert_window=starts[-1])


def estimate_changed_windows(config: Config, *, now: datetime | None = None) -> PerformanceSummary:
    """The scheduled run: of the last ``estimation.lookback_windows`` complete windows, estimate
    those whose counts changed (:func:`windows_to_estimate`) and MERGE them; nothing when none did."""
    settings = config.estimation
    now = now or datetime.now(timezone.utc)
    window = timedelta(seconds=settings.window_seconds)
    starts = window_starts(now, window, settings.lookback_windows)[1:]
    counts = _window_counts(config, starts[0], starts[-1] + window, window)
    changed = windows_to_estimate(counts, _recorded_counts(config, starts[0], window), settings.min_window_rows)
    if not changed:
        log.debug("performance estimation: no window changed since the last run")
        return PerformanceSummary([], [], [])
    log.info("performance estimation: %d of the last %d windows of %s changed, from %s",
             len(changed), len(starts), window, changed[0].isoformat())
    return _estimate_and_record(config, changed, window, now, alert_window=starts[-1])


def run_estimation_schedule(config: Config, *, stop: threading.Event,
                            clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                            on_run: Callable[[PerformanceSummary | Exception], None] | None = None) -> None:
    """Run :func:`estimate_changed_windows` every ``estimation.interval_seconds`` until ``stop``
    is set (the retrain worker's estimation thread). A failed run is logged, handed to ``on_run``
    like a summary, and the next interval tries again; nothing here raises."""
    interval = config.estimation.interval_seconds
    if interval <= 0:
        log.info("performance estimation off (estimation.interval_seconds is 0)")
        return
    while not stop.is_set():
        outcome: PerformanceSummary | Exception
        try:
            outcome = estimate_changed_windows(config, now=clock())
        except PerformanceReportError as exc:
            log.warning("performance estimation: nothing to estimate yet (%s); next try in %.0f s", exc, interval)
            outcome = exc
        except Exception as exc:  # a failed run (a table mid-write, a full disk) waits for the next interval
            log.exception("performance estimation failed; next try in %.0f s", interval)
            outcome = exc
        if on_run is not None:
            on_run(outcome)
        if stop.wait(interval):
            return


def _estimate_and_record(config: Config, starts: list[datetime], window: timedelta, now: datetime, *,
                         alert_window: datetime) -> PerformanceSummary:
    """Estimate the windows at ``starts`` (oldest first), MERGE their rows, and alert on the rows
    of ``alert_window`` past a floor."""
    from learnscore.core.alerts import alert
    from learnscore.core.lake import upsert_rows

    end = starts[-1] + window
    predictions, pairs = read_report_inputs(config, starts[0], end, config.estimation.reference_rows)
    log.info("performance report: %d predictions and %d labelled rows for %d windows of %s from %s",
             len(predictions), len(pairs), len(starts), window, starts[0].isoformat())
    rows = estimate_windows(predictions, pairs, starts, window, config=config, computed_at=now)
    upsert_rows(config, ESTIMATED_PERFORMANCE.name, rows, KEYS)
    sent = []
    for breach in floor_breaches([row for row in rows if row["window_start"] == alert_window], config):
        text = (f"version {breach['model_version']}, segment {breach['segment']}, window from "
                f"{breach['window_start'].isoformat()}: {breach['why']} ({breach['n_rows']} predictions, "
                f"{breach['n_labelled']} with outcomes)")
        # One incident per version and segment (not per window: a version that stays low would
        # alert every window); the dispatcher's dedupe_seconds says when it is news again.
        if alert("performance_below_floor", text, key=f"{breach['model_version']}/{breach['segment']}",
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
    # Bounded below, so the read does not grow with the table: a version's reference is its
    # newest pairs from the last estimation.reference_days before the windows.
    oldest = since - timedelta(days=config.estimation.reference_days)
    pairs = _read(config, PREDICTION_OUTCOMES.name, pairs_columns,
                  (pc.field("event_time") >= _ts(oldest)) & (pc.field("event_time") < _ts(until)))
    if pairs is None:
        pairs = pd.DataFrame(columns=pairs_columns)
    # Each version's newest reference rows before the first window; the later windows' references
    # are newer still, so they are among the pairs inside the windows.
    before = pairs[pd.to_datetime(pairs["event_time"], utc=True) < since]
    needed = (before.sort_values("event_time", kind="stable").groupby("model_version").tail(reference_rows)
              ["event_id"].tolist())
    columns = ["event_id", "model_version", "event_time", *PREDICTION_COLUMNS]
    in_windows = (pc.field("event_time") >= _ts(since)) & (pc.field("event_time") < _ts(until))
    if needed:  # the reference rows too, inside the same time bound (file skipping on event_time)
        in_windows = (in_windows | pc.field("event_id").isin(pa.array(needed, pa.string()))) & (
            pc.field("event_time") >= _ts(oldest))
    predictions = _read(config, PREDICTIONS.name, columns, in_windows)
    if predictions is None:
        raise PerformanceReportError(
            f"{PREDICTIONS.name} does not exist at {config.table_path(PREDICTIONS.name)}: run the "
            f'streaming scorer ("learnscore stream start") so that there are predictions to judge')
    return predictions, pairs


def _window_counts(config: Config, since: datetime, until: datetime, window: timedelta) -> pd.DataFrame:
    """Predictions and pairs per (model_version, window_start) in ``[since, until)``."""
    in_range = (_column("event_time") >= _ts(since)) & (_column("event_time") < _ts(until))
    columns = ["model_version", "event_time"]
    predictions = _read(config, PREDICTIONS.name, columns, in_range)
    if predictions is None:
        raise PerformanceReportError(
            f"{PREDICTIONS.name} does not exist at {config.table_path(PREDICTIONS.name)}: run the "
            f'streaming scorer ("learnscore stream start") so that there are predictions to judge')
    pairs = _read(config, PREDICTION_OUTCOMES.name, columns, in_range)
    if pairs is None:
        pairs = pd.DataFrame(columns=columns)

    def per_window(frame: pd.DataFrame, name: str) -> pd.Series:
        start = pd.to_datetime(frame["event_time"], utc=True).dt.floor(f"{int(window.total_seconds())}s")
        return frame.assign(window_start=start).groupby(["model_version", "window_start"]).size().rename(name)

    counts = pd.concat([per_window(predictions, "n_rows"), per_window(pairs, "n_labelled")], axis=1)
    return counts.fillna(0).astype("int64").reset_index()


def _recorded_counts(config: Config, since: datetime, window: timedelta) -> pd.DataFrame:
    """The ``all`` rows of ``ops.estimated_performance`` from ``since`` for windows of length
    ``window`` (``monitor performance --window`` may have recorded others): what was estimated on."""
    columns = ["model_version", "window_start", "n_rows", "n_labelled"]
    # The segment is filtered here: pyarrow has no string = string_view kernel for the pushed-down filter.
    recorded = _read(config, ESTIMATED_PERFORMANCE.name, [*columns, "segment", "window_end"],
                     _column("window_start") >= _ts(since))
    if recorded is None:
        return pd.DataFrame(columns=columns)
    length = pd.to_datetime(recorded["window_end"], utc=True) - pd.to_datetime(recorded["window_start"], utc=True)
    return recorded.loc[(recorded["segment"] == ALL_SEGMENTS) & (length == window), columns]


def _column(name: str):
    import pyarrow.compute as pc

    return pc.field(name)


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

