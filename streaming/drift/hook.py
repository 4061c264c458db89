"""The drift step of the stream's ``foreachBatch``: detect, persist, then write the findings.

Order of one call for micro-batch ``b`` (exactly once, see ``state.py``):

1. ``b <= last_batch_id``: a replay. The detectors are not fed again; the saved outboxes not
   yet known to be written are written (both writes are idempotent).
2. Otherwise the monitor observes the batch, and the new monitor state, ``b`` and the unsent
   outboxes (this batch's outputs appended) are saved in one atomic replace of the state file.
3. The unsent outboxes are written oldest first, each dropped once written: ``ops.drift_events``
   with Delta's ``txnAppId``/``txnVersion`` (one app id per stream, version = batch id: a second
   write of the batch is skipped), and each ``RetrainRequested`` on ``model.retrain-requests``
   (key = segment, event id = deterministic request id, so the retrain worker recognises a
   re-sent request). A write that fails stops there and is tried again with the next batch.

A crash between 2 and 3 replays ``b``, which lands in case 1 and writes the outbox; a failed
write that does not stop the stream (the runtime logs a failing hook) is written with ``b + 1``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson
import pandas as pd

from learnscore.core.alerts import alert
from learnscore.core.config import Config
from learnscore.schemas import topics
from learnscore.streaming.drift.features import pandas_safe_times
from learnscore.streaming.drift.monitor import DriftMonitor, DriftSettings, Finding
from learnscore.streaming.drift.records import drift_alert, drift_event_row, retrain_request_event
from learnscore.streaming.drift.state import DriftState, DriftStateStore, write_oldest_first
from learnscore.streaming.model_cache import RETRY_FAILED_LOAD_S

log = logging.getLogger(__name__)

STATE_FILE = "drift/state.json"
PREDICTION_COLUMNS = ("event_id", "event_time", "subject", "grade_level", "model_version",
                      "accuracy", "ability", "mean_log_time", "progress_score")
OPTIONAL_PREDICTION_COLUMNS = ("rapid_guess_share",)  # null when the scoring version judged no effort
OUTCOME_COLUMNS = ("event_id", "event_time", "subject", "grade_level", "model_version",
                   "abs_error", "level_correct")


def drift_state_path(checkpoint_dir: str) -> str:
    """Where the drift state of the stream checkpointed at ``checkpoint_dir`` lives."""
    return f"{checkpoint_dir.rstrip('/')}/{STATE_FILE}"


class DriftHook:
    """Callable ``hook(batch_id, predictions, outcomes, spark=None, now=None) -> findings``.

    ``predictions`` / ``outcomes`` are pandas or Spark DataFrames (see
    :meth:`DriftMonitor.observe` for their columns); None or empty is fine.
    ``write_events(rows, app_id, batch_id)`` and ``send_requests(events)`` are the two outputs;
    :func:`make_drift_hook` wires them to Delta and Kafka.
    """

    __name__ = "drift"  # how the stream's per-hook timings name it

    def __init__(self, settings: DriftSettings, state_path: str,
                 write_events: Callable[[list[dict[str, Any]], str, int], None],
                 send_requests: Callable[[list[dict[str, Any]]], None],
                 item_bank: Callable[[str], Any] | None = None,
                 submissions: Callable[[], Any] | None = None,
                 training_cutoff: Callable[[str], datetime | None] | None = None):
        self.settings = settings
        self.training_cutoff = training_cutoff
        self._cutoffs: dict[str, datetime | None] = {}
        self._cutoff_failed_at: dict[str, float] = {}  # version → monotonic time of the failed lookup
        self._clock = time.monotonic
        self.item_bank = item_bank
        self.submissions = submissions
        self.store = DriftStateStore(state_path)
        self.write_events = write_events
        self.send_requests = send_requests
        self._monitor: DriftMonitor | None = None
        self._last_batch_id: int | None = None
        self._unsent: list[dict[str, Any]] = []  # outboxes not known to be written, oldest first

    def _load(self) -> None:
        if self._monitor is None:
            state = self.store.load()
            self._monitor = (DriftMonitor.from_state(state.monitor, self.settings)
                             if state.monitor else DriftMonitor(self.settings))
            self._last_batch_id = state.last_batch_id
            # After a restart the saved outboxes may or may not have been written: written again.
            # A state file of an older release holds the last batch's outbox alone.
            outbox = state.outbox
            self._unsent = list(outbox["unsent"]) if "unsent" in outbox else [outbox] if outbox else []

    @property
    def monitor(self) -> DriftMonitor:
        """The monitor as of the last applied batch (loaded from the state file once)."""
        self._load()
        return self._monitor

    @property
    def last_batch_id(self) -> int:
        """The last micro-batch the detectors were fed (−1 before the first)."""
        self._load()
        return self._last_batch_id

    def __call__(self, batch_id: int, predictions=None, outcomes=None, *,
                 now: datetime | None = None) -> list[dict[str, Any]]:
        """Apply one micro-batch; return the ``ops.drift_events`` rows it produced."""
        try:
            monitor = self.monitor
            if batch_id <= self._last_batch_id:
                return self._replay(batch_id)
            findings = monitor.observe(batch_id, self._predictions(predictions),
                                       self._out_of_sample(_pandas(outcomes, OUTCOME_COLUMNS)),
                                       now or datetime.now(timezone.utc))
            outbox = _outbox(batch_id, monitor.stream_id, findings)
            if findings:
                self._unsent.append(outbox)
            self.store.save(DriftState(monitor=monitor.to_state(), last_batch_id=batch_id,
                                       outbox={"unsent": self._unsent}))
            self._last_batch_id = batch_id
        except BaseException:
            self._monitor = None  # the file is the truth: reload it on the next call
            raise
        for finding in findings:
            _log_finding(finding)
        self._emit_unsent()
        return _rows(outbox)

    def _predictions(self, frame) -> pd.DataFrame | None:
        """Scored rows with the covariate features (computed from the model input if need be)."""
        if frame is None:
            return None
        if all(column in frame.columns for column in PREDICTION_COLUMNS):
            return _pandas(frame, PREDICTION_COLUMNS + OPTIONAL_PREDICTION_COLUMNS)
        from learnscore.streaming.drift.features import with_drift_features

        if self.item_bank is None:
            raise ValueError("scored rows lack the drift features and no item bank loader was "
                             "given to compute them; build the hook with make_drift_hook")
        return with_drift_features(frame, self.item_bank, self.submissions)

    def _out_of_sample(self, pairs: pd.DataFrame | None) -> pd.DataFrame | None:
        """The pairs whose submission came after the training data of the version that scored it.

        A model's errors on its own training rows (a history scored in catch-up) are in-sample,
        far smaller than on new learners: fed first, they would make every later error look
        like concept drift. A version's cutoff is immutable, so a replay drops the same rows.
        """
        if pairs is None or pairs.empty or self.training_cutoff is None:
            return pairs
        cutoffs = pd.Series({version: self._cutoff(version)
                             for version in pairs["model_version"].dropna().unique()}, dtype=object)
        limit = pd.to_datetime(pairs["model_version"].map(cutoffs), utc=True)
        times = pd.to_datetime(pairs["event_time"], utc=True)
        keep = limit.isna() | (times > limit)
        if not keep.all():
            log.info("drift: %d outcome pairs of submissions the scoring model was trained on are "
                     "not fed to the concept detectors", int((~keep).sum()))
        return pairs[keep.to_numpy()]

    def _cutoff(self, version: str) -> datetime | None:
        if version not in self._cutoffs:
            # A registry that does not answer is asked again only after a while: each lookup
            # waits for MLflow's timeout, and it would be paid by every batch with pairs.
            failed_at = self._cutoff_failed_at.get(version)
            if failed_at is not None and self._clock() - failed_at < RETRY_FAILED_LOAD_S:
                return None
            try:
                self._cutoffs[version] = self.training_cutoff(str(version))
            except Exception as exc:  # noqa: BLE001 - the registry being down must not stop drift
                self._cutoff_failed_at[version] = self._clock()
                log.warning("drift: training cutoff of model version %s unknown (%s: %s); its "
                            "outcome pairs are all fed for the next %.0f s", version,
                            type(exc).__name__, str(exc)[:200], RETRY_FAILED_LOAD_S)
                return None
            self._cutoff_failed_at.pop(version, None)
        return self._cutoffs[version]

    def _replay(self, batch_id: int) -> list[dict[str, Any]]:
        """The rows of the saved outboxes written by this call (the detectors are not fed)."""
        log.info("drift: batch %d replayed (last applied %d): detectors not fed again; %d saved "
                 "outboxes to write", batch_id, self._last_batch_id, len(self._unsent))
        rows = [row for outbox in self._unsent for row in _rows(outbox)]
        self._emit_unsent()
        return rows

    def _emit_unsent(self) -> None:
        write_oldest_first(self._unsent, self._write, self._written)

    def _write(self, outbox: dict[str, Any]) -> None:
        rows = _rows(outbox)
        if rows:
            self.write_events(rows, outbox["app_id"], outbox["batch_id"])
        if outbox.get("requests"):
            self.send_requests(outbox["requests"])

    def _written(self, outboxes: list[dict[str, Any]]) -> None:
        """Forget written outboxes at once (the next batch may be long coming), then announce them."""
        self.store.save(DriftState(monitor=self.monitor.to_state(), last_batch_id=self._last_batch_id,
                                   outbox={"unsent": self._unsent}))
        alert_drift_events([row for outbox in outboxes for row in _rows(outbox)])


_WRITTEN: Counter[str] = Counter()  # ops.drift_events rows written by this process, by kind (/metrics)
_WRITTEN_LOCK = threading.Lock()  # the gold, pairs and landing queries write from their own threads


def drift_events_written() -> dict[str, int]:
    """How many drift events this process wrote, by kind (``model``, ``concept``, ``item``, …)."""
    with _WRITTEN_LOCK:
        return dict(_WRITTEN)


def alert_drift_events(rows: list[dict[str, Any]]) -> None:
    """A ``drift_detected`` alert for each ``ops.drift_events`` row, called once an outbox is
    written and forgotten by the saved state: a replay or a restart rewrites only outboxes not yet
    written, so it does not alert again, and the dispatcher's dedupe on ``kind/signal/segment``
    makes a change found again one incident. (A stream killed between a write and that save
    writes the outbox, and alerts, again on restart.) Never raises."""
    with _WRITTEN_LOCK:
        _WRITTEN.update(str(row.get("kind") or "unknown") for row in rows)
    for row in rows:
        try:
            text, key, fields = drift_alert(row)
            alert("drift_detected", text, key=key, **fields)
        except Exception as exc:  # noqa: BLE001 - an alert must not stop the drift hook
            log.error("drift alert for %s could not be raised: %s", row.get("drift_event_id"), exc)


def make_drift_hook(config: Config, checkpoint_dir: str, *, spark=None, producer=None) -> DriftHook:
    """The drift hook of the stream checkpointed at ``checkpoint_dir``, writing to Delta/Kafka.

    The state file lives inside the checkpoint folder, so a new checkpoint (new batch ids)
    starts new detectors too. ``spark`` defaults to the active session when there is something
    to write; the Kafka producer is created on the first request.
    """
    settings = DriftSettings.from_config(config.drift)
    producers: list[Any] = [producer] if producer is not None else []

    def write_events(rows: list[dict[str, Any]], app_id: str, batch_id: int) -> None:
        write_drift_events(spark or _active_spark(), config, rows, app_id, batch_id)

    def send_requests(events: list[dict[str, Any]]) -> None:
        if not producers:
            from learnscore.core.kafka_io import producer as make_producer

            producers.append(make_producer(config))
        send_retrain_requests(producers[0], config, events)

    from learnscore.registry.artifacts import item_bank_loader

    def submissions():
        return ((spark or _active_spark()).read.format("delta")
                .load(config.table_path("silver.submissions")))

    def training_cutoff(version: str) -> datetime | None:
        from learnscore.registry.access import training_cutoff as cutoff

        return cutoff(config, version)

    return DriftHook(settings, drift_state_path(checkpoint_dir), write_events, send_requests,
                     item_bank_loader(config), submissions, training_cutoff)


def drift_hooks(config: Config, gold_checkpoint: str, pairs_checkpoint: str, *, spark=None,
                land_checkpoint: str | None = None, production_bank=None):
    """The scorer's drift detectors: on gold rows (covariate, prediction and effort signals, state
    in the gold query's checkpoint) and on pairs (concept signals, state in the pairs query's): two
    monitors, each applied once per micro-batch of its own query; with ``land_checkpoint`` and
    ``psychometrics.enabled``, the item watch on new submissions too (``drift/items.py``, also when
    ``drift.enabled`` is false)."""
    from learnscore.streaming.runtime import ScorerHooks

    on_submissions = ()
    if config.psychometrics.enabled and land_checkpoint:
        from learnscore.streaming.drift.items import make_item_hook

        on_submissions = (make_item_hook(config, land_checkpoint, spark=spark, production_bank=production_bank),)
    if not config.drift.enabled:
        return ScorerHooks(submissions=on_submissions)
    on_predictions = make_drift_hook(config, gold_checkpoint, spark=spark)
    on_pairs = make_drift_hook(config, pairs_checkpoint, spark=spark)

    def drift_predictions(batch_id: int, rows) -> None:
        on_predictions(batch_id, rows, None)

    def drift_pairs(batch_id: int, rows) -> None:
        on_pairs(batch_id, None, rows)

    return ScorerHooks(predictions=(drift_predictions,), pairs=(drift_pairs,), submissions=on_submissions)


def write_drift_events(spark, config: Config, rows: list[dict[str, Any]], app_id: str,
                       batch_id: int) -> None:
    """Append rows to ``ops.drift_events`` once per (app id, batch id) — Delta skips a repeat."""
    from pyspark.sql.types import StructType

    from learnscore.core.lake import ensure_spark_tables
    from learnscore.schemas.tables import DRIFT_EVENTS

    ensure_spark_tables(spark, config, [DRIFT_EVENTS.name])
    frame = spark.createDataFrame([tuple(row.get(c) for c in DRIFT_EVENTS.column_names) for row in rows],
                                  StructType.fromDDL(DRIFT_EVENTS.ddl))
    (frame.write.format("delta").mode("append")
     .option("txnAppId", app_id).option("txnVersion", batch_id)
     .save(config.table_path(DRIFT_EVENTS.name)))


def send_retrain_requests(producer, config: Config, events: list[dict[str, Any]],
                          timeout_s: float | None = None) -> None:
    """Send each request (key = segment) and wait until the broker has them all."""
    topic = config.topic(topics.RETRAIN_REQUESTS)
    futures = [producer.send(topic, key=(event.get("segment") or "").encode("utf-8"),
                             value=orjson.dumps(event)) for event in events]
    producer.flush(timeout=timeout_s or config.kafka.request_timeout_s)
    for future in futures:
        future.get(timeout=timeout_s or config.kafka.request_timeout_s)


def _outbox(batch_id: int, stream_id: str, findings: list[Finding]) -> dict[str, Any]:
    rows = [drift_event_row(finding) for finding in findings]
    for row in rows:
        row["detected_at"] = row["detected_at"].isoformat()
    return {
        "batch_id": batch_id,
        "app_id": f"learnscore-drift-events-{stream_id}",
        "drift_events": rows,
        "requests": [retrain_request_event(f) for f in findings if f.request_id],
    }


def _rows(outbox: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**row, "detected_at": datetime.fromisoformat(row["detected_at"])}
            for row in outbox.get("drift_events", [])]


def _log_finding(finding: Finding) -> None:
    detection = finding.detection
    log.warning(
        "drift: %s/%s in %s, %+.2f sigma (mean %.4g -> %.4g, n %d/%d, model %s)%s",
        finding.kind, finding.signal, finding.segment, detection.effect, detection.mean_before,
        detection.mean_after, detection.n_before, detection.n_after, finding.model_version,
        f" -> RetrainRequested {finding.request_id}" if finding.request_id
        else " (segment in cooldown: no new request)")


def _pandas(frame, columns: tuple[str, ...]) -> pd.DataFrame | None:
    """A pandas frame with the columns the monitor reads (a Spark frame is collected)."""
    if frame is None:
        return None
    if not isinstance(frame, pd.DataFrame):  # a Spark DataFrame: collect what we need
        present = [c for c in columns if c in frame.columns]
        frame = pandas_safe_times(frame.select(*present)).toPandas()
    return frame


def _active_spark():
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is None:
        raise RuntimeError("the drift hook writes ops.drift_events with Spark but no session is "
                           "active; pass spark= to make_drift_hook")
    return session
