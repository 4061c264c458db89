"""Rows for ``silver.quarantine``: refused events with their raw bytes, coordinates and reason.

The contract's own reason codes (``not_json``, ``missing_field``, ``out_of_range``, ...) come
from ``learnscore.schemas.events.validate_bytes``; the stream adds the codes below for events that are
valid on their own but cannot land.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

DUPLICATE_EVENT_ID = "duplicate_event_id"
UNKNOWN_SUBMISSION = "unknown_submission"
DUPLICATE_OUTCOME = "duplicate_outcome"
INVALID_REQUEST_LOG = "invalid_request_log"
POISON_BATCH = "poison_batch"
INVALID_SCORE = "invalid_score"

REASONS = {
    DUPLICATE_EVENT_ID: "event_id {id} was already delivered at another Kafka offset; "
                        "this copy is not processed",
    UNKNOWN_SUBMISSION: "submission_event_id {id} is not a known submission "
                        "(never received, or refused)",
    DUPLICATE_OUTCOME: "an outcome for submission {id} was already received; only the first counts",
    POISON_BATCH: "the micro-batch holding this message (topic {id}) failed repeatedly, so its messages "
                  "were set aside undecoded; send them again once the cause is fixed",
    INVALID_SCORE: "a message on the scores topic that is not a ScoreIssued learnscore can read ({id})",
}


def reason_for(code: str, id_column: str) -> Column:
    """The human message for one of the stream's own reason codes, naming the event."""
    head, _, tail = REASONS[code].partition("{id}")
    return F.concat(F.lit(head), F.coalesce(F.col(id_column), F.lit("?")), F.lit(tail))


def quarantine_rows(rows: DataFrame, batch_id: int, reason_code: Column, reason: Column,
                    event_id: Column | None = None) -> DataFrame:
    """Quarantine rows from Kafka-shaped ``rows`` (raw bytes and coordinates kept as they came).

    ``event_id`` defaults to the ``event_id`` found in the raw JSON, when there is one.
    """
    if event_id is None:
        event_id = F.get_json_object(F.col("raw_value").cast("string"), "$.event_id")
    return rows.select(
        F.col("kafka_topic").alias("source_topic"), "kafka_partition", "kafka_offset",
        "kafka_timestamp", "raw_key", "raw_value", event_id.cast("string").alias("event_id"),
        reason_code.alias("reason_code"), reason.alias("reason"),
        F.current_timestamp().alias("quarantined_at"), F.lit(batch_id).cast("bigint").alias("batch_id"),
    )
