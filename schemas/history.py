"""The layout of a history folder: what ``learnscore simulate history`` writes and the loaders read.

Events one per line, exactly as on Kafka (``submissions.jsonl``, ``outcomes.jsonl``), what the
simulator knew about each learner (``truth.parquet``, absent for real data), and
``manifest.json``, written last: a folder without it is incomplete.
"""

SUBMISSIONS_FILE = "submissions.jsonl"
OUTCOMES_FILE = "outcomes.jsonl"
TRUTH_FILE = "truth.parquet"
MANIFEST_FILE = "manifest.json"
#: Where a state folder keeps the simulated history: ``<state_dir>/simulator/history``.
DEFAULT_HISTORY_SUBDIR = "simulator/history"
