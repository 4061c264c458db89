"""The JSON Schema files other teams read: ``schemas/json/<EventName>.v<version>.json``.

They are derived from :mod:`learnscore.schemas.events` and committed; a test compares the committed files
with :func:`render_json_schemas` so they can never go stale. Regenerate them with
``learnscore schemas export``.
"""

from __future__ import annotations

import json
from pathlib import Path

from learnscore.schemas.contract import Record, json_schema
from learnscore.schemas.events import EVENTS

JSON_SCHEMA_DIR = Path(__file__).resolve().parent / "json"


def schema_file_name(record: Record) -> str:
    """``DiagnosticSubmitted`` version 1 → ``DiagnosticSubmitted.v1.json``.

    >>> from learnscore.schemas.events import OUTCOME_OBSERVED
    >>> schema_file_name(OUTCOME_OBSERVED)
    'OutcomeObserved.v1.json'
    """
    return f"{record.name}.v{record.version or 1}.json"


def render_json_schemas() -> dict[str, str]:
    """File name → file text for every event contract (stable formatting, one trailing newline)."""
    return {
        schema_file_name(record): json.dumps(json_schema(record), indent=2, ensure_ascii=False) + "\n"
        for record in EVENTS.values()
    }


def write_json_schemas(directory: Path = JSON_SCHEMA_DIR) -> list[Path]:
    """Write every event's JSON Schema into ``directory``; remove files of events that no longer
    exist there. Returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_json_schemas()
    for stale in directory.glob("*.v*.json"):
        if stale.name not in rendered:
            stale.unlink()
    written = []
    for name, text in sorted(rendered.items()):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
