"""A simulated history folder (``learnscore simulate history``): where it is, its files, its truth.

The folder holds ``submissions.jsonl`` and ``outcomes.jsonl`` (events in the Kafka contract, one
per line), ``truth.parquet`` (what the simulator knew) and ``manifest.json`` (written last: a
folder without it is incomplete). ``learnscore import --history`` brings the events into silver
(:func:`learnscore.batch.importer.import_history`); training reads the truth for its oracle
metrics (:func:`read_truth`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from learnscore.core.config import Config
from learnscore.schemas.history import (
    DEFAULT_HISTORY_SUBDIR,
    MANIFEST_FILE,
    OUTCOMES_FILE,
    SUBMISSIONS_FILE,
    TRUTH_FILE,
)

_DEFAULT_FILES = {"submissions": SUBMISSIONS_FILE, "outcomes": OUTCOMES_FILE, "truth": TRUTH_FILE}


class HistoryNotFound(FileNotFoundError):
    """No complete simulated history where one was expected."""


def default_history_dir(config: Config) -> Path:
    """Where ``learnscore simulate history`` writes: ``<state_dir>/simulator/history``."""
    return Path(config.state_dir) / DEFAULT_HISTORY_SUBDIR


def history_files(history_dir: str | Path) -> dict[str, Path]:
    """Paths of the history's files (submissions, outcomes, truth) from its manifest, or
    :class:`HistoryNotFound` saying what to do."""
    folder = Path(history_dir)
    path = folder / MANIFEST_FILE
    if not path.exists():
        raise HistoryNotFound(
            f"no complete simulated history in {folder} ({MANIFEST_FILE} missing); create one with "
            f'"learnscore simulate history --out {folder}"')
    names = {**_DEFAULT_FILES, **json.loads(path.read_text()).get("files", {})}
    return {kind: folder / name for kind, name in names.items()}


def read_truth(history_dir: str | Path):
    """The simulator's truth per submission (pandas), or None when the folder has none."""
    try:
        path = history_files(history_dir)["truth"]
    except HistoryNotFound:
        return None
    if not path.exists():
        return None
    return pd.read_parquet(path, columns=["event_id", "true_ability", "oracle_score", "oracle_level"])
