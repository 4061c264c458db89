"""A simulated history as a warehouse would export it: ``learnscore simulate export``.

The sample input of ``learnscore import`` (docs/bring-your-own-data.md, the import tests and
benchmark): one row per answered item in a warehouse's own words — its column names, subjects
spelt out, correct as 0/1, time spent in seconds, times without an offset (UTC) — and an
outcomes file keyed by learner, test and time taken, as exports usually are. The mapping that
reads it is ``examples/mappings/warehouse-long.yaml``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa

from learnscore.schemas.history import OUTCOMES_FILE, SUBMISSIONS_FILE

ANSWER_COLUMNS = ("student_id", "test_id", "taken_at", "subject", "grade", "question_id", "skill",
                  "is_correct", "seconds_spent", "attempts", "used_hint")
OUTCOME_COLUMNS = ("student_id", "test_id", "taken_at", "final_score", "final_level", "measured_at")
SUBJECT_NAMES = {"math": "Mathematics", "reading": "Reading", "science": "Science"}
_CHUNK = 4096  # submissions per written batch


def warehouse_time(rfc3339: str) -> str:
    """An event time as the export writes it: UTC, no offset, milliseconds.

    >>> warehouse_time("2026-10-11T09:35:02.400Z"), warehouse_time("2026-10-11T09:35:02Z")
    ('2026-10-11 09:35:02.400', '2026-10-11 09:35:02.000')
    """
    from datetime import datetime, timezone

    moment = datetime.fromisoformat(rfc3339).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def answer_rows(submissions: list[dict[str, Any]]) -> pa.Table:
    """``DiagnosticSubmitted`` events → one row per answered item, in the warehouse's columns."""
    columns: dict[str, list] = {name: [] for name in ANSWER_COLUMNS}
    for event in submissions:
        taken_at = warehouse_time(event["event_time"])
        subject = SUBJECT_NAMES.get(event["subject"], event["subject"])
        for response in event["responses"]:
            for name, value in (("student_id", event["learner_id"]), ("test_id", event["assessment_id"]),
                                ("taken_at", taken_at), ("subject", subject), ("grade", event["grade_level"]),
                                ("question_id", response["item_id"]), ("skill", response["skill"]),
                                ("is_correct", int(response["correct"])),
                                ("seconds_spent", round(response["response_time_ms"] / 1000, 3)),
                                ("attempts", response["attempts"]),
                                ("used_hint", "yes" if response["hint_used"] else "no")):
                columns[name].append(value)
    return pa.table(columns)


def outcome_rows(outcomes: list[dict[str, Any]], submissions: dict[str, dict[str, Any]]) -> pa.Table:
    """``OutcomeObserved`` events → the export's outcome rows, keyed like the answers."""
    columns: dict[str, list] = {name: [] for name in OUTCOME_COLUMNS}
    for outcome in outcomes:
        submission = submissions[outcome["submission_event_id"]]
        for name, value in (("student_id", outcome["learner_id"]), ("test_id", submission["assessment_id"]),
                            ("taken_at", warehouse_time(submission["event_time"])),
                            ("final_score", outcome["observed_progress_score"]),
                            ("final_level", outcome["observed_comprehension_level"]),
                            ("measured_at", warehouse_time(outcome["event_time"]))):
            columns[name].append(value)
    return pa.table(columns)


def write_export(history_dir: Path, out: Path, *, file_format: Literal["csv", "parquet"] = "csv",
                 max_rows: int | None = None) -> dict[str, Any]:
    """Write ``answers.<fmt>`` and ``outcomes.<fmt>`` for the history in ``history_dir`` into
    ``out``; ``max_rows`` stops after the submission that reaches that many answer rows.
    Returns the paths and counts."""
    out.mkdir(parents=True, exist_ok=True)
    answers_path, outcomes_path = out / f"answers.{file_format}", out / f"outcomes.{file_format}"
    answers = _Writer(answers_path, file_format)
    outcomes = _Writer(outcomes_path, file_format)
    rows = submissions_written = 0
    try:
        for submissions, outcome_events in _history_chunks(history_dir):
            if max_rows is not None:
                kept = []
                for event in submissions:
                    if rows >= max_rows:
                        break
                    kept.append(event)
                    rows += len(event["responses"])
                submissions = kept
            else:
                rows += sum(len(event["responses"]) for event in submissions)
            if not submissions:
                break
            by_id = {event["event_id"]: event for event in submissions}
            answers.write(answer_rows(submissions))
            outcomes.write(outcome_rows([o for o in outcome_events if o["submission_event_id"] in by_id], by_id))
            submissions_written += len(submissions)
    finally:
        answers.close()
        outcomes.close()
    return {"answers": str(answers_path), "outcomes": str(outcomes_path), "rows": rows,
            "submissions": submissions_written}


def _history_chunks(history_dir: Path) -> Iterator[tuple[list[dict], list[dict]]]:
    """(submissions, their outcomes) a chunk at a time: the files are in the same order."""
    with open(history_dir / SUBMISSIONS_FILE, "rb") as submissions, open(history_dir / OUTCOMES_FILE, "rb") as outcomes:
        while True:
            chunk = [orjson.loads(line) for line, _ in zip(submissions, range(_CHUNK))]
            if not chunk:
                return
            yield chunk, [orjson.loads(line) for line, _ in zip(outcomes, range(len(chunk)))]


class _Writer:
    def __init__(self, path: Path, file_format: str):
        self.path, self.format = path, file_format
        self._writer = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            if self.format == "parquet":
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(self.path, table.schema)
            else:
                import pyarrow.csv as pcsv

                self._writer = pcsv.CSVWriter(self.path, table.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
