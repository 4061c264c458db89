"""The committed JSON Schema files are exactly what the contracts derive (never stale)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from learnscore.schemas.events import EVENTS
from learnscore.schemas.export import JSON_SCHEMA_DIR, render_json_schemas, schema_file_name, write_json_schemas

ROOT = Path(__file__).resolve().parents[2]


def test_committed_files_equal_the_derived_schemas():
    rendered = render_json_schemas()
    committed = {path.name: path.read_text(encoding="utf-8") for path in JSON_SCHEMA_DIR.glob("*.json")}
    assert sorted(committed) == sorted(rendered), 'run "learnscore schemas export"'
    for name, text in rendered.items():
        assert committed[name] == text, f'{name} is stale: run "learnscore schemas export"'


def test_one_file_per_event_named_with_its_version():
    assert sorted(render_json_schemas()) == sorted(f"{name}.v1.json" for name in EVENTS)
    for record in EVENTS.values():
        schema = json.loads(render_json_schemas()[schema_file_name(record)])
        assert schema["title"] == record.name
        assert schema["properties"]["schema_version"]["const"] == record.version


def test_export_replaces_stale_files(tmp_path):
    (tmp_path / "Retired.v1.json").write_text("{}")
    (tmp_path / "OutcomeObserved.v1.json").write_text("{}")
    written = write_json_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(render_json_schemas())
    assert not (tmp_path / "Retired.v1.json").exists()
    assert (tmp_path / "OutcomeObserved.v1.json").read_text() == render_json_schemas()["OutcomeObserved.v1.json"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "learnscore", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_export_and_check(tmp_path):
    stale = _cli("schemas", "export", "--check", "--out", str(tmp_path))
    assert stale.returncode == 1
    assert "out of date" in stale.stderr and "learnscore schemas export" in stale.stderr
    written = _cli("schemas", "export", "--out", str(tmp_path))
    assert written.returncode == 0, written.stderr
    assert len(written.stdout.split()) == len(EVENTS)
    fresh = _cli("schemas", "export", "--check", "--out", str(tmp_path))
    assert fresh.returncode == 0 and "up to date" in fresh.stdout
