"""The model lifecycle record: every registration and alias move, in three places.

Each move is (1) a row of ``ops.model_events`` (the history ``rollback`` replays), (2) a
``ModelRegistered`` / ``ModelPromoted`` / ``ModelRolledBack`` event on ``model.lifecycle``,
validated against its contract before it is sent, and (3) tags on the model version: who,
when, why, the version before and the metrics before and after.

Use :class:`LifecycleRecorder` as a context manager *before* moving an alias: it connects to
Kafka first, so an unreachable broker stops the move instead of leaving it half recorded.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timezone
from typing import Any

import orjson

from learnscore.core.config import Config
from learnscore.core.lake import append_rows, read_table
from learnscore.registry.access import registry_client
from learnscore.schemas import topics
from learnscore.schemas.events import MODEL_PROMOTED, MODEL_REGISTERED, MODEL_ROLLED_BACK, validate_event
from learnscore.schemas.tables import MODEL_EVENTS

log = logging.getLogger(__name__)

REGISTERED, PROMOTED, ROLLED_BACK = MODEL_REGISTERED.name, MODEL_PROMOTED.name, MODEL_ROLLED_BACK.name
_RECORDS = {record.name: record for record in (MODEL_REGISTERED, MODEL_PROMOTED, MODEL_ROLLED_BACK)}
_TAG_PREFIX = {REGISTERED: "registered", PROMOTED: "promoted", ROLLED_BACK: "rolled_back"}


class LifecycleHistoryError(RuntimeError):
    """The recorded history cannot answer the question (e.g. nothing to roll back to)."""


def lifecycle_event(config: Config, event_type: str, *, version: str, alias: str | None,
                    previous_version: str | None, actor: str, reason: str,
                    metrics: dict[str, float] | None = None, now: datetime | None = None) -> dict:
    """Build one lifecycle event and validate it against its contract (ValueError if invalid)."""
    now = now or datetime.now(timezone.utc)
    event = {
        "event_id": str(uuid.uuid4()),
        "schema_version": 1,
        "event_time": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "model_name": config.mlflow.model_name,
        "version": str(version),
        "alias": alias,
        "previous_version": None if previous_version is None else str(previous_version),
        "actor": actor,
        "reason": reason,
        "metrics": {k: float(v) for k, v in (metrics or {}).items() if v is not None},
    }
    event = {key: value for key, value in event.items() if value is not None}
    verdict = validate_event(_RECORDS[event_type], event, now)
    if not verdict.ok:
        raise ValueError(f"{event_type} event would break its contract: {verdict.reason}")
    return event


class LifecycleRecorder:
    """Records lifecycle events; open it (``with``) before changing the registry."""

    def __init__(self, config: Config):
        self._config = config
        self._producer = None

    def __enter__(self) -> LifecycleRecorder:
        from learnscore.core.kafka_io import create_topics, producer

        create_topics(self._config, [topics.LIFECYCLE])  # raises BrokerUnreachable before any change
        self._producer = producer(self._config)
        return self

    def __exit__(self, *exc) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)

    def record(self, event_type: str, *, version: str, alias: str | None,
               previous_version: str | None, actor: str, reason: str,
               metrics: dict[str, float] | None = None) -> dict:
        """Write the event to ops.model_events, Kafka and the version's tags; return it."""
        event = lifecycle_event(self._config, event_type, version=version, alias=alias,
                                previous_version=previous_version, actor=actor, reason=reason,
                                metrics=metrics)
        append_rows(self._config, MODEL_EVENTS.name, [_table_row(event_type, event)])
        topic = self._config.topic(topics.LIFECYCLE)
        self._producer.send(topic, key=event["model_name"].encode(), value=orjson.dumps(event))
        self._producer.flush(timeout=self._config.kafka.request_timeout_s)
        _tag_version(self._config, event_type, event)
        log.info("%s: %s v%s%s (%s)", event_type, event["model_name"], event["version"],
                 f" as {alias}" if alias else "", reason)
        return event


def model_events(config: Config):
    """This model's lifecycle events from ``ops.model_events``, oldest first (pandas)."""
    frame = read_table(config, MODEL_EVENTS.name)
    frame = frame[frame["model_name"] == config.mlflow.model_name]
    return frame.sort_values("occurred_at", kind="stable").reset_index(drop=True)


def production_lineage(config: Config) -> list[str]:
    """The versions ``production`` has stood on, replayed from the history: each promotion
    pushes a version, each rollback pops one; the last entry is the current one."""
    lineage: list[str] = []
    events = model_events(config)
    for row in events[events["alias"] == "production"].itertuples():
        if row.event_type == PROMOTED:
            lineage.append(row.version)
        elif row.event_type == ROLLED_BACK:
            if lineage:
                lineage.pop()
            if not lineage or lineage[-1] != row.version:
                lineage.append(row.version)  # a rollback to a version the replay did not expect
    return lineage


def _table_row(event_type: str, event: dict) -> dict[str, Any]:
    return {
        "event_id": event["event_id"],
        "occurred_at": datetime.fromisoformat(event["event_time"].replace("Z", "+00:00")),
        "event_type": event_type,
        "model_name": event["model_name"],
        "version": event["version"],
        "alias": event.get("alias"),
        "previous_version": event.get("previous_version"),
        "actor": event["actor"],
        "reason": event["reason"],
        "metrics_json": json.dumps(event.get("metrics", {}), sort_keys=True),
    }


def _tag_version(config: Config, event_type: str, event: dict) -> None:

    prefix = f"lifecycle.{_TAG_PREFIX[event_type]}"
    metrics = event.get("metrics", {})
    tags = {
        f"{prefix}.by": event["actor"],
        f"{prefix}.at": event["event_time"],
        f"{prefix}.reason": event["reason"][:5000],
        f"{prefix}.alias": event.get("alias") or "",
        f"{prefix}.previous_version": event.get("previous_version") or "",
        f"{prefix}.metrics_before": json.dumps({k[len("before_"):]: v for k, v in metrics.items()
                                                if k.startswith("before_")}, sort_keys=True),
        f"{prefix}.metrics_after": json.dumps({k[len("after_"):]: v for k, v in metrics.items()
                                               if k.startswith("after_")}, sort_keys=True),
    }
    client = registry_client(config)
    for key, value in tags.items():
        client.set_model_version_tag(config.mlflow.model_name, event["version"], key, value)
