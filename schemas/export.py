"""The JSON Schema files other teams read: ``schemas/json/<EventName>.v<version>.json``.

They are derived from :mod:`learnscore.schemas.events` and committed (for the default domain); a
test compares the committed files with :func:`render_json_schemas` so they can never go stale.
Regenerate them with ``learnscore schemas export``; a platform with its own ``domain:`` in config
exports its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from learnscore.schemas.contract import Contract, json_schema
from learnscore.schemas.events import EVENTS

JSON_SCHEMA_DIR = Path(__file__).resolve().parent / "json"


def schema_file_name(record: Contract) -> str:
    """``DiagnosticSubmitted`` version 1 → ``DiagnosticSubmitted.v1.json``.

    >>> from learnscore.schemas.events import OUTCOME_OBSERVED
    >>> schema_file_name(OUTCOME_OBSERVED)
    'OutcomeObserved.v1.json'
    """
    return f"{record.name}.v{record.version or 1}.json"


def render_json_schemas(events: dict[str, Contract] | None = None) -> dict[str, str]:
    """File name → file text for every event contract (stable formatting, one trailing newline);
    ``events`` defaults to the contracts of the default domain."""
    return {
        schema_file_name(record): json.dumps(json_schema(record), indent=2, ensure_ascii=False) + "\n"
        for record in (events or EVENTS).values()
    }


def write_json_schemas(directory: Path = JSON_SCHEMA_DIR, events: dict[str, Contract] | None = None) -> list[Path]:
    """Write every event's JSON Schema into ``directory``; remove files of events that no longer
    exist there. Returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_json_schemas(events)
    for stale in directory.glob("*.v*.json"):
        if stale.name not in rendered:
            stale.unlink()
    written = []
    for name, text in sorted(rendered.items()):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
