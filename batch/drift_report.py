"""``learnscore monitor drift``: windowed drift metrics per feature and segment → ``ops.drift_metrics``.

A Spark batch job, meant to run on a schedule (cron, a workflow) next to the detectors in the
stream: where the detectors answer "did something change just now?", the report shows how
far every feature has moved, per segment, for the dashboard and BI.

* **Windows**: the last ``windows`` complete windows of ``window`` length (aligned to
  multiples of the window since the epoch), by submission event time, from
  ``silver.submissions``.
* **Reference ``training``**: the data the current ``production`` model was trained on, found
  from the registry: the version's tags ``data.silver.submissions.version`` (the Delta version
  the job read) and ``data.since`` / ``data.until`` (its event-time window; empty = all rows),
  which ``learnscore.batch.train.train_model`` writes on every version. That exact snapshot is read again
  with Delta time travel.
* **Reference ``previous``**: the window just before each window.
* **Features**: the shared features (:mod:`learnscore.model.features`), computed with the production
  model's own item bank, so the report sees what the model sees.
* **Metrics**: PSI on deciles, KS and Jensen–Shannon distance on 20 quantile bins of the
  training reference (:mod:`learnscore.batch.distribution_metrics`). Spark counts rows per bin;
  the driver only sees the counts.
* **Privacy**: a (window, segment) cell with fewer than ``privacy.min_cell_learners`` rows on
  either side is left out. Segment ``all`` covers every row.

Each row is MERGEd on (window_start, segment, feature, reference), so running the report
again for the same windows replaces its rows instead of adding duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

from learnscore.batch.distribution_metrics import js_distance, ks, psi, quantile_edges, to_deciles
from learnscore.core.config import Config
from learnscore.schemas.segments import grade_band_labels
from learnscore.schemas.tables import DRIFT_METRICS, SUBMISSIONS

log = logging.getLogger(__name__)

#: Features the report follows: the shared ones that vary within a segment.
REPORT_FEATURES = (
    "n_responses", "accuracy", "first_try_accuracy", "mean_attempts", "multi_attempt_share",
    "hint_share", "mean_log_time", "median_log_time", "std_log_time", "log_time_residual",
    "ability", "ability_se", "mean_item_difficulty", "unknown_item_share",
)
BINS = 20
ALL_SEGMENTS = "all"
BASELINE_SAMPLE_ROWS = 200_000


class DriftReportError(RuntimeError):
    """The report cannot run; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class Baseline:
    """The training data of the production model: a Delta version and an event-time window."""

    model_version: str
    submissions_version: int | None
    since: datetime | None
    until: datetime | None
    how: str


@dataclass(frozen=True)
class ReportSummary:
    baseline: Baseline
    window_starts: list[datetime]
    rows: int
    cells_suppressed: int


# -- pure parts ---------------------------------------------------------------------------------
def window_starts(now: datetime, window: timedelta, windows: int) -> list[datetime]:
    """Starts of the last ``windows`` complete windows before ``now`` (oldest first), plus the
    one before them (the ``previous`` reference of the first).

    >>> starts = window_starts(datetime(2025, 3, 1, 12, 40, tzinfo=timezone.utc), timedelta(hours=1), 2)
    >>> [s.strftime("%H:%M") for s in starts]
    ['09:00', '10:00', '11:00']
    """
    size = window.total_seconds()
    end = int(now.timestamp() // size) * size
    return [datetime.fromtimestamp(end - size * k, tz=timezone.utc) for k in range(windows + 1, 0, -1)]


def metric_rows(counts: pd.DataFrame, starts: list[datetime], window: timedelta,
                min_cell: int, computed_at: datetime) -> tuple[list[dict[str, Any]], int]:
    """``ops.drift_metrics`` rows from bin counts.

    ``counts`` has columns ``window`` (−1 for the training reference, else an index into
    ``starts``), ``segment``, ``feature``, ``bin``, ``n``. Returns the rows and how many cells
    were left out for having fewer than ``min_cell`` rows.
    """
    rows: list[dict[str, Any]] = []
    suppressed = 0
    table = counts.pivot_table(index=["segment", "feature", "window"], columns="bin", values="n",
                               aggfunc="sum", fill_value=0)
    table = table.reindex(columns=range(BINS), fill_value=0)
    histograms = {key: row.to_numpy(dtype=np.float64) for key, row in table.iterrows()}
    for (segment, feature, index), current in histograms.items():
        if index < 1:  # the training reference, or the window that is only a reference
            continue
        for reference, key in (("training", (segment, feature, -1)),
                               ("previous", (segment, feature, index - 1))):
            base = histograms.get(key)
            n_window, n_reference = int(current.sum()), int(base.sum()) if base is not None else 0
            if n_window < min_cell or n_reference < min_cell:
                suppressed += 1
                continue
            rows.append({
                "computed_at": computed_at, "window_start": starts[index],
                "window_end": starts[index] + window, "segment": segment, "feature": feature,
                "reference": reference, "psi": psi(to_deciles(base), to_deciles(current)),
                "ks": ks(base, current), "js": js_distance(base, current),
                "n_reference": n_reference, "n_window": n_window,
            })
    return rows, suppressed


def bin_counts(features: pd.DataFrame, edges: dict[str, np.ndarray]) -> pd.DataFrame:
    """Rows per (window, segment, feature, bin) of a frame with ``window``, ``segment`` and the
    feature columns; every row also counts in segment ``all``. NaN values are not counted.

    >>> frame = pd.DataFrame({"window": [0, 0, 1], "segment": ["a", "b", "a"],
    ...                       "accuracy": [0.2, 0.9, np.nan]})
    >>> bin_counts(frame, {"accuracy": np.array([0.5])}).to_dict("records")
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'window': 0, 'segment': 'a', 'feature': 'accuracy', 'bin': 0, 'n': 1},
     {'window': 0, 'segment': 'all', 'feature': 'accuracy', 'bin': 0, 'n': 1},
     {'window': 0, 'segment': 'all', 'feature': 'accuracy', 'bin': 1, 'n': 1},
     {'window': 0, 'segment': 'b', 'feature': 'accuracy', 'bin': 1, 'n': 1}]
    """
    parts = []
    for feature, feature_edges in edges.items():
        values = features[feature].to_numpy(dtype=np.float64)
        present = ~np.isnan(values)
        part = pd.DataFrame({
            "window": features["window"].to_numpy()[present],
            "segment": features["segment"].to_numpy()[present],
            "bin": np.searchsorted(feature_edges, values[present], side="right"),
        })
        both = pd.concat([part, part.assign(segment=ALL_SEGMENTS)], ignore_index=True)
        grouped = both.groupby(["window", "segment", "bin"], sort=True).size().reset_index(name="n")
        grouped.insert(2, "feature", feature)
        parts.append(grouped)
    if not parts:
        return pd.DataFrame(columns=["window", "segment", "feature", "bin", "n"])
    result = pd.concat(parts, ignore_index=True)
    result = result.astype({"window": "int64", "bin": "int64", "n": "int64"})
    return result.sort_values(["window", "segment", "feature", "bin"], kind="stable").reset_index(
        drop=True)[["window", "segment", "feature", "bin", "n"]]


# -- I/O edges ----------------------------------------------------------------------------------
def find_baseline(config: Config) -> Baseline:
    """The training data of the ``production`` version, from its registry tags."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(config.mlflow.tracking_uri, config.registry_uri)
    try:
        version = client.get_model_version_by_alias(config.mlflow.model_name, "production")
    except MlflowException:
        raise DriftReportError(
            f"{config.mlflow.model_name} has no 'production' version, so there is no training "
            f"baseline: train one (learnscore train --initial) and promote it "
            f"(learnscore promote)") from None
    tags = version.tags or {}
    delta_version = tags.get(f"data.{SUBMISSIONS.name}.version")

    def moment(name: str) -> datetime | None:
        text = tags.get(name) or ""
        return datetime.fromisoformat(text) if text else None

    how = (f"tags of {config.mlflow.model_name} v{version.version}: "
           f"{SUBMISSIONS.name}@{delta_version or 'latest'}, event time "
           f"[{tags.get('data.since') or 'start'}, {tags.get('data.until') or 'end'})")
    return Baseline(str(version.version), int(delta_version) if delta_version else None,
                    moment("data.since"), moment("data.until"), how)


def production_item_bank(config: Config):
    """The item bank of the production model (abilities must be estimated with it)."""
    from learnscore.registry.access import production_version
    from learnscore.registry.artifacts import item_bank_loader

    version = production_version(config)
    if version is None:
        raise DriftReportError(f"{config.mlflow.model_name} has no production version: its item bank is needed")
    return item_bank_loader(config)(version)


def _feature_frames(item_bank, bands, starts: list[datetime] | None, size_s: float):
    """A ``mapInPandas`` function: silver.submissions model input → features per row."""
    labels = grade_band_labels(bands)
    first = starts[0].timestamp() if starts else 0.0

    def featurize(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from learnscore.model.features import compute_features

        for batch in batches:
            if batch.empty:
                continue
            features = compute_features(batch.drop(columns=["event_time"]), item_bank)
            out = pd.DataFrame({feature: features[feature].astype(np.float64)
                                for feature in REPORT_FEATURES})
            out["segment"] = (batch["subject"].astype(str) + "/"
                              + batch["grade_level"].map(labels).astype(str)).to_numpy()
            seconds = pd.to_datetime(batch["event_time"], utc=True).astype("int64") / 1e9
            out["window"] = (((seconds - first) // size_s).astype("int64").to_numpy()
                             if starts else -1)
            yield out

    return featurize


def _features_schema() -> str:
    return ", ".join([*(f"`{f}` double" for f in REPORT_FEATURES), "segment string",
                      "window bigint"])


def run_drift_report(spark, config: Config, *, window: timedelta, windows: int,
                     now: datetime | None = None) -> ReportSummary:
    """Compute the metrics of the last ``windows`` windows and MERGE them into ops.drift_metrics."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    from learnscore.core.lake import ensure_spark_tables
    from learnscore.model.features import spark_model_input_columns

    now = now or datetime.now(timezone.utc)
    baseline = find_baseline(config)
    log.info("training baseline: %s", baseline.how)
    item_bank = production_item_bank(config)
    bands = config.drift.grade_bands
    path = config.table_path(SUBMISSIONS.name)
    columns = [*spark_model_input_columns(), F.col("event_time")]

    reader = spark.read.format("delta")
    if baseline.submissions_version is not None:
        reader = reader.option("versionAsOf", baseline.submissions_version)
    reference = reader.load(path)
    if baseline.since is not None:
        reference = reference.where(F.col("event_time") >= F.lit(baseline.since))
    if baseline.until is not None:
        reference = reference.where(F.col("event_time") < F.lit(baseline.until))
    reference_features = reference.select(*columns).mapInPandas(
        _feature_frames(item_bank, bands, None, 1.0), _features_schema())
    total = reference.count()
    if total == 0:
        raise DriftReportError(f"the training baseline ({baseline.how}) holds no submissions")
    sample = reference_features.sample(fraction=min(1.0, BASELINE_SAMPLE_ROWS / total), seed=7)
    edges = {feature: quantile_edges(values, BINS)
             for feature, values in sample.toPandas()[list(REPORT_FEATURES)].items()}

    starts = window_starts(now, window, windows)
    size_s = window.total_seconds()
    recent = (spark.read.format("delta").load(path)
              .where((F.col("event_time") >= F.lit(starts[0]))
                     & (F.col("event_time") < F.lit(starts[-1] + window))))
    recent_features = recent.select(*columns).mapInPandas(
        _feature_frames(item_bank, bands, starts, size_s), _features_schema())

    schema = "window bigint, segment string, feature string, bin bigint, n bigint"

    def count_bins(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield bin_counts(batch, edges)

    counts = (reference_features.unionByName(recent_features).mapInPandas(count_bins, schema)
              .groupBy("window", "segment", "feature", "bin").agg(F.sum("n").alias("n"))
              .toPandas())
    rows, suppressed = metric_rows(counts, starts, window, config.privacy.min_cell_learners, now)
    log.info("drift report: %d metric rows for %d windows of %s (%d cells left out: fewer than "
             "%d rows)", len(rows), windows, window, suppressed, config.privacy.min_cell_learners)
    if rows:
        ensure_spark_tables(spark, config, [DRIFT_METRICS.name])
        frame = spark.createDataFrame([tuple(r[c] for c in DRIFT_METRICS.column_names) for r in rows],
                                      StructType.fromDDL(DRIFT_METRICS.ddl))
        keys = ("window_start", "segment", "feature", "reference")
        (DeltaTable.forPath(spark, config.table_path(DRIFT_METRICS.name)).alias("t")
         .merge(frame.alias("s"), " AND ".join(f"t.{k} = s.{k}" for k in keys))
         .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    return ReportSummary(baseline, starts[1:], len(rows), suppressed)
