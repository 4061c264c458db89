"""Delta table definitions, in one place (docs/architecture.md#tables-delta).

Each table is written by exactly one kind of writer: the Spark stream/batch jobs, or a
Spark-free process (registry CLI, retrain worker) through ``deltalake``. Column types are
Spark DDL names; :func:`arrow_schema` gives the same schema to ``deltalake``.
"""

from __future__ import annotations

from dataclasses import dataclass

RESPONSES_DDL = ("array<struct<item_id:string,skill:string,correct:boolean,"
                 "response_time_ms:bigint,attempts:bigint,hint_used:boolean>>")
_KAFKA = (("kafka_topic", "string"), ("kafka_partition", "int"), ("kafka_offset", "bigint"),
          ("kafka_timestamp", "timestamp"))
#: Where an imported row came from: JSON ``{"import_id", "file", "rows"}`` (``learnscore import``);
#: null for rows the stream landed.
_LINEAGE = (("import_lineage", "string"),)


@dataclass(frozen=True)
class Table:
    name: str  # layer.table
    columns: tuple[tuple[str, str], ...]
    doc: str
    writer: str = "spark"  # "spark" or "deltalake"
    bi_facing: bool = False  # learner ids must be pseudonymised
    partition_by: tuple[str, ...] = ()
    #: Nullable columns after ``columns`` that only some writers fill (the importer's lineage).
    #: A writer that leaves them out appends null: Delta fills a missing nullable column on
    #: append, so the stream's writes (``columns`` exactly) need not know them.
    optional_columns: tuple[tuple[str, str], ...] = ()

    @property
    def layer(self) -> str:
        return self.name.split(".")[0]

    @property
    def ddl(self) -> str:
        return ", ".join(f"`{name}` {kind}" for name, kind in self.columns)

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def stored_columns(self) -> tuple[tuple[str, str], ...]:
        """Every column the table holds: ``columns``, then ``optional_columns``."""
        return (*self.columns, *self.optional_columns)

    @property
    def stored_ddl(self) -> str:
        return ", ".join(f"`{name}` {kind}" for name, kind in self.stored_columns)


def _raw(name: str, topic: str) -> Table:
    return Table(name, (("raw_key", "binary"), ("raw_value", "binary"), *_KAFKA,
                        ("ingested_at", "timestamp"), ("batch_id", "bigint")),
                 f"Every message of {topic} as it arrived, bytes untouched.")


SUBMISSIONS_RAW = _raw("bronze.submissions_raw", "diagnostic.submissions")
OUTCOMES_RAW = _raw("bronze.outcomes_raw", "diagnostic.outcomes")

SUBMISSIONS = Table("silver.submissions", (
    ("event_id", "string"), ("schema_version", "bigint"), ("event_time", "timestamp"),
    ("learner_id", "string"), ("assessment_id", "string"), ("subject", "string"),
    ("grade_level", "bigint"), ("responses", RESPONSES_DDL), *_KAFKA,
    ("ingested_at", "timestamp"),
), "Valid submissions, one row per event_id (the first delivery wins); rapid_guess_share/low_effort: "
   "judged by the item bank of effort_model_version, production when the row landed (null: none was).",
    optional_columns=(*_LINEAGE, ("rapid_guess_share", "double"), ("low_effort", "boolean"),
                      ("effort_model_version", "string")))

QUARANTINE = Table("silver.quarantine", (
    ("source_topic", "string"), ("kafka_partition", "int"), ("kafka_offset", "bigint"),
    ("kafka_timestamp", "timestamp"), ("raw_key", "binary"), ("raw_value", "binary"),
    ("event_id", "string"), ("reason_code", "string"), ("reason", "string"),
    ("quarantined_at", "timestamp"), ("batch_id", "bigint"),
), "Events refused by the contract or as duplicates, with the raw bytes and the reason.",
    optional_columns=_LINEAGE)

OUTCOMES = Table("silver.outcomes", (
    ("event_id", "string"), ("schema_version", "bigint"), ("event_time", "timestamp"),
    ("submission_event_id", "string"), ("learner_id", "string"),
    ("observed_progress_score", "double"), ("observed_comprehension_level", "string"),
    *_KAFKA, ("ingested_at", "timestamp"),
), "Valid observed outcomes, one row per submission_event_id.", optional_columns=_LINEAGE)

PREDICTIONS = Table("gold.predictions", (
    ("event_id", "string"), ("learner_key", "string"), ("assessment_id", "string"),
    ("subject", "string"), ("grade_level", "bigint"), ("event_time", "timestamp"),
    ("progress_score", "double"), ("comprehension_level", "string"),
    ("p_beginner", "double"), ("p_developing", "double"), ("p_proficient", "double"),
    ("p_advanced", "double"), ("model_name", "string"), ("model_version", "string"),
    ("scored_at", "timestamp"), ("latency_s", "double"), ("batch_id", "bigint"),
    ("score_event_id", "string"), ("published_at", "timestamp"), ("landed_at", "timestamp"),
    ("rapid_guess_share", "double"), ("low_effort", "boolean"), ("effort_moderated_score", "double"),
), "One row per scored submission: the first ScoreIssued published for it, with the version that "
   "scored it; rapid_guess_share/low_effort/effort_moderated_score: the effort of the submission "
   "(null when that version's item bank has no response times).", bi_facing=True)

PREDICTION_OUTCOMES = Table("gold.prediction_outcomes", (
    ("event_id", "string"), ("learner_key", "string"), ("subject", "string"),
    ("grade_level", "bigint"), ("event_time", "timestamp"), ("model_version", "string"),
    ("progress_score", "double"), ("comprehension_level", "string"),
    ("observed_progress_score", "double"), ("observed_comprehension_level", "string"),
    ("abs_error", "double"), ("level_correct", "boolean"), ("outcome_time", "timestamp"),
    ("joined_at", "timestamp"),
), "A prediction next to its observed outcome: live model quality.", bi_facing=True)

SHADOW_PREDICTIONS = Table("gold.shadow_predictions", (
    *PREDICTIONS.columns, ("model_alias", "string"),
), "Challenger scores (streaming.shadow_aliases) of the same live submissions as gold.predictions: "
   "one row per submission and alias. No application ever saw them.", bi_facing=True)

SHADOW_PREDICTION_OUTCOMES = Table("gold.shadow_prediction_outcomes", (
    *PREDICTION_OUTCOMES.columns, ("model_alias", "string"),
), "A challenger's score next to the observed outcome; the same learners as gold.prediction_outcomes, "
   "so production and challenger compare on equal ground.", bi_facing=True)

DAILY_SUMMARY = Table("gold.daily_summary", (
    ("day", "date"), ("subject", "string"), ("grade_level", "bigint"),
    ("submissions", "bigint"), ("learners", "bigint"), ("mean_predicted_score", "double"),
    ("share_beginner", "double"), ("share_developing", "double"),
    ("share_proficient", "double"), ("share_advanced", "double"),
    ("outcomes", "bigint"), ("mean_abs_error", "double"), ("updated_at", "timestamp"),
), "BI aggregate by day, subject and grade; cells with too few learners are left out.",
    bi_facing=True)

STREAM_PROGRESS = Table("ops.stream_progress", (
    ("query", "string"), ("query_id", "string"),
    ("batch_id", "bigint"), ("started_at", "timestamp"), ("duration_s", "double"),
    ("rows_read", "bigint"), ("submissions_valid", "bigint"), ("quarantined", "bigint"),
    ("duplicates", "bigint"), ("scored", "bigint"), ("failed", "bigint"),
    ("pending_unscored", "bigint"), ("outcomes", "bigint"), ("endpoint_requests", "bigint"),
    ("latency_p50_s", "double"), ("latency_p95_s", "double"), ("latency_p99_s", "double"),
    ("model_version", "string"), ("model_status", "string"), ("message", "string"),
), "One row per micro-batch of each query of the streaming scorer (score, land, gold, pairs).")

DRIFT_EVENTS = Table("ops.drift_events", (
    ("drift_event_id", "string"), ("detected_at", "timestamp"), ("batch_id", "bigint"),
    ("kind", "string"), ("detector", "string"), ("signal", "string"), ("segment", "string"),
    ("statistic", "double"), ("mean_before", "double"), ("mean_after", "double"),
    ("n_before", "bigint"), ("n_after", "bigint"), ("model_version", "string"),
    ("request_id", "string"), ("item_id", "string"), ("direction", "string"), ("evidence", "string"),
), "Each detection with its evidence: a River detector's on a signal and segment (request_id when it "
   "asked to retrain), or an item's (kind 'item': item_id, direction, evidence as JSON).")

ITEM_FLAGS = Table("ops.item_flags", (
    ("item_id", "string"), ("flag", "string"), ("direction", "string"), ("status", "string"),
    ("flagged_at", "timestamp"), ("model_version", "string"), ("drift_event_id", "string"),
    ("evidence", "string"), ("reviewed_at", "timestamp"), ("reviewed_by", "string"),
), "One row per flagged item: item_drift or item_compromised, its evidence, and whether it is still "
   "'flagged' or was 'cleared' by a reviewer (learnscore items).", writer="deltalake")

DRIFT_METRICS = Table("ops.drift_metrics", (
    ("computed_at", "timestamp"), ("window_start", "timestamp"), ("window_end", "timestamp"),
    ("segment", "string"), ("feature", "string"), ("reference", "string"),
    ("psi", "double"), ("ks", "double"), ("js", "double"),
    ("n_reference", "bigint"), ("n_window", "bigint"),
), "Windowed drift metrics per feature and segment (learnscore monitor drift).")

RETRAIN_RUNS = Table("ops.retrain_runs", (
    ("run_id", "string"), ("trigger", "string"), ("request_ids", "string"),
    ("status", "string"), ("started_at", "timestamp"), ("finished_at", "timestamp"),
    ("mlflow_run_id", "string"), ("model_version", "string"), ("promoted", "boolean"),
    ("gate_report", "string"), ("window_start", "timestamp"), ("window_end", "timestamp"),
    ("data_versions", "string"), ("message", "string"),
), "Every retrain run: what asked for it, what it trained on, what it registered.",
    writer="deltalake")

RETRAIN_LEASE = Table("ops.retrain_lease", (
    ("holder", "string"), ("host", "string"), ("pid", "bigint"), ("acquired_at", "timestamp"),
    ("renewed_at", "timestamp"), ("expires_at", "timestamp"), ("released", "boolean"), ("token", "bigint"),
), "Which retrain worker may train now: one row, replaced by each claim, renewal and release "
   "(compare-and-swap on the table version); token: the fencing token, one more per claim.",
   writer="deltalake")

MODEL_EVENTS = Table("ops.model_events", (
    ("event_id", "string"), ("occurred_at", "timestamp"), ("event_type", "string"),
    ("model_name", "string"), ("version", "string"), ("alias", "string"),
    ("previous_version", "string"), ("actor", "string"), ("reason", "string"),
    ("metrics_json", "string"),
), "Every registration and alias move (who, when, why, metrics).", writer="deltalake")

ENDPOINT_REQUESTS = Table("ops.endpoint_requests", (
    ("request_id", "string"), ("received_at", "timestamp"), ("status_code", "int"),
    ("latency_ms", "double"), ("model_name", "string"), ("model_version", "string"),
    ("route", "string"), ("items", "int"), ("error_code", "string"), ("error", "string"),
    *_KAFKA,
), "The REST endpoint's inference log, landed from Kafka by the stream.")

ESTIMATED_PERFORMANCE = Table("ops.estimated_performance", (
    ("model_version", "string"), ("segment", "string"), ("window_start", "timestamp"),
    ("window_end", "timestamp"), ("n_rows", "bigint"), ("n_reference", "bigint"),
    ("estimated_accuracy", "double"), ("estimated_macro_f1", "double"), ("estimated_mae", "double"),
    ("n_labelled", "bigint"), ("realized_accuracy", "double"), ("realized_macro_f1", "double"),
    ("realized_mae", "double"), ("computed_at", "timestamp"),
), "Performance per model version, segment and window estimated from the predictions alone "
   "(CBPE, DLE), and realized once the window's outcomes arrived (learnscore monitor performance).",
    writer="deltalake")

TABLES: dict[str, Table] = {
    table.name: table
    for table in (SUBMISSIONS_RAW, OUTCOMES_RAW, SUBMISSIONS, QUARANTINE, OUTCOMES, PREDICTIONS,
                  PREDICTION_OUTCOMES, SHADOW_PREDICTIONS, SHADOW_PREDICTION_OUTCOMES, DAILY_SUMMARY,
                  STREAM_PROGRESS, DRIFT_EVENTS, ITEM_FLAGS, DRIFT_METRICS, RETRAIN_RUNS, RETRAIN_LEASE, MODEL_EVENTS,
                  ENDPOINT_REQUESTS, ESTIMATED_PERFORMANCE)
}


def arrow_schema(table: Table, *, stored: bool = False):
    """The same columns as a pyarrow schema, for ``deltalake`` writers and readers and for files
    Spark reads into the table; ``stored``: with the optional columns too."""
    import pyarrow as pa

    fields = []
    for name, kind in table.stored_columns if stored else table.columns:
        try:
            fields.append(pa.field(name, arrow_type(kind)))
        except ValueError:
            raise ValueError(f"{table.name}.{name}: type {kind} has no arrow mapping here") from None
    return pa.schema(fields)


def arrow_type(kind: str):
    """The Arrow type of a Spark DDL type: the simple ones and ``array<struct<name:type,...>>``.

    >>> str(arrow_type("array<struct<item_id:string,correct:boolean>>"))
    'list<item: struct<item_id: string, correct: bool>>'
    """
    import pyarrow as pa

    simple = {"string": pa.string(), "bigint": pa.int64(), "int": pa.int32(),
              "double": pa.float64(), "boolean": pa.bool_(), "binary": pa.binary(),
              "timestamp": pa.timestamp("us", tz="UTC"), "date": pa.date32()}
    if kind in simple:
        return simple[kind]
    if kind.startswith("array<struct<") and kind.endswith(">>"):
        members = [member.split(":", 1) for member in kind[len("array<struct<"):-2].split(",")]
        return pa.list_(pa.struct([pa.field(name, arrow_type(inner)) for name, inner in members]))
    raise ValueError(f"type {kind} has no arrow mapping here")
