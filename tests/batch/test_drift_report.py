"""learnscore monitor drift with the real parts: silver tables, the trained production model."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from learnscore.batch.drift_report import DriftReportError, find_baseline, run_drift_report
from learnscore.schemas.tables import DRIFT_METRICS

pytestmark = pytest.mark.integration
END = datetime(2026, 1, 10, 12, tzinfo=timezone.utc)


def test_a_missing_production_model_is_a_clear_error(config, mlflow_store):
    with pytest.raises(DriftReportError, match="no 'production' version.*learnscore promote"):
        find_baseline(config)


def test_the_report_compares_windows_with_training_and_with_each_other(config, spark,
                                                                      mlflow_store, tmp_path):
    from learnscore.batch.importer import import_history
    from learnscore.batch.train import train_model
    from learnscore.registry.promote import promote
    from learnscore.simulator.history import HistoryOptions, write_history
    from learnscore.simulator.scenarios import parse_scenario

    training = tmp_path / "training"
    write_history(training, HistoryOptions(learners=2000, days=2, outcome_delay_s=3600, seed=3,
                                           end=END - timedelta(days=1)))
    import_history(spark, config, training)
    first = train_model(spark, config, history_dir=training)
    promote(config, version=first.version, actor="test", reason="baseline for the report")
    # Two recent hours, the second one a weaker cohort.
    recent = tmp_path / "recent"
    write_history(recent, HistoryOptions(
        learners=2400, days=2 / 24, outcome_delay_s=60, seed=4, end=END,
        scenarios=(parse_scenario("weaker-cohort@1h"),)))
    import_history(spark, config, recent)

    baseline = find_baseline(config)
    assert (baseline.model_version, baseline.since, baseline.until) == (first.version, None, None)
    assert baseline.submissions_version == int(first.data_versions["silver.submissions"])

    summary = run_drift_report(spark, config, window=timedelta(hours=1), windows=2, now=END)
    assert [s.isoformat() for s in summary.window_starts] == [
        "2026-01-10T10:00:00+00:00", "2026-01-10T11:00:00+00:00"]
    table = spark.read.format("delta").load(config.table_path(DRIFT_METRICS.name)).toPandas()
    assert len(table) == summary.rows

    def metric(hour, segment, feature, reference):
        row = table[(table["window_start"].dt.hour == hour) & (table["segment"] == segment)
                    & (table["feature"] == feature) & (table["reference"] == reference)]
        assert len(row) == 1, (hour, segment, feature, reference)
        return row.iloc[0]

    stable, weaker = metric(10, "all", "ability", "training"), metric(11, "all", "ability", "training")
    assert stable["psi"] < 0.1 and weaker["psi"] > 0.25
    assert weaker["ks"] > 0.2 and weaker["js"] > stable["js"]
    assert metric(11, "all", "accuracy", "previous")["psi"] > 0.25
    assert stable["n_reference"] == 2000 and stable["n_window"] + weaker["n_window"] == 2400
    assert metric(11, "math/5-8", "ability", "training")["n_window"] > 10
    # Nothing before 10:00, so the first window has no "previous" rows.
    assert table[(table["window_start"].dt.hour == 10) & (table["reference"] == "previous")].empty

    again = run_drift_report(spark, config, window=timedelta(hours=1), windows=2, now=END)
    assert again.rows == summary.rows
    assert spark.read.format("delta").load(config.table_path(DRIFT_METRICS.name)).count() == len(table)
