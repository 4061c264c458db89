"""Which data a retrain run trains on, and when the schedule asks for one (pure functions).

The window policy, written down:

* **Concept drift** (a request whose statistic is ``concept/...``: the relation between answers
  and outcomes changed). Data from before the change teaches the old relation, so the window
  starts at the earliest onset among the burst's concept requests (``evidence_window_start``)
  minus ``retrain.concept_history_seconds`` (default 0) and ends now.
* **Covariate or prediction drift, schedule, manual.** The relation still holds; the model
  needs the new part of the population next to the old: the last ``retrain.history_days``.
* **Enough data.** If the window holds fewer than ``retrain.min_training_rows`` labelled rows,
  it is widened back in time until it does (the caller counts; :func:`widen_to_rows`).
* **Post-onset data first.** Widening a concept-drift window mixes in rows that teach the old
  relation, and the new version lands between the old and the new oracle. So a concept-drift
  run first *waits* for outcomes of post-onset submissions — up to
  ``retrain.concept_max_wait_seconds`` after the earliest detection — and trains on post-onset
  data alone once there are ``retrain.min_training_rows`` of them; only when the wait is over
  does it widen (:func:`post_onset_wait`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from learnscore.schemas.contract import parse_timestamp

SCHEDULE_NAMESPACE = uuid.UUID("0e7f7c0a-9d2b-4b61-8a43-3c1f5e2d7b90")


@dataclass(frozen=True)
class TrainingWindow:
    """Train on submissions with ``since <= event_time < until``; ``reason`` says why."""

    since: datetime
    until: datetime
    reason: str
    onset: datetime | None = None  # concept drift: the earliest onset the window starts from


def request_kind(request: dict[str, Any]) -> str:
    """``concept`` / ``covariate`` / ``prediction`` for drift requests, else the trigger.

    >>> request_kind({"trigger": "drift", "statistic": "concept/abs_error"})
    'concept'
    >>> request_kind({"trigger": "schedule"})
    'schedule'
    """
    if request.get("trigger") == "drift":
        return (request.get("statistic") or "drift/").split("/", 1)[0] or "drift"
    return request.get("trigger") or "manual"


def choose_window(requests: Iterable[dict[str, Any]], now: datetime, *, history_days: float,
                  concept_history_seconds: float = 0.0) -> TrainingWindow:
    """The training window for a burst of ``RetrainRequested`` events (policy: module doc).

    >>> now = datetime(2025, 3, 10, 12, tzinfo=timezone.utc)
    >>> concept = {"trigger": "drift", "statistic": "concept/abs_error",
    ...            "evidence_window_start": "2025-03-10T11:40:00Z"}
    >>> choose_window([concept], now, history_days=30, concept_history_seconds=600)
    ... # doctest: +NORMALIZE_WHITESPACE
    TrainingWindow(since=datetime.datetime(2025, 3, 10, 11, 30, tzinfo=datetime.timezone.utc),
                   until=datetime.datetime(2025, 3, 10, 12, 0, tzinfo=datetime.timezone.utc),
                   reason='concept drift: from the earliest onset 2025-03-10T11:40:00+00:00
                   minus 600 s',
                   onset=datetime.datetime(2025, 3, 10, 11, 40, tzinfo=datetime.timezone.utc))
    >>> choose_window([{"trigger": "schedule"}], now, history_days=30).since.isoformat()
    '2025-02-08T12:00:00+00:00'
    """
    requests = list(requests)
    onsets = [parse_timestamp(r["evidence_window_start"]) for r in requests
              if request_kind(r) == "concept" and r.get("evidence_window_start")]
    onsets = [onset for onset in onsets if onset is not None]
    if onsets:
        onset = min(onsets)
        return TrainingWindow(onset - timedelta(seconds=concept_history_seconds), now,
                              f"concept drift: from the earliest onset {onset.isoformat()} "
                              f"minus {concept_history_seconds:g} s", onset)
    kinds = sorted({request_kind(r) for r in requests}) or ["manual"]
    return TrainingWindow(now - timedelta(days=history_days), now,
                          f"{'/'.join(kinds)}: the last {history_days:g} days")


def widen_to_rows(window: TrainingWindow, labelled_times_desc: list[datetime],
                  min_rows: int) -> TrainingWindow:
    """Move ``since`` back so that the window holds ``min_rows`` labelled rows, if it does not.

    ``labelled_times_desc`` are the event times of the most recent labelled rows before
    ``until``, newest first (at least ``min_rows`` of them when there are that many).

    >>> until = datetime(2025, 3, 10, tzinfo=timezone.utc)
    >>> window = TrainingWindow(until - timedelta(hours=1), until, "concept drift")
    >>> times = [until - timedelta(minutes=m) for m in range(0, 300, 10)]  # 30 rows
    >>> widen_to_rows(window, times, 10).since.isoformat()   # 6 in the hour: back to the 10th
    '2025-03-09T22:30:00+00:00'
    >>> widen_to_rows(window, times, 5) == window
    True
    """
    inside = sum(1 for t in labelled_times_desc if window.since <= t < window.until)
    if inside >= min_rows or not labelled_times_desc:
        return window
    since = labelled_times_desc[min(min_rows, len(labelled_times_desc)) - 1]
    if since >= window.since:
        return window
    return TrainingWindow(since, window.until, f"{window.reason}; widened back to "
                          f"{since.isoformat()} to reach {min_rows} labelled rows "
                          f"(only {inside} in the window)", window.onset)


def post_onset_wait(window: TrainingWindow, labelled_times_desc: list[datetime], *, min_rows: int,
                    first_detected: datetime | None, now: datetime, max_wait_seconds: float) -> float:
    """Seconds a concept-drift run should still wait for outcomes of post-onset submissions
    before it trains (0: train now, on what there is).

    It waits while the window holds fewer than ``min_rows`` labelled rows and less than
    ``max_wait_seconds`` have passed since the earliest detection; other windows never wait.

    >>> now = datetime(2025, 3, 10, 12, tzinfo=timezone.utc)
    >>> window = TrainingWindow(now - timedelta(minutes=10), now, "concept drift", onset=now - timedelta(minutes=10))
    >>> times = [now - timedelta(seconds=s) for s in range(1, 3000, 2)]   # 1500 rows, 300 post-onset
    >>> post_onset_wait(window, times, min_rows=1000, first_detected=now - timedelta(minutes=2),
    ...                 now=now, max_wait_seconds=600)
    480.0
    >>> post_onset_wait(window, times, min_rows=200, first_detected=now - timedelta(minutes=2),
    ...                 now=now, max_wait_seconds=600)
    0.0
    """
    if window.onset is None:
        return 0.0
    inside = sum(1 for t in labelled_times_desc if window.since <= t < window.until)
    if inside >= min_rows:
        return 0.0
    waited = (now - (first_detected or now)).total_seconds()
    return max(0.0, max_wait_seconds - waited)


def schedule_request(now: datetime, every: timedelta) -> dict[str, Any]:
    """The ``RetrainRequested`` of the schedule slot ``now`` falls in.

    Its id is derived from the slot, so every worker (or restart) asks for the same slot with
    the same request id and the slot is trained at most once.

    >>> event = schedule_request(datetime(2025, 3, 10, 13, 5, tzinfo=timezone.utc),
    ...                          timedelta(hours=24))
    >>> event["trigger"], event["event_time"]
    ('schedule', '2025-03-10T13:05:00Z')
    >>> event["event_id"] == schedule_request(datetime(2025, 3, 10, 23, 0, tzinfo=timezone.utc),
    ...                                       timedelta(hours=24))["event_id"]
    True
    """
    period = int(every.total_seconds())
    slot = int(now.timestamp()) // period
    stamp = now.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return {
        "event_id": str(uuid.uuid5(SCHEDULE_NAMESPACE, f"schedule/{period}/{slot}")),
        "schema_version": 1,
        "event_time": stamp,
        "trigger": "schedule",
        "detected_at": stamp,
    }
