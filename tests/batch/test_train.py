"""Training data: pinned versions, the time window, the time-based holdout, and refusals."""

from datetime import timedelta

import pandas as pd
import pytest

from learnscore.batch.train import TrainingDataError, _check_training_frame, read_labelled_submissions, split_by_time

pytestmark = pytest.mark.integration


def test_the_window_and_the_pinned_versions_select_exactly_their_rows(spark, silver_history, small_history):
    lake_config, versions = silver_history
    truth = pd.read_parquet(small_history / "truth.parquet")
    times = truth["submission_time"].sort_values().reset_index(drop=True)
    since, until = times[1000].to_pydatetime(), times[2000].to_pydatetime()

    frame = read_labelled_submissions(spark, lake_config, versions, since=since, until=until)
    expected = truth[(truth.submission_time >= since) & (truth.submission_time < until)]
    assert sorted(frame["event_id"]) == sorted(expected["event_id"])
    assert frame["event_time"].is_monotonic_increasing
    joined = frame.set_index("event_id")[["observed_progress_score"]].join(expected.set_index("event_id")["observed_score"])
    assert (joined["observed_progress_score"] == joined["observed_score"]).all()

    first = read_labelled_submissions(spark, lake_config, {**versions, "silver.submissions": 0})
    assert first.empty  # version 0 is the empty table the loader created

    train, holdout = split_by_time(frame, 0.2)
    assert len(holdout) == 200 and train["event_time"].max() <= holdout["event_time"].min()


def test_too_little_data_is_refused_with_the_window_in_the_message(spark, silver_history, small_history):
    lake_config, versions = silver_history
    truth = pd.read_parquet(small_history / "truth.parquet")
    since = truth["submission_time"].max().to_pydatetime() - timedelta(minutes=1)
    frame = read_labelled_submissions(spark, lake_config, versions, since=since)
    with pytest.raises(TrainingDataError, match=r"only \d+ submissions with an observed outcome .* between"):
        _check_training_frame(frame, versions, since, None)
