"""Per-segment drift detection over micro-batches: detectors, model versions, cooldown.

:class:`DriftMonitor` is pure (no I/O): it takes the frames of one micro-batch and returns
the :class:`Finding` s it made, with deterministic ids. The stream hook (``hook.py``) persists
its state and writes the findings; the benchmark drives the very same object on a fast path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

from learnscore.schemas.segments import segment_labels
from learnscore.streaming.drift.detectors import Detection, GatedADWIN
from learnscore.streaming.drift.signals import SIGNALS, Signal

DETECTOR_NAME = "ADWIN"
MONITOR_FORMAT = 1
# Fixed namespaces: the same (stream, batch, detector, signal, segment) always gives the same ids.
DRIFT_EVENT_NAMESPACE = uuid.UUID("5b0d8c2e-6f3a-4e0b-9a57-0c7f4c6f2a11")
RETRAIN_REQUEST_NAMESPACE = uuid.UUID("a3e1f9d4-2c4b-4d8e-8f1a-7b6c5d4e3f21")
_CLOCK_ENTRIES = 256


@dataclass(frozen=True)
class DriftSettings:
    """Detector and segment parameters (``drift:`` in conf/; why these values: detectors.py)."""

    grade_bands: tuple[tuple[int, int], ...] = ((1, 4), (5, 8), (9, 12))
    delta: float = 1e-5
    clock: int = 32
    min_segment_size: int = 1000
    min_window: int = 100
    min_effect_sigma: float = 0.25
    cooldown_seconds: float = 900.0

    @classmethod
    def from_config(cls, drift_config) -> DriftSettings:
        return cls(grade_bands=tuple(tuple(band) for band in drift_config.grade_bands),
                   delta=drift_config.delta, clock=drift_config.clock,
                   min_segment_size=drift_config.min_segment_size,
                   min_window=drift_config.min_window,
                   min_effect_sigma=drift_config.min_effect_sigma,
                   cooldown_seconds=drift_config.cooldown_seconds)


@dataclass(frozen=True)
class Finding:
    """One accepted detection with its evidence; ``request_id`` when it asked for a retrain.

    ``window_start`` is the event time where the window after the change begins (≈ the onset),
    ``window_end`` the event time of the value that raised the alarm.
    """

    drift_event_id: str
    batch_id: int
    detected_at: datetime
    kind: str
    detector: str
    signal: str
    segment: str
    detection: Detection
    model_version: str | None
    window_start: datetime | None
    window_end: datetime | None
    request_id: str | None = None


def drift_key(stream_id: str, batch_id: int, detector: str, signal: str, segment: str) -> str:
    """The identity of a detection; the same inputs on a replay give the same key."""
    return f"{stream_id}/{batch_id}/{detector}/{signal}/{segment}"


@dataclass
class _Clock:
    """Rows seen in one segment, with the event time at sparse positions (for onset times)."""

    count: int = 0
    marks: list[list[float]] = field(default_factory=list)  # [position, epoch seconds]

    def advance(self, times: np.ndarray) -> None:
        if len(times) == 0:
            return
        if times[0] == times[0]:  # no mark without a known event time
            self.marks.append([float(self.count), float(times[0])])
        self.count += len(times)
        if len(self.marks) > _CLOCK_ENTRIES:  # thin the older half, keep recent detail
            half = len(self.marks) // 2
            self.marks = self.marks[:half:2] + self.marks[half:]

    def time_at(self, position: int, now_position: int, now_seconds: float) -> float | None:
        """Event time at a past row position, interpolated between the marks around it."""
        marks = [*self.marks, [float(now_position), now_seconds]]
        if position <= marks[0][0]:
            return marks[0][1]
        for (p0, t0), (p1, t1) in zip(marks, marks[1:]):
            if p0 <= position <= p1:
                return t0 + (t1 - t0) * (position - p0) / (p1 - p0) if p1 > p0 else t1
        return now_seconds


class DriftMonitor:
    """Drift detectors per (signal, segment) for the stream, with cooldown and model versions.

    Parameters
    ----------
    settings
        Detector parameters and grade bands.
    signals
        What to watch (default :data:`~streaming.drift.signals.SIGNALS`).
    stream_id
        Makes ids unique per stream checkpoint (batch ids restart with a new checkpoint);
        a new random one when not given. It is part of the saved state.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> monitor = DriftMonitor(DriftSettings(min_segment_size=300, cooldown_seconds=60),
    ...                        stream_id="demo")
    >>> def batch(n, accuracy, start):
    ...     return pd.DataFrame({
    ...         "event_time": pd.date_range(start, periods=n, freq="s", tz="UTC"),
    ...         "subject": "math", "grade_level": 6, "model_version": "1",
    ...         "accuracy": np.clip(rng.normal(accuracy, 0.15, n), 0, 1),
    ...         "ability": rng.normal(0, 1, n), "mean_log_time": rng.normal(9, 0.3, n),
    ...         "progress_score": rng.normal(60, 12, n)})
    >>> now = datetime(2025, 3, 1, tzinfo=timezone.utc)
    >>> found = []
    >>> for b in range(20):
    ...     frame = batch(200, 0.7 if b < 12 else 0.55, now + timedelta(seconds=200 * b))
    ...     found += monitor.observe(b, frame, None, now=now + timedelta(seconds=b))
    >>> [(f.batch_id, f.signal, f.segment, round(f.detection.effect, 2), f.request_id is not None)
    ...  for f in found]
    [(13, 'accuracy', 'math/5-8', -0.92, True)]
    >>> found[0].window_start.isoformat()
    '2025-03-01T00:39:40+00:00'
    """

    def __init__(self, settings: DriftSettings | None = None,
                 signals: tuple[Signal, ...] = SIGNALS, stream_id: str | None = None):
        self.settings = settings or DriftSettings()
        self.signals = signals
        self.stream_id = stream_id or uuid.uuid4().hex
        self.model_version: str | None = None
        self._detectors: dict[str, GatedADWIN] = {}
        self._detector_versions: dict[str, str | None] = {}
        self._clocks: dict[str, _Clock] = {}
        self._last_request: dict[str, str] = {}  # segment → ISO time of its last request

    # -- detectors -------------------------------------------------------------------------
    def _new_detector(self, signal: Signal) -> GatedADWIN:
        settings = self.settings
        return GatedADWIN(delta=settings.delta, clock=settings.clock,
                          min_window=settings.min_window,
                          reference_size=settings.min_segment_size,
                          min_effect=settings.min_effect_sigma, direction=signal.direction,
                          min_scale=signal.min_scale)

    def detector(self, signal_name: str, segment: str) -> GatedADWIN | None:
        """The detector of one (signal, segment), if it has seen data."""
        return self._detectors.get(f"{signal_name}|{segment}")

    def _detector_for(self, signal: Signal, segment: str) -> GatedADWIN:
        key = f"{signal.name}|{segment}"
        detector = self._detectors.get(key)
        if signal.model_dependent and self._detector_versions.get(key) != self.model_version:
            detector = None  # a new model: a new reference, so a promotion is not drift
        if detector is None:
            detector = self._detectors[key] = self._new_detector(signal)
            self._detector_versions[key] = self.model_version if signal.model_dependent else None
        return detector

    # -- one micro-batch -------------------------------------------------------------------
    def observe(self, batch_id: int, predictions: pd.DataFrame | None,
                outcomes: pd.DataFrame | None, now: datetime | None = None) -> list[Finding]:
        """Feed one micro-batch to the detectors; return the drifts it revealed.

        ``predictions``: one row per scored submission with ``subject``, ``grade_level``,
        ``event_time``, ``model_version`` and the signal columns (``accuracy``, ``ability``,
        ``mean_log_time``, ``progress_score``). ``outcomes``: one row per prediction joined with
        its observed outcome, with ``abs_error`` and ``level_correct``. Either may be None.
        Rows are taken in event-time order, so a replayed batch gives the same findings.
        """
        now = now or datetime.now(timezone.utc)
        findings: list[Finding] = []
        predictions = _ordered(predictions)
        outcomes = _ordered(outcomes)
        if predictions is not None and "model_version" in predictions.columns and len(predictions):
            latest = predictions["model_version"].iloc[-1]
            self.model_version = None if pd.isna(latest) else str(latest)
        for source, frame in (("predictions", predictions), ("outcomes", outcomes)):
            if frame is None or frame.empty:
                continue
            findings += self._observe_frame(batch_id, source, frame, now)
        return self._apply_cooldown(findings, now)

    def _observe_frame(self, batch_id: int, source: str, frame: pd.DataFrame,
                       now: datetime) -> list[Finding]:
        signals = [signal for signal in self.signals if signal.source == source]
        segments = segment_labels(frame, self.settings.grade_bands).to_numpy()
        times = _epoch_seconds(frame)
        if "model_version" in frame.columns and self.model_version is not None:
            current = (frame["model_version"].astype("string") == self.model_version).to_numpy(
                dtype=bool, na_value=False)
        else:
            current = np.ones(len(frame), dtype=bool)
        values = {signal.name: signal.values(frame) for signal in signals}
        findings = []
        for segment in sorted({s for s in segments if s is not None}):
            rows = np.flatnonzero(segments == segment)
            clock = self._clocks.setdefault(f"{source}|{segment}", _Clock())
            start = clock.count
            segment_times = times[rows]
            for signal in signals:
                detector = self._detector_for(signal, segment)
                use = current[rows] if signal.model_dependent else np.ones(len(rows), dtype=bool)
                column = values[signal.name][rows]
                use = use & np.isfinite(column)  # a signal the batch does not carry (NaN) is not fed
                positions = np.flatnonzero(use)
                for position, value in zip(positions.tolist(), column[positions].tolist()):
                    if detector.update(value).drift_detected:
                        findings.append(self._finding(
                            batch_id, signal, segment, detector.detection, now, clock, start,
                            segment_times, position))
            clock.advance(segment_times)
        return findings

    def _finding(self, batch_id: int, signal: Signal, segment: str, detection: Detection,
                 now: datetime, clock: _Clock, start: int, times: np.ndarray,
                 position: int) -> Finding:
        # The window after the change began n_after values back (a row position in the segment).
        onset = start + position + 1 - detection.n_after
        onset_seconds = (times[onset - start] if onset >= start
                         else clock.time_at(onset, start, float(times[0])))
        key = drift_key(self.stream_id, batch_id, DETECTOR_NAME, signal.name, segment)
        return Finding(
            drift_event_id=str(uuid.uuid5(DRIFT_EVENT_NAMESPACE, key)),
            batch_id=batch_id, detected_at=now, kind=signal.kind, detector=DETECTOR_NAME,
            signal=signal.name, segment=segment, detection=detection,
            model_version=self.model_version,
            window_start=_datetime(onset_seconds), window_end=_datetime(times[position]),
        )

    def _apply_cooldown(self, findings: list[Finding], now: datetime) -> list[Finding]:
        """The first finding of a segment outside its cooldown asks for a retrain (if its signal
        asks for retrains at all); others do not."""
        cooldown = timedelta(seconds=self.settings.cooldown_seconds)
        result = []
        asks = {signal.name: signal.retrain for signal in self.signals}
        for finding in findings:
            last = self._last_request.get(finding.segment)
            if asks.get(finding.signal, True) and (
                    last is None or now - datetime.fromisoformat(last) >= cooldown):
                key = drift_key(self.stream_id, finding.batch_id, finding.detector,
                                finding.signal, finding.segment)
                finding = replace(finding,
                                  request_id=str(uuid.uuid5(RETRAIN_REQUEST_NAMESPACE, key)))
                self._last_request[finding.segment] = now.isoformat()
            result.append(finding)
        return result

    # -- persistence -----------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """All of the monitor's state as JSON-able data (see :meth:`from_state`)."""
        return {
            "format": MONITOR_FORMAT,
            "stream_id": self.stream_id,
            "settings": {**self.settings.__dict__,
                         "grade_bands": [list(b) for b in self.settings.grade_bands]},
            "model_version": self.model_version,
            "detectors": {key: detector.to_state() for key, detector in self._detectors.items()},
            "detector_versions": self._detector_versions,
            "clocks": {key: {"count": c.count, "marks": c.marks} for key, c in self._clocks.items()},
            "last_request": self._last_request,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], settings: DriftSettings | None = None,
                   signals: tuple[Signal, ...] = SIGNALS) -> DriftMonitor:
        """Restore a monitor. With ``settings`` different from the saved ones, detectors keep
        their saved parameters until they next restart (new detectors use the new ones)."""
        if state.get("format") != MONITOR_FORMAT:
            raise ValueError(f"drift monitor state format {state.get('format')!r} is not "
                             f"{MONITOR_FORMAT}; delete the drift state file to start afresh")
        saved = dict(state["settings"])
        saved["grade_bands"] = tuple(tuple(b) for b in saved["grade_bands"])
        monitor = cls(settings or DriftSettings(**saved), signals, stream_id=state["stream_id"])
        monitor.model_version = state["model_version"]
        monitor._detectors = {key: GatedADWIN.from_state(value)
                              for key, value in state["detectors"].items()}
        monitor._detector_versions = dict(state["detector_versions"])
        monitor._clocks = {key: _Clock(int(value["count"]), [list(m) for m in value["marks"]])
                           for key, value in state["clocks"].items()}
        monitor._last_request = dict(state["last_request"])
        return monitor


def _ordered(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """Rows in event-time order (event id breaks ties) so that a replay feeds the same sequence."""
    if frame is None or frame.empty:
        return frame
    keys = [column for column in ("event_time", "event_id") if column in frame.columns]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True) if keys else frame


def _epoch_seconds(frame: pd.DataFrame) -> np.ndarray:
    if "event_time" not in frame.columns:
        return np.full(len(frame), np.nan)
    times = pd.to_datetime(frame["event_time"], utc=True, errors="coerce")
    return (times - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64,
                                                                             na_value=np.nan)


def _datetime(seconds: float | None) -> datetime | None:
    if seconds is None or seconds != seconds:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
