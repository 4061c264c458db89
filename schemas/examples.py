"""One valid example of every event contract, for documentation and tests.

>>> from learnscore.schemas.events import EVENTS, validate_event
>>> all(validate_event(EVENTS[name], event).ok for name, event in example_events().items())
True
"""

from __future__ import annotations

import copy
from typing import Any

_SUBMISSION_ID = "8d7e3c52-4b1a-4f0e-9a57-1c2d3e4f5a6b"

_EXAMPLES: dict[str, dict[str, Any]] = {
    "DiagnosticSubmitted": {
        "event_id": _SUBMISSION_ID,
        "schema_version": 1,
        "event_time": "2026-01-31T09:30:00.250Z",
        "learner_id": "L00000000000000a1",
        "assessment_id": "diag-math-v1",
        "subject": "math",
        "grade_level": 5,
        "responses": [
            {"item_id": "math.fractions.v1.007", "skill": "fractions", "correct": True,
             "response_time_ms": 18250, "attempts": 1, "hint_used": False},
            {"item_id": "math.algebra.v1.021", "skill": "algebra", "correct": False,
             "response_time_ms": 41000, "attempts": 2, "hint_used": True},
        ],
    },
    "OutcomeObserved": {
        "event_id": "0f1e2d3c-4b5a-4968-8776-655443322110",
        "schema_version": 1,
        "event_time": "2026-02-28T10:00:00+01:00",
        "submission_event_id": _SUBMISSION_ID,
        "learner_id": "L00000000000000a1",
        "observed_progress_score": 64.5,
        "observed_comprehension_level": "proficient",
    },
    "ScoreIssued": {
        "event_id": "3b9f6a1e-2c4d-4e8f-9a0b-1c2d3e4f5061",
        "schema_version": 1,
        "event_time": "2026-01-31T09:30:01.100Z",
        "submission_event_id": _SUBMISSION_ID,
        "learner_id": "L00000000000000a1",
        "progress_score": 61.2,
        "comprehension_level": "proficient",
        "probabilities": {"beginner": 0.05, "developing": 0.25, "proficient": 0.55, "advanced": 0.15},
        "model_name": "learnscore-diagnostic",
        "model_version": "3",
        "model_alias": "production",
        "scored_at": "2026-01-31T09:30:01.100Z",
    },
    "RetrainRequested": {
        "event_id": "6c5b4a39-2817-4f06-b5e4-d3c2b1a09f8e",
        "schema_version": 1,
        "event_time": "2026-02-28T10:05:00Z",
        "trigger": "drift",
        "detector": "ADWIN",
        "segment": "math|grades 4-6",
        "statistic": "abs_error",
        "evidence": {"mean_before": 4.1, "mean_after": 11.8, "n_before": 5000, "n_after": 640},
        "evidence_window_start": "2026-02-27T10:05:00Z",
        "evidence_window_end": "2026-02-28T10:05:00Z",
        "detected_at": "2026-02-28T10:05:00Z",
    },
    "ModelRegistered": {
        "event_id": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
        "schema_version": 1,
        "event_time": "2026-02-28T10:20:00Z",
        "model_name": "learnscore-diagnostic",
        "version": "4",
        "alias": "staging",
        "actor": "retrain-worker",
        "reason": "drift on abs_error in math|grades 4-6",
        "metrics": {"mae": 4.3, "macro_f1": 0.71},
    },
    "ModelPromoted": {
        "event_id": "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
        "schema_version": 1,
        "event_time": "2026-02-28T10:21:00Z",
        "model_name": "learnscore-diagnostic",
        "version": "4",
        "alias": "production",
        "previous_version": "3",
        "actor": "retrain-worker",
        "reason": "gates passed: mae 4.3 <= 4.9 (production) + 0.5",
        "metrics": {"mae": 4.3, "macro_f1": 0.71},
    },
    "ModelRolledBack": {
        "event_id": "c3d4e5f6-a7b8-4c9d-8e1f-2a3b4c5d6e7f",
        "schema_version": 1,
        "event_time": "2026-02-28T11:00:00Z",
        "model_name": "learnscore-diagnostic",
        "version": "3",
        "alias": "production",
        "previous_version": "4",
        "actor": "ops@example.org",
        "reason": "manual rollback after complaints",
    },
}


def example_events() -> dict[str, dict[str, Any]]:
    """Event name → a valid example event (a fresh copy each call)."""
    return copy.deepcopy(_EXAMPLES)
