"""GatedADWIN and DriftMonitor: false alarms, detection, segments, versions, cooldown, state."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from learnscore.streaming.drift.detectors import GatedADWIN
from learnscore.streaming.drift.monitor import DriftMonitor, DriftSettings

NOW = datetime(2025, 3, 1, tzinfo=timezone.utc)


def _feed(detector: GatedADWIN, values) -> list[int]:
    return [i for i, x in enumerate(values) if detector.update(float(x)).drift_detected]


@pytest.mark.parametrize("name, values", [
    ("gaussian", np.random.default_rng(1).normal(50, 12, 300_000)),
    ("binary", (np.random.default_rng(2).random(300_000) < 0.3).astype(float)),
    ("skewed", np.abs(np.random.default_rng(3).normal(0, 8, 300_000))),
])
def test_stationary_stream_raises_no_alarm(name, values):
    detector = GatedADWIN()
    assert _feed(detector, values) == []
    assert detector.n_detections == 0


def test_a_one_sigma_shift_is_found_within_a_few_hundred_values_with_its_evidence():
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(0.7, 0.15, 20_000), rng.normal(0.55, 0.15, 5_000)])
    detector = GatedADWIN()
    alarms = _feed(detector, values)
    assert alarms == [20_263]
    found = detector.detection
    assert (round(found.mean_before, 3), round(found.mean_after, 3)) == (0.702, 0.56)
    assert (found.n_before, found.n_after) == (19_008, 256)
    assert round(found.effect, 2) == -0.94


def test_a_shift_of_ten_times_the_range_is_found_at_once():
    """Response times sent in seconds instead of milliseconds: log time drops by ~6.9."""
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(9.2, 0.3, 5_000), rng.normal(2.3, 0.3, 1_000)])
    detector = GatedADWIN()
    assert _feed(detector, values) == [5_063]
    assert detector.detection.effect < -10


def test_a_segment_smaller_than_the_minimum_never_alarms():
    values = np.concatenate([np.full(500, 1.0), np.full(400, 100.0)])
    detector = GatedADWIN(reference_size=1000)
    assert _feed(detector, values) == []
    assert detector.learning_reference


def test_a_change_below_the_minimum_effect_is_ignored():
    rng = np.random.default_rng(6)
    values = np.concatenate([rng.normal(0, 1, 100_000), rng.normal(0.15, 1, 100_000)])
    detector = GatedADWIN(min_effect=0.25)
    assert _feed(detector, values) == []
    assert detector.n_ignored == 1


def test_an_error_that_falls_is_not_drift():
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(10, 3, 5_000), rng.normal(5, 3, 5_000)])
    assert _feed(GatedADWIN(direction="increase"), values) == []
    assert _feed(GatedADWIN(direction="both"), values) == [5_159]


def test_state_round_trip_continues_exactly_where_it_stopped():
    rng = np.random.default_rng(8)
    values = np.concatenate([rng.normal(0, 1, 30_000), rng.normal(1, 1, 3_000)])
    straight = GatedADWIN()
    expected = _feed(straight, values)
    resumed = GatedADWIN()
    _feed(resumed, values[:29_000])
    resumed = GatedADWIN.from_state(json.loads(json.dumps(resumed.to_state())))
    assert [i + 29_000 for i in _feed(resumed, values[29_000:])] == expected == [30_183]
    assert resumed.to_state() == straight.to_state()


def test_a_state_of_another_format_is_refused():
    state = GatedADWIN().to_state()
    with pytest.raises(ValueError, match="delete the drift state file"):
        GatedADWIN.from_state({**state, "format": 99})


# -- monitor ------------------------------------------------------------------------------------
def _predictions(rng, n, start, *, version="1", accuracy=0.7, score=60.0, subject="math", grade=6):
    return pd.DataFrame({
        "event_id": [f"{start.timestamp():.0f}-{i}" for i in range(n)],
        "event_time": pd.date_range(start, periods=n, freq="s", tz="UTC"),
        "subject": subject, "grade_level": grade, "model_version": version,
        "accuracy": np.clip(rng.normal(accuracy, 0.15, n), 0, 1),
        "ability": rng.normal(0, 1, n), "mean_log_time": rng.normal(9, 0.3, n),
        "progress_score": rng.normal(score, 12, n)})


def _outcomes(rng, n, start, *, version="1", error=8.0, correct=0.7, subject="math", grade=6):
    return pd.DataFrame({
        "event_id": [f"o{start.timestamp():.0f}-{i}" for i in range(n)],
        "event_time": pd.date_range(start, periods=n, freq="s", tz="UTC"),
        "subject": subject, "grade_level": grade, "model_version": version,
        "abs_error": np.abs(rng.normal(0, error, n)),
        "level_correct": rng.random(n) < correct})


def _run(monitor, frames, start_batch=0):
    found = []
    for offset, (predictions, outcomes) in enumerate(frames):
        batch = start_batch + offset
        found += monitor.observe(batch, predictions, outcomes, now=NOW + timedelta(seconds=batch))
    return found


def test_a_new_model_version_is_not_prediction_drift():
    rng = np.random.default_rng(9)
    monitor = DriftMonitor(DriftSettings(min_segment_size=300), stream_id="s")
    frames = [(_predictions(rng, 200, NOW + timedelta(seconds=200 * b),
                            version="1" if b < 10 else "2", score=60 if b < 10 else 75), None)
              for b in range(20)]
    assert _run(monitor, frames) == []
    assert monitor.detector("predicted_score", "math/5-8").n_seen == 2000  # restarted at v2
    assert monitor.detector("accuracy", "math/5-8").n_seen == 4000  # not model dependent


def test_outcomes_of_a_retired_version_do_not_feed_the_error_detectors():
    rng = np.random.default_rng(10)
    monitor = DriftMonitor(DriftSettings(min_segment_size=300), stream_id="s")
    monitor.observe(0, _predictions(rng, 50, NOW, version="2"), None, now=NOW)
    monitor.observe(1, None, _outcomes(rng, 400, NOW, version="1", error=30), now=NOW)
    assert monitor.detector("abs_error", "math/5-8").n_seen == 0
    monitor.observe(2, None, _outcomes(rng, 400, NOW, version="2"), now=NOW)
    assert monitor.detector("abs_error", "math/5-8").n_seen == 400


def test_concept_drift_asks_once_per_segment_within_the_cooldown():
    rng = np.random.default_rng(11)
    settings = DriftSettings(min_segment_size=500, cooldown_seconds=3600)
    monitor = DriftMonitor(settings, stream_id="s")
    frames = []
    for b in range(40):
        start = NOW + timedelta(seconds=200 * b)
        error, correct = (8.0, 0.7) if b < 15 else (20.0, 0.4)
        frames.append((_predictions(rng, 200, start),
                       pd.concat([_outcomes(rng, 200, start, error=error, correct=correct),
                                  _outcomes(rng, 200, start, error=error, correct=correct,
                                            subject="reading", grade=2)])))
    found = _run(monitor, frames)
    summary = [(f.batch_id, f.signal, f.segment, f.request_id is not None) for f in found]
    assert summary == [(15, "abs_error", "math/5-8", True), (15, "abs_error", "reading/1-4", True),
                       (16, "misclassified", "reading/1-4", False),
                       (17, "misclassified", "math/5-8", False)]


def test_the_same_batches_give_the_same_ids():
    def run():
        rng = np.random.default_rng(12)
        monitor = DriftMonitor(DriftSettings(min_segment_size=300), stream_id="fixed")
        frames = [(_predictions(rng, 200, NOW + timedelta(seconds=200 * b),
                                accuracy=0.7 if b < 8 else 0.4), None) for b in range(12)]
        return [(f.drift_event_id, f.request_id) for f in _run(monitor, frames)]

    first = run()
    assert first and first == run()


def test_a_missing_signal_column_says_which():
    monitor = DriftMonitor(stream_id="s")
    frame = _predictions(np.random.default_rng(0), 10, NOW).drop(columns=["ability"])
    with pytest.raises(KeyError, match="needs column 'ability' in the predictions frame"):
        monitor.observe(0, frame, None, now=NOW)


def test_monitor_state_survives_a_round_trip_through_json():
    rng = np.random.default_rng(13)
    frames = [(_predictions(rng, 200, NOW + timedelta(seconds=200 * b),
                            accuracy=0.7 if b < 14 else 0.5),
               _outcomes(rng, 100, NOW + timedelta(seconds=200 * b))) for b in range(20)]
    settings = DriftSettings(min_segment_size=500)
    straight = DriftMonitor(settings, stream_id="s")
    expected = _run(straight, frames)
    resumed = DriftMonitor(settings, stream_id="s")
    _run(resumed, frames[:10])
    resumed = DriftMonitor.from_state(json.loads(json.dumps(resumed.to_state())))
    assert _run(resumed, frames[10:], start_batch=10) == expected
    assert [f.signal for f in expected] == ["accuracy"]

