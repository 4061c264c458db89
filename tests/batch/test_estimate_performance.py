"""``learnscore monitor performance`` on gold tables written with deltalake (no Spark, no broker):
estimates per version, segment and window next to the realized figures, MERGEd, with the floor
alert; and the retrain worker's schedule of it, which re-estimates only the windows that changed
and outlives a failed run."""

from __future__ import annotations

import logging
import shutil
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from learnscore.batch.estimate_performance import (
    PerformanceReportError,
    PerformanceSummary,
    run_estimation_schedule,
    run_performance_report,
)
from learnscore.core.lake import read_table
from learnscore.model.features import model_input_from_events
from learnscore.schemas.tables import PREDICTION_OUTCOMES, PREDICTIONS, arrow_schema
from learnscore.simulator.generator import Simulator
from learnscore.simulator.scenarios import ScenarioSpec

START = datetime(2026, 11, 20, tzinfo=timezone.utc)  # on the hour
HOUR = timedelta(hours=1)


@pytest.fixture
def lake_config(base_config, tmp_path):
    return base_config.model_copy(update={
        "lake": base_config.lake.model_copy(update={"root": str(tmp_path / "lake")}),
        "estimation": base_config.estimation.model_copy(update={"min_window_rows": 100}),
    })


def write_gold(config, model, *, labelled_hours: int) -> pd.DataFrame:
    """Three hours of version 1's scores (a weaker cohort from the third), outcomes for the first
    ``labelled_hours``; returns the rows with their outcomes."""
    batch = Simulator(seed=31, start=START, interval_s=2.4, run="gold",
                      scenarios=(ScenarioSpec("weaker-cohort", at_event=3000),)).take(4500)
    predictions = model.predict(model_input_from_events(batch.submissions)).reset_index(drop=True)
    truth = batch.truth
    event_time = pd.to_datetime(truth["submission_time"], utc=True)
    frame = predictions.assign(event_id=truth["event_id"], subject=truth["subject"],
                               grade_level=truth["grade_level"], event_time=event_time, model_version="1",
                               observed_progress_score=truth["observed_score"],
                               observed_comprehension_level=truth["observed_level"])
    _write(config, PREDICTIONS, frame.assign(scored_at=event_time))
    paired = frame[frame["event_time"] < START + labelled_hours * HOUR]
    _write(config, PREDICTION_OUTCOMES, paired.assign(
        abs_error=(paired["progress_score"] - paired["observed_progress_score"]).abs(),
        level_correct=paired["comprehension_level"] == paired["observed_comprehension_level"],
        outcome_time=paired["event_time"] + timedelta(days=7)))
    return frame


def _write(config, table, frame: pd.DataFrame) -> None:
    rows = [{column: row.get(column) for column in table.column_names} for row in frame.to_dict("records")]
    write_deltalake(config.table_path(table.name), pa.Table.from_pylist(rows, schema=arrow_schema(table)),
                    mode="append")


def test_estimates_per_window_and_segment_with_realized_figures_and_a_floor_alert(lake_config, fitted_model,
                                                                                  caplog):
    config = lake_config
    write_gold(config, fitted_model, labelled_hours=2)
    now = START + 3 * HOUR + timedelta(minutes=5)
    summary = run_performance_report(config, window=HOUR, windows=2, now=now)
    table = read_table(config, "ops.estimated_performance")
    assert len(table) == len(summary.rows) == 20  # 2 windows × (all + 9 segments)
    overall = table[table["segment"] == "all"].sort_values("window_start").reset_index(drop=True)
    assert overall["window_start"].tolist() == [pd.Timestamp(START + HOUR), pd.Timestamp(START + 2 * HOUR)]
    assert overall["n_rows"].tolist() == [1500, 1500]
    assert overall["n_reference"].tolist() == [1500, 3000]  # hour 0, then hours 0-1
    assert overall["n_labelled"].tolist() == [1500, 0]
    first, shifted = overall.iloc[0], overall.iloc[1]
    assert abs(first["estimated_macro_f1"] - first["realized_macro_f1"]) <= 0.03
    assert abs(first["estimated_mae"] - first["realized_mae"]) <= 0.5
    assert pd.isna(shifted["realized_macro_f1"])  # the weaker cohort's outcomes are not in yet...
    assert shifted["estimated_accuracy"] - first["estimated_accuracy"] > 0.03  # ...its estimate moved
    assert not summary.alerts

    # Outcomes of the third hour arrive; a stricter floor: the report fills in and alerts once.
    strict = config.model_copy(update={"gates": config.gates.model_copy(update={"min_macro_f1": 0.9})})
    write_gold_outcomes_of_hour(config, fitted_model, hour=2)
    with caplog.at_level(logging.WARNING, logger="learnscore.alerts"):
        again = run_performance_report(strict, window=HOUR, windows=2, now=now)
    table = read_table(config, "ops.estimated_performance")
    assert len(table) == 20  # MERGEd: replaced, not added
    shifted = table[(table["segment"] == "all") & (table["window_start"] == pd.Timestamp(START + 2 * HOUR))].iloc[0]
    assert shifted["n_labelled"] == 1500 and abs(shifted["estimated_accuracy"] - shifted["realized_accuracy"]) < 0.03
    assert any("version 1, segment all" in text for text in again.alerts)
    assert "ALERT performance_below_floor" in caplog.text


def write_gold_outcomes_of_hour(config, model, hour: int) -> None:
    predictions = read_table(config, PREDICTIONS.name)
    predictions["event_time"] = pd.to_datetime(predictions["event_time"], utc=True)
    batch = Simulator(seed=31, start=START, interval_s=2.4, run="gold",
                      scenarios=(ScenarioSpec("weaker-cohort", at_event=3000),)).take(4500)
    truth = pd.DataFrame({"event_id": batch.truth["event_id"], "observed_progress_score": batch.truth["observed_score"],
                          "observed_comprehension_level": batch.truth["observed_level"]})
    rows = predictions[(predictions["event_time"] >= START + hour * HOUR)
                       & (predictions["event_time"] < START + (hour + 1) * HOUR)].merge(truth, on="event_id")
    _write(config, PREDICTION_OUTCOMES, rows.assign(
        abs_error=(rows["progress_score"] - rows["observed_progress_score"]).abs(),
        level_correct=rows["comprehension_level"] == rows["observed_comprehension_level"],
        outcome_time=rows["event_time"] + timedelta(days=7)))


def test_without_predictions_the_report_says_what_to_run(lake_config):
    with pytest.raises(PerformanceReportError, match=r"gold.predictions does not exist .*learnscore stream start"):
        run_performance_report(lake_config, window=HOUR, windows=2, now=START)


def test_the_cli_prints_the_windows(lake_config, fitted_model):
    from typer.testing import CliRunner

    import learnscore.cli as commands

    write_gold(lake_config, fitted_model, labelled_hours=3)
    commands._state.config = lake_config
    try:
        result = CliRunner().invoke(commands.app, ["monitor", "performance", "--window", "1h", "--windows", "5",
                                                    "--until", "2026-11-20T03:05:00Z"])
    finally:
        commands._state.config = None
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rows = [line for line in lines if " v1 " in line]
    assert len(rows) == 3 and "no estimate (reference too small)" in rows[0]  # hour 0 has no reference
    assert all("estimated acc" in row for row in rows[1:])
    assert "realized acc" in lines[-2] and "rows into ops.estimated_performance" in lines[-1]


def test_the_schedule_estimates_the_changed_windows_only_and_outlives_failed_runs(lake_config, fitted_model,
                                                                                   caplog):
    config = lake_config.model_copy(update={"estimation": lake_config.estimation.model_copy(update={
        "interval_seconds": 0.01, "window_seconds": 3600, "lookback_windows": 3})})
    now = START + 3 * HOUR + timedelta(minutes=5)
    broken_log = config.table_path("ops.estimated_performance") + "/_delta_log"
    outcomes: list[PerformanceSummary | Exception] = []
    stop = threading.Event()

    def after_run(outcome) -> None:  # what changes in the lake between two runs
        outcomes.append(outcome)
        if len(outcomes) == 1:  # no predictions yet; then the stream wrote three hours, a table broke
            write_gold(config, fitted_model, labelled_hours=2)
            Path(broken_log).mkdir(parents=True)
            (Path(broken_log) / "00000000000000000000.json").write_text("not a Delta log\n")
        elif len(outcomes) == 2:  # the table is mended
            shutil.rmtree(config.table_path("ops.estimated_performance"))
        elif len(outcomes) == 4:  # the third hour's outcomes arrive
            write_gold_outcomes_of_hour(config, fitted_model, hour=2)
        elif len(outcomes) == 5:
            stop.set()

    with caplog.at_level(logging.WARNING, logger="learnscore.batch.estimate_performance"):
        run_estimation_schedule(config, stop=stop, clock=lambda: now, on_run=after_run)

    no_predictions, broken, first, quiet, late_outcomes = outcomes
    assert isinstance(no_predictions, PerformanceReportError) and "nothing to estimate yet" in caplog.text
    assert isinstance(broken, Exception) and "performance estimation failed" in caplog.text
    hours = [START + k * HOUR for k in range(3)]
    assert first.window_starts == hours and len(first.rows) == 30  # 3 windows × (all + 9 segments)
    assert quiet.window_starts == [] and quiet.rows == []  # nothing changed: nothing estimated
    assert late_outcomes.window_starts == [hours[2]]  # only the window whose outcomes came
    table = read_table(config, "ops.estimated_performance")
    assert len(table) == 30
    overall = table[table["segment"] == "all"].sort_values("window_start")
    assert overall["n_labelled"].tolist() == [1500, 1500, 1500]
    assert overall["realized_macro_f1"].notna().tolist() == [True, True, True]
