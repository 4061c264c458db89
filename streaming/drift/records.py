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


def drift_alert(row: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The ``drift_detected`` alert of one ``ops.drift_events`` row: (text, incident key, fields).

    The key is ``kind/signal/segment``: the detectors finding the same change again in later
    batches is the same incident.

    >>> text, key, fields = drift_alert({
    ...     "kind": "covariate", "signal": "accuracy", "segment": "math/5-8", "detector": "ADWIN",
    ...     "statistic": -1.52, "mean_before": 0.70, "mean_after": 0.45, "n_before": 300,
    ...     "n_after": 200, "model_version": "1", "request_id": "r-1", "batch_id": 6,
    ...     "drift_event_id": "d-1"})
    >>> key
    'covariate/accuracy/math/5-8'
    >>> fields["drift_kind"], fields["request_id"]
    ('covariate', 'r-1')
    >>> text
    'drift: covariate/accuracy in math/5-8, -1.52 (mean 0.7 -> 0.45, n 300/200), model 1; retrain requested (r-1)'
    """
    kind, signal, segment = row.get("kind"), row.get("signal"), row.get("segment")
    statistic, request_id = row.get("statistic"), row.get("request_id")
    effect = f"{statistic:+.2f}" if isinstance(statistic, (int, float)) else "?"
    text = (f"drift: {kind}/{signal} in {segment}, {effect} (mean {_number(row.get('mean_before'))} -> "
            f"{_number(row.get('mean_after'))}, n {row.get('n_before')}/{row.get('n_after')}), "
            f"model {row.get('model_version') or '-'}" + (f"; retrain requested ({request_id})" if request_id else ""))
    fields = {"drift_kind": kind}  # ``kind`` names the alert's own kind
    fields.update((name, row[name]) for name in ("signal", "segment", "detector", "statistic", "mean_before",
                                                 "mean_after", "n_before", "n_after", "model_version",
                                                 "request_id", "batch_id", "drift_event_id", "item_id",
                                                 "direction")
                  if row.get(name) is not None)
    return text, f"{kind}/{signal}/{segment}", fields


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "?"


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
