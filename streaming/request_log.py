"""The REST endpoint's request log: ``serving.requests`` messages → ``ops.endpoint_requests`` rows.

The serving process publishes one JSON object per request (key: the request id)::

    {"request_id": "0b6f…",                    # required, non-empty string, unique per request
     "received_at": "2026-01-31T09:30:00.123Z", # RFC 3339
     "status_code": 200, "latency_ms": 12.5,
     "model_name": "learnscore-diagnostic", "model_version": "3",
     "route": "production", "items": 1,        # the alias that scored (staging: the canary
                                                # share); items: submissions in the request
     "error_code": null, "error": null}         # set when status_code >= 400

Read leniently: it is an operational log, not a contract event. Every field but
``request_id`` may be missing or null; a value of the wrong type becomes null. A message that
is not a JSON object or has no ``request_id`` is quarantined (``invalid_request_log``).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from learnscore.streaming.quarantine import INVALID_REQUEST_LOG

REQUEST_LOG_DDL = ("request_id string, received_at timestamp, status_code int, latency_ms double, "
                   "model_name string, model_version string, route string, items int, "
                   "error_code string, error string")
REQUEST_FIELDS = [part.strip().split(" ")[0] for part in REQUEST_LOG_DDL.split(",")]


def parse_request_log(rows: DataFrame, topic: str) -> DataFrame:
    """Add ``request`` (the parsed log record of rows from ``topic``) and refuse unusable ones.

    Rows of other topics pass through untouched; ``reason_code``/``reason`` are set on
    refused request-log rows (the columns are created when missing).
    """
    for name in ("reason_code", "reason"):
        if name not in rows.columns:
            rows = rows.withColumn(name, F.lit(None).cast("string"))
    mine = F.col("kafka_topic") == topic
    parsed = rows.withColumn("request", F.when(mine, F.from_json(
        F.col("raw_value").cast("string"), REQUEST_LOG_DDL, {"mode": "PERMISSIVE"})))
    request_id = F.col("request.request_id")
    refused = mine & F.coalesce(F.length(F.trim(request_id)) == 0, F.lit(True))
    return (parsed
            .withColumn("reason_code", F.when(refused, F.lit(INVALID_REQUEST_LOG))
                        .otherwise(F.col("reason_code")))
            .withColumn("reason", F.when(refused, F.lit(
                "not a JSON object with a non-empty request_id (expected fields: see "
                "streaming/request_log.py)")).otherwise(F.col("reason")))
            .withColumn("request", F.when(~refused, F.col("request"))))


def request_rows(parsed: DataFrame) -> DataFrame:
    """``ops.endpoint_requests``-shaped rows from usable parsed rows (raw bytes kept for quarantine)."""
    return parsed.select(*[F.col(f"request.{name}").alias(name) for name in REQUEST_FIELDS],
                         "raw_key", "raw_value", "kafka_topic", "kafka_partition", "kafka_offset",
                         "kafka_timestamp")
