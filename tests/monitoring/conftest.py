"""Deterministic rows for every table the dashboard reads, written by each table's own writer."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from learnscore.core.config import Config
from learnscore.core.lake import append_rows, ensure_spark_tables
from learnscore.schemas.events import LEVELS
from learnscore.schemas.tables import TABLES

START = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


def _spark_append(spark, config: Config, name: str, rows: list[dict]) -> None:
    from pyspark.sql.types import StructType

    ensure_spark_tables(spark, config, [name])
    table = TABLES[name]
    frame = spark.createDataFrame([tuple(row.get(c) for c in table.column_names) for row in rows],
                                  StructType.fromDDL(table.ddl))
    frame.write.format("delta").mode("append").save(config.table_path(name))


def seed_dashboard_tables(spark, config: Config, seed: int = 7) -> dict[str, int]:
    """Ten minutes of a small deployment: requests, micro-batches, predictions, outcomes (and a
    challenger's in shadow), drift, promotions and a rollback, performance estimates."""
    rnd = random.Random(seed)
    requests, progress, predictions, outcomes = [], [], [], []
    for i in range(300):
        at = START + timedelta(seconds=2 * i)
        version = "1" if i < 180 else "2"
        status = 200 if rnd.random() > 0.08 else rnd.choice([401, 422, 500])
        requests.append({"request_id": uuid.UUID(int=rnd.getrandbits(128)).hex, "received_at": at,
                         "status_code": status, "latency_ms": 3 + rnd.random() * 12,
                         "model_name": "learnscore-diagnostic",
                         "model_version": version if status in (200, 500) else None,
                         "route": "production" if status in (200, 500) else None, "items": 1,
                         "error_code": None if status == 200 else str(status),
                         "kafka_topic": "serving.requests", "kafka_partition": 0, "kafka_offset": i,
                         "kafka_timestamp": at})
    for batch in range(60):
        at = START + timedelta(seconds=10 * batch)
        read = 200 + rnd.randint(0, 100)
        for query in ("land", "score", "gold"):  # the queries whose rows the stream panel reads
            progress.append({"query": query, "query_id": f"q-{query}", "batch_id": batch, "started_at": at,
                             "duration_s": 0.5 + rnd.random(),
                             "rows_read": read, "submissions_valid": read - 4, "quarantined": 4, "duplicates": 1,
                             "scored": read - 4, "failed": 0, "pending_unscored": rnd.randint(0, 20),
                             "outcomes": 20, "endpoint_requests": 5, "latency_p50_s": 0.8,
                             "latency_p95_s": 1.5 + rnd.random(), "latency_p99_s": 2.5,
                             "model_version": "1" if batch < 36 else "2", "model_status": "ok", "message": None})
    for i in range(400):
        at = START + timedelta(seconds=1.5 * i)
        score = min(100.0, max(0.0, rnd.gauss(55, 18)))
        level = LEVELS[min(3, int(score // 25))]
        version = "1" if i < 240 else "2"
        event_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        predictions.append({"event_id": event_id, "learner_key": f"k{i % 150}", "assessment_id": "a",
                            "subject": ["math", "reading", "science"][i % 3], "grade_level": 3 + i % 5,
                            "event_time": at, "progress_score": score, "comprehension_level": level,
                            "p_beginner": 0.25, "p_developing": 0.25, "p_proficient": 0.25,
                            "p_advanced": 0.25, "model_name": "learnscore-diagnostic",
                            "model_version": version, "scored_at": at + timedelta(seconds=1),
                            "latency_s": 1.0, "batch_id": i // 10,
                            "rapid_guess_share": 0.5 if i % 17 == 0 else 0.0, "low_effort": i % 17 == 0,
                            "effort_moderated_score": score if i % 17 == 0 else None})
        if i % 2 == 0:
            observed = min(100.0, max(0.0, score + rnd.gauss(0, 8 if version == "1" else 5)))
            outcomes.append({"event_id": event_id, "learner_key": f"k{i % 150}", "subject": "math",
                             "grade_level": 3 + i % 5, "event_time": at, "model_version": version,
                             "progress_score": score, "comprehension_level": level,
                             "observed_progress_score": observed,
                             "observed_comprehension_level": LEVELS[min(3, int(observed // 25))],
                             "abs_error": abs(score - observed),
                             "level_correct": level == LEVELS[min(3, int(observed // 25))],
                             "outcome_time": at + timedelta(seconds=30), "joined_at": at + timedelta(seconds=31)})
    quarantine = [{"source_topic": "diagnostic.submissions", "kafka_partition": 0, "kafka_offset": i,
                   "kafka_timestamp": START + timedelta(seconds=i), "raw_key": None, "raw_value": b"{}",
                   "event_id": None, "reason_code": rnd.choice(["missing_field", "not_json", "duplicate"]),
                   "reason": "seeded", "quarantined_at": START + timedelta(seconds=i), "batch_id": i}
                  for i in range(40)]
    drift_events = [{"drift_event_id": str(i), "detected_at": START + timedelta(minutes=6, seconds=20 * i),
                     "batch_id": 36 + i, "kind": "covariate" if i else "concept", "detector": "ADWIN",
                     "signal": ["abs_error", "accuracy", "progress_score"][i], "segment": "math:3-5",
                     "statistic": 0.3, "mean_before": 0.62, "mean_after": 0.48, "n_before": 500,
                     "n_after": 120, "model_version": "1", "request_id": "r1" if i == 0 else None}
                    for i in range(3)]
    drift_metrics = [{"computed_at": START + timedelta(minutes=m), "window_start": START + timedelta(minutes=m - 1),
                      "window_end": START + timedelta(minutes=m), "segment": "all", "feature": feature,
                      "reference": "training", "psi": 0.02 * m * (k + 1), "ks": 0.1, "js": 0.05,
                      "n_reference": 1000, "n_window": 100}
                     for m in range(1, 11) for k, feature in enumerate(["accuracy", "ability", "median_log_time"])]
    model_events = [
        {"event_id": "m1", "occurred_at": START - timedelta(minutes=5), "event_type": "ModelRegistered",
         "model_name": "learnscore-diagnostic", "version": "1", "alias": "staging", "previous_version": None,
         "actor": "train", "reason": "initial model", "metrics_json": "{}"},
        {"event_id": "m2", "occurred_at": START - timedelta(minutes=4), "event_type": "ModelPromoted",
         "model_name": "learnscore-diagnostic", "version": "1", "alias": "production", "previous_version": None,
         "actor": "train", "reason": "gates passed", "metrics_json": "{}"},
        {"event_id": "m3", "occurred_at": START + timedelta(minutes=6), "event_type": "ModelRegistered",
         "model_name": "learnscore-diagnostic", "version": "2", "alias": "staging", "previous_version": None,
         "actor": "retrain-worker", "reason": "drift on abs_error", "metrics_json": "{}"},
        {"event_id": "m4", "occurred_at": START + timedelta(minutes=6, seconds=30), "event_type": "ModelPromoted",
         "model_name": "learnscore-diagnostic", "version": "2", "alias": "production", "previous_version": "1",
         "actor": "retrain-worker", "reason": "better on the recent window", "metrics_json": "{}"},
        {"event_id": "m5", "occurred_at": START + timedelta(minutes=9), "event_type": "ModelRolledBack",
         "model_name": "learnscore-diagnostic", "version": "1", "alias": "production", "previous_version": "2",
         "actor": "guard", "reason": "estimated MAE 9.10 vs 5.30", "metrics_json": "{}"},
    ]
    # Two 5-minute windows estimated by the worker: v1 in both (the first with its outcomes), v2 in
    # the second; a segment row the panel leaves out (it charts segment "all").
    estimates = [{"model_version": version, "segment": segment, "window_start": START + timedelta(minutes=start),
                  "window_end": START + timedelta(minutes=start + 5), "n_rows": n, "n_reference": 1000,
                  "estimated_accuracy": 0.8, "estimated_macro_f1": f1, "estimated_mae": mae, "n_labelled": labelled,
                  "realized_accuracy": None if real_f1 is None else 0.8, "realized_macro_f1": real_f1,
                  "realized_mae": real_mae, "computed_at": START + timedelta(minutes=11)}
                 for version, segment, start, n, f1, mae, labelled, real_f1, real_mae in (
                     ("1", "all", 0, 200, 0.70, 5.1, 200, 0.72, 5.4),
                     ("1", "all", 5, 200, 0.69, 5.3, 0, None, None),
                     ("1", "math:3-5", 0, 70, 0.10, 50.0, 0, None, None),
                     ("2", "all", 5, 160, 0.74, 4.2, 0, None, None))]
    # Staging v3 in shadow on the first twenty pairs, one point better on each.
    shadow = [{**outcome, "model_version": "3", "model_alias": "staging", "abs_error": outcome["abs_error"] + 1.0}
              for outcome in outcomes[:20]]
    for name, rows in (("ops.endpoint_requests", requests), ("ops.stream_progress", progress),
                       ("gold.predictions", predictions), ("gold.prediction_outcomes", outcomes),
                       ("silver.quarantine", quarantine), ("ops.drift_events", drift_events),
                       ("ops.drift_metrics", drift_metrics), ("gold.shadow_prediction_outcomes", shadow)):
        _spark_append(spark, config, name, rows)
    append_rows(config, "ops.model_events", model_events)
    append_rows(config, "ops.estimated_performance", estimates)
    append_rows(config, "ops.item_flags", [
        {"item_id": "math.fractions.v1.003", "flag": "item_compromised", "direction": "easier", "status": "flagged",
         "flagged_at": START + timedelta(minutes=7), "model_version": "2", "drift_event_id": "i1",
         "evidence": '{"effect": 0.31, "z": 9.2, "z_time": -11.0}', "reviewed_at": None, "reviewed_by": None}])
    return {"requests": len(requests), "predictions": len(predictions), "outcomes": len(outcomes)}


@pytest.fixture
def seeded_lake(spark, config) -> Config:
    seed_dashboard_tables(spark, config)
    return config
