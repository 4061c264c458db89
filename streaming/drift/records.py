"""Findings as rows of ``ops.drift_events`` and as ``RetrainRequested`` events (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from learnscore.schemas.events import RETRAIN_REQUESTED, validate_event
from learnscore.streaming.drift.monitor import Finding


class InvalidRetrainRequest(ValueError):
    """A RetrainRequested we built does not satisfy its own contract (a bug, never sent)."""


def rfc3339(moment: datetime) -> str:
    """``2025-03-01T00:00:00.123456Z`` — UTC, as the contracts write times."""
    return moment.isoformat().replace("+00:00", "Z")


def statistic_name(kind: str, signal: str) -> str:
    """What a request measured, ``kind/signal`` (e.g. ``concept/abs_error``).

    >>> statistic_name("concept", "abs_error")
    'concept/abs_error'
    """
    return f"{kind}/{signal}"


def drift_event_row(finding: Finding) -> dict[str, Any]:
    """One ``ops.drift_events`` row (columns of :data:`learnscore.schemas.tables.DRIFT_EVENTS`)."""
    detection = finding.detection
    return {
        "drift_event_id": finding.drift_event_id,
        "detected_at": finding.detected_at,
        "batch_id": finding.batch_id,
        "kind": finding.kind,
        "detector": finding.detector,
        "signal": finding.signal,
        "segment": finding.segment,
        "statistic": float(detection.effect),
        "mean_before": float(detection.mean_before),
        "mean_after": float(detection.mean_after),
        "n_before": int(detection.n_before),
        "n_after": int(detection.n_after),
        "model_version": finding.model_version,
        "request_id": finding.request_id,
        "item_id": None, "direction": None, "evidence": None,
    }


def retrain_request_event(finding: Finding) -> dict[str, Any]:
    """The ``RetrainRequested`` a finding asks for, validated against its contract.

    ``event_id`` is the finding's deterministic request id, so a re-sent request is recognised
    as the same request by the retrain worker. ``statistic`` names what was measured
    (``kind/signal``); ``evidence`` carries the effect in σ, the window means and counts.
    """
    if finding.request_id is None:
        raise ValueError(f"finding {finding.drift_event_id} did not ask for a retrain")
    detection = finding.detection
    event: dict[str, Any] = {
        "event_id": finding.request_id,
        "schema_version": RETRAIN_REQUESTED.version,
        "event_time": rfc3339(finding.detected_at),
        "trigger": "drift",
        "detector": finding.detector,
        "segment": finding.segment,
        "statistic": statistic_name(finding.kind, finding.signal),
        "evidence": {
            "effect_sigma": float(detection.effect),
            "mean_before": float(detection.mean_before),
            "mean_after": float(detection.mean_after),
            "n_before": float(detection.n_before),
            "n_after": float(detection.n_after),
            "batch_id": float(finding.batch_id),
        },
        "detected_at": rfc3339(finding.detected_at),
    }
    if finding.window_start is not None:
        event["evidence_window_start"] = rfc3339(finding.window_start)
    if finding.window_end is not None:
        event["evidence_window_end"] = rfc3339(finding.window_end)
    verdict = validate_event(RETRAIN_REQUESTED, event, now=finding.detected_at)
    if not verdict.ok:
        raise InvalidRetrainRequest(f"RetrainRequested {finding.request_id} breaks its contract: "
                                    f"{verdict.reason}")
    return event
