"""Item drift and leaked items in the stream: each item's answers now against its answers before.

The landing query hands each micro-batch of new valid submissions to :class:`ItemHook`. With the
item bank of the version in ``production`` (:mod:`learnscore.model.item_fit`), every response is
compared with what the bank expects for that learner's ability; the per-item sums of a batch add
up to a window's. The first ``psychometrics.item_reference_submissions`` submissions after a
version starts are its reference; then every ``item_window_submissions`` each item's window is
tested against its reference, and an item whose correct rate moved beyond ``item_z_limit``
is an ``item_drift`` event (``easier``/``harder``, effect size, evidence) — ``item_compromised``
when it also became faster beyond ``item_z_time_limit`` (a leaked item). Rapid guesses are left
out, and abilities are estimated without the items already flagged.

Findings go to ``ops.drift_events`` (kind ``item``) and ``ops.item_flags`` (one row per item:
``flagged`` until ``learnscore items clear``). An item is reported once per version; a new version
(whose bank the retrain re-fitted on recent answers) starts a new reference; an ``item_drift``
that later shows a leak's speed too is reported again as ``item_compromised``. Exactly once: the
monitor, the batch id and the outboxes not yet written are saved in one atomic replace
(``state.py``) before anything is written; a replayed batch feeds nothing again; outboxes are
written oldest first and dropped once written, so a failed write is tried again with the next
batch (both writes are idempotent).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from learnscore.core.config import Config, PsychometricsConfig
from learnscore.model.effort import measure_effort
from learnscore.model.features import FlatResponses, flatten_model_input
from learnscore.model.item_bank import ItemBank
from learnscore.model.item_fit import SUM_COLUMNS, add_sums, compare_items, item_sums
from learnscore.streaming.drift.hook import alert_drift_events
from learnscore.streaming.drift.state import DriftState, DriftStateStore, write_oldest_first

log = logging.getLogger(__name__)

STATE_FILE = "items/state.json"
DETECTOR = "item_fit"
ITEM_EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://learnscore.dev/drift/item")
SEVERITY = {"item_drift": 1, "item_compromised": 2}


@dataclass(frozen=True)
class ItemFinding:
    """An item newly flagged in a window, with the test's row (``model.item_fit.FIT_COLUMNS``)."""

    drift_event_id: str
    batch_id: int
    detected_at: datetime
    item_id: str
    flag: str
    direction: str
    model_version: str
    fit: dict[str, Any]
    reference_responses: int


class ItemMonitor:
    """The reference and window sums of one version, and the items flagged under it."""

    def __init__(self, settings: PsychometricsConfig, stream_id: str | None = None):
        self.settings = settings
        self.stream_id = stream_id or uuid.uuid4().hex[:12]
        self._start(None)

    def _start(self, version: str | None) -> None:
        self.version = version
        self.reference: pd.DataFrame | None = None
        self.reference_count = 0
        self.window: pd.DataFrame | None = None
        self.window_count = 0
        self.flagged: dict[str, str] = {}
        self.last_fit: pd.DataFrame | None = None  # the latest window's test of every item (not persisted)

    def observe(self, batch_id: int, flat: FlatResponses, version: str, bank: ItemBank,
                now: datetime) -> list[ItemFinding]:
        """Add a batch's responses; at the end of a window, test every item and return the new flags."""
        self.follow(version)
        return self.add(batch_id, flat_sums(flat, bank, self.settings, self.flagged), flat.n_rows, now)

    def follow(self, version: str) -> None:
        """Start a new reference when ``version`` is not the one watched so far."""
        if version != self.version:
            if self.version is not None:
                log.info("items: production is version %s (was %s): a new reference", version, self.version)
            self._start(version)

    def add(self, batch_id: int, sums: pd.DataFrame, submissions: int, now: datetime) -> list[ItemFinding]:
        """Add a batch's per-item sums (:func:`flat_sums` of ``submissions`` submissions, under the
        version :meth:`follow` set); at the end of a window, test every item: the new flags."""
        settings, version = self.settings, self.version
        if self.reference_count < settings.item_reference_submissions:
            self.reference = add_sums(self.reference, sums)
            self.reference_count += submissions
            return []
        self.window = add_sums(self.window, sums)
        self.window_count += submissions
        if self.window_count < settings.item_window_submissions:
            return []
        limits = (settings.item_z_limit, settings.item_z_time_limit, settings.item_min_responses)
        fit = self.last_fit = compare_items(self.window, compare_items(self.reference, None), limits)
        self.window, self.window_count = None, 0
        reference_n = dict(zip(self.reference["item_id"], self.reference["responses"]))
        findings = []
        # An item is reported once per flag: an item_drift that turns out faster too is reported
        # again as item_compromised (a gradual leak), never the other way round.
        worse = fit["flag"].map(SEVERITY).fillna(0) > fit["item_id"].map(lambda i: SEVERITY.get(self.flagged.get(i), 0))
        for row in fit[(fit["flag"] != "") & worse].to_dict("records"):
            key = f"{self.stream_id}/{version}/{row['item_id']}/{row['flag']}"
            findings.append(ItemFinding(
                drift_event_id=str(uuid.uuid5(ITEM_EVENT_NAMESPACE, key)), batch_id=batch_id,
                detected_at=now, item_id=row["item_id"], flag=row["flag"], direction=row["direction"],
                model_version=version, fit={k: _plain(v) for k, v in row.items()},
                reference_responses=int(reference_n.get(row["item_id"], 0))))
            self.flagged[row["item_id"]] = row["flag"]
        return findings

    def to_state(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "version": self.version,
                "reference": _frame_state(self.reference), "reference_count": self.reference_count,
                "window": _frame_state(self.window), "window_count": self.window_count,
                "flagged": self.flagged}

    @classmethod
    def from_state(cls, state: dict[str, Any], settings: PsychometricsConfig) -> ItemMonitor:
        monitor = cls(settings, stream_id=state["stream_id"])
        monitor.version = state["version"]
        monitor.reference, monitor.reference_count = _frame(state["reference"]), int(state["reference_count"])
        monitor.window, monitor.window_count = _frame(state["window"]), int(state["window_count"])
        monitor.flagged = dict(state["flagged"])
        return monitor


def drift_event_row(finding: ItemFinding) -> dict[str, Any]:
    """An ``ops.drift_events`` row: ``statistic`` is the item's z, ``mean_before`` the correct rate
    the bank and the reference expected for these learners, ``mean_after`` the observed one."""
    fit = finding.fit
    return {
        "drift_event_id": finding.drift_event_id, "detected_at": finding.detected_at,
        "batch_id": finding.batch_id, "kind": "item", "detector": DETECTOR, "signal": finding.flag,
        "segment": f"item/{finding.item_id}", "statistic": fit["z"],
        "mean_before": fit["observed_rate"] - fit["effect"], "mean_after": fit["observed_rate"],
        "n_before": finding.reference_responses, "n_after": int(fit["responses"]),
        "model_version": finding.model_version, "request_id": None, "item_id": finding.item_id,
        "direction": finding.direction, "evidence": json.dumps(evidence(finding), sort_keys=True),
    }


def evidence(finding: ItemFinding) -> dict[str, Any]:
    """What an item's flag rests on: the change of its correct rate beyond the learners' ability
    (``effect``, ``z``) and of its log response time (``time_change``, ``z_time``), on how many answers."""
    fit = finding.fit
    return {"effect": round(fit["effect"], 4), "z": round(fit["z"], 2),
            "time_change": round(fit["time_residual"], 4), "z_time": round(fit["z_time"], 2),
            "observed_rate": round(fit["observed_rate"], 4), "responses": int(fit["responses"]),
            "reference_responses": finding.reference_responses}


def item_flag_row(finding: ItemFinding) -> dict[str, Any]:
    """The ``ops.item_flags`` row of a new flag."""
    return {"item_id": finding.item_id, "flag": finding.flag, "direction": finding.direction,
            "status": "flagged", "flagged_at": finding.detected_at, "model_version": finding.model_version,
            "drift_event_id": finding.drift_event_id, "evidence": json.dumps(evidence(finding), sort_keys=True),
            "reviewed_at": None, "reviewed_by": None}


class ItemHook:
    """``hook(batch_id, submissions)`` for the landing query: ``submissions`` are the batch's new
    valid submissions (Spark or pandas, with ``subject``, ``grade_level`` and ``responses``)."""

    __name__ = "items"

    def __init__(self, settings: PsychometricsConfig, state_path: str,
                 production_bank: Callable[[], tuple[str, ItemBank] | None],
                 write_events: Callable[[list[dict[str, Any]], str, int], None],
                 write_flags: Callable[[list[dict[str, Any]]], None]):
        self.settings, self.production_bank = settings, production_bank
        self.store = DriftStateStore(state_path)
        self.write_events, self.write_flags = write_events, write_flags
        self._monitor: ItemMonitor | None = None
        self._last_batch_id = -1
        self._unsent: list[dict[str, Any]] = []  # outboxes not known to be written, oldest first

    @property
    def monitor(self) -> ItemMonitor:
        if self._monitor is None:
            state = self.store.load()
            self._monitor = (ItemMonitor.from_state(state.monitor, self.settings) if state.monitor
                             else ItemMonitor(self.settings))
            self._last_batch_id = state.last_batch_id
            # After a restart the saved outboxes may or may not have been written: written again
            # (both writes are idempotent).
            self._unsent = list(state.outbox.get("unsent", []))
        return self._monitor

    def __call__(self, batch_id: int, submissions, *, now: datetime | None = None) -> list[ItemFinding]:
        monitor = self.monitor
        if batch_id <= self._last_batch_id:  # a replay: the detectors are not fed again
            self._emit_unsent()
            return []
        production = self.production_bank()
        if production is None:  # nothing to compare with: the batch is not watched
            self._emit_unsent()
            return []
        version, bank = production
        try:
            monitor.follow(version)
            sums, count = batch_sums(submissions, bank, self.settings, monitor.flagged)
            findings = monitor.add(batch_id, sums, count, now or datetime.now(timezone.utc)) if count else []
            if findings:
                self._unsent.append({
                    "batch_id": batch_id, "app_id": f"learnscore-item-events-{monitor.stream_id}",
                    "drift_events": [_isoformat(drift_event_row(f)) for f in findings],
                    "flags": [_isoformat(item_flag_row(f)) for f in findings]})
            self.store.save(DriftState(monitor=monitor.to_state(), last_batch_id=batch_id,
                                       outbox={"unsent": self._unsent}))
            self._last_batch_id = batch_id
        except BaseException:
            self._monitor = None  # the file is the truth
            raise
        for finding in findings:
            log.warning("items: %s %s (%s) under version %s: %s", finding.item_id, finding.flag,
                        finding.direction, finding.model_version, evidence(finding))
        self._emit_unsent()
        return findings

    def _emit_unsent(self) -> None:
        write_oldest_first(self._unsent, self._write, self._written)

    def _write(self, outbox: dict[str, Any]) -> None:
        self.write_events([_datetimes(row) for row in outbox["drift_events"]], outbox["app_id"],
                          outbox["batch_id"])
        self.write_flags([_datetimes(row) for row in outbox["flags"]])

    def _written(self, outboxes: list[dict[str, Any]]) -> None:
        """Forget written outboxes at once (as the drift hook does), then announce them."""
        self.store.save(DriftState(monitor=self.monitor.to_state(), last_batch_id=self._last_batch_id,
                                   outbox={"unsent": self._unsent}))
        alert_drift_events([row for outbox in outboxes for row in outbox["drift_events"]])


def make_item_hook(config: Config, checkpoint_dir: str, *, spark=None, production_bank=None) -> ItemHook:
    """The item watch of the landing query checkpointed at ``checkpoint_dir``; ``production_bank``:
    the landing query's own (``registry.artifacts.production_item_bank``), so the registry is asked
    and the bank loaded once for both."""
    from learnscore.registry.artifacts import production_item_bank
    from learnscore.streaming.drift.hook import write_drift_events

    def write_events(rows, app_id: str, batch_id: int) -> None:
        from pyspark.sql import SparkSession

        write_drift_events(spark or SparkSession.getActiveSession(), config, rows, app_id, batch_id)

    def write_flags(rows) -> None:
        merge_item_flags(config, rows)

    return ItemHook(config.psychometrics, f"{checkpoint_dir.rstrip('/')}/{STATE_FILE}",
                    production_bank or production_item_bank(config),
                    write_events, write_flags)


def merge_item_flags(config: Config, rows: list[dict[str, Any]]) -> None:
    """New flags into ``ops.item_flags``: an item's row is replaced by a newer flag, never by the
    same one written again (a replayed batch must not undo a reviewer's ``clear``)."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from learnscore.core.lake import ensure_deltalake_table
    from learnscore.schemas.tables import ITEM_FLAGS, arrow_schema

    if not rows:
        return
    path = ensure_deltalake_table(config, ITEM_FLAGS.name)
    data = pa.Table.from_pylist([{c: row.get(c) for c in ITEM_FLAGS.column_names} for row in rows],
                                schema=arrow_schema(ITEM_FLAGS))
    (DeltaTable(path).merge(data, "t.item_id = s.item_id", source_alias="s", target_alias="t")
     .when_matched_update_all(predicate="t.drift_event_id <> s.drift_event_id")
     .when_not_matched_insert_all().execute())


def item_flags(config: Config, *, include_cleared: bool = False) -> pd.DataFrame:
    """The rows of ``ops.item_flags`` (the flagged items; with ``include_cleared`` the reviewed ones
    too), newest first."""
    from learnscore.core.lake import read_table

    flags = read_table(config, "ops.item_flags")
    if not include_cleared:
        flags = flags[flags["status"] == "flagged"]
    return flags.sort_values("flagged_at", ascending=False).reset_index(drop=True)


def clear_item_flag(config: Config, item_id: str, reviewer: str) -> bool:
    """Mark a flagged item reviewed (``status`` ``cleared``): it is scored again when
    ``psychometrics.exclude_compromised_items`` held it out. False when it was not flagged."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from learnscore.core.lake import ensure_deltalake_table

    path = ensure_deltalake_table(config, "ops.item_flags")
    source = pa.table({"item_id": [item_id], "reviewed_at": [datetime.now(timezone.utc)],
                       "reviewed_by": [reviewer]})
    metrics = (DeltaTable(path).merge(source, "t.item_id = s.item_id AND t.status = 'flagged'",
                                      source_alias="s", target_alias="t")
               .when_matched_update({"status": "'cleared'", "reviewed_at": "s.reviewed_at",
                                     "reviewed_by": "s.reviewed_by"})
               .execute())
    return bool(metrics.get("num_target_rows_updated"))


def excluded_items(config: Config) -> list[str]:
    """Items whose answers the scorer leaves out: flagged ``item_compromised`` and not cleared,
    when ``psychometrics.exclude_compromised_items`` is on (else none)."""
    if not config.psychometrics.exclude_compromised_items:
        return []
    flags = item_flags(config)
    return sorted(flags.loc[flags["flag"] == "item_compromised", "item_id"])


class ExcludedItems:
    """:func:`excluded_items` for the scoring query, read again every
    ``psychometrics.item_flags_check_seconds``; a table that cannot be read keeps the last answer."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic):
        self.config, self.clock = config, clock
        self._items: list[str] = []
        self._read_at: float | None = None

    def current(self) -> list[str]:
        if not self.config.psychometrics.exclude_compromised_items:
            return []
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.config.psychometrics.item_flags_check_seconds:
            self._read_at = now
            try:
                items = excluded_items(self.config)
            except Exception as exc:  # noqa: BLE001 - a flag table being rewritten must not stop scoring
                log.warning("items: ops.item_flags unreadable (%s); still leaving out %s", exc, self._items)
                return self._items
            if items != self._items:
                log.warning("items: answers to %s are left out of scoring (item_compromised, not cleared)",
                            items or "no item")
            self._items = items
        return self._items


def flat_sums(flat: FlatResponses, bank: ItemBank, settings: PsychometricsConfig, flagged) -> pd.DataFrame:
    """Per-item sums of a batch: rapid guesses left out, abilities estimated without ``flagged`` items."""
    rapid = measure_effort(flat, bank, share=settings.normative_share, cap_ms=settings.threshold_cap_ms).rapid
    return item_sums(flat, bank, exclude=rapid, not_for_ability=sorted(flagged))


def batch_sums(submissions, bank: ItemBank, settings: PsychometricsConfig, flagged) -> tuple[pd.DataFrame, int]:
    """:func:`flat_sums` of a batch of submissions (pandas, or Spark: summed on the executors, so
    only one row per item and partition reaches the driver) and how many submissions it held."""
    from learnscore.schemas.scoring import MODEL_INPUT_COLUMNS

    if isinstance(submissions, pd.DataFrame):
        from learnscore.streaming.drift.features import _model_input_pandas

        flat = flatten_model_input(_model_input_pandas(submissions)[list(MODEL_INPUT_COLUMNS)])
        return flat_sums(flat, bank, settings, flagged), flat.n_rows
    from learnscore.model.features import spark_model_input_columns

    flagged = sorted(flagged)

    def per_chunk(chunks):
        for chunk in chunks:
            flat = flatten_model_input(chunk)
            sums = flat_sums(flat, bank, settings, flagged) if flat.n_rows else None
            counted = pd.DataFrame({"item_id": [None], **{c: [0.0] for c in SUM_COLUMNS[1:]},
                                    "submissions": [flat.n_rows]})  # the count, even of a chunk with no known item
            yield counted if sums is None or sums.empty else pd.concat([sums.assign(submissions=0), counted])

    schema = ", ".join(["item_id string", *(f"{c} double" for c in SUM_COLUMNS[1:]), "submissions long"])
    rows = submissions.select(*spark_model_input_columns()).mapInPandas(per_chunk, schema).toPandas()
    return add_sums(rows[rows["item_id"].notna()][list(SUM_COLUMNS)]), int(rows["submissions"].sum())


def _frame_state(frame: pd.DataFrame | None) -> dict[str, list] | None:
    return None if frame is None else {c: frame[c].tolist() for c in SUM_COLUMNS}


def _frame(state: dict[str, list] | None) -> pd.DataFrame | None:
    return None if state is None else pd.DataFrame(state, columns=list(SUM_COLUMNS))


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _isoformat(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _datetimes(row: dict[str, Any]) -> dict[str, Any]:
    return {k: datetime.fromisoformat(v) if k in ("detected_at", "flagged_at") and v else v
            for k, v in row.items()}
