"""The recent labelled window: the latest submissions whose outcomes have arrived.

Read without Spark (``deltalake``), so the registry CLI starts in a second. Candidate and
production are scored on exactly these rows.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from learnscore.core.config import Config
from learnscore.model.features import model_input_from_arrow
from learnscore.schemas.scoring import MODEL_INPUT_COLUMNS
from learnscore.schemas.tables import OUTCOMES, SUBMISSIONS

LABEL_COLUMNS = ("event_id", "event_time", "observed_progress_score", "observed_comprehension_level")


def recent_labelled_window(config: Config, rows: int, *, after: datetime | None = None
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(model_input, labels)`` for the ``rows`` most recently observed outcomes, ordered by
    submission time; both empty when the silver tables are missing or hold no labelled rows.

    ``after``: only submissions made later than this (a candidate's training cutoff, so that it
    is judged on rows it never saw)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    empty = (pd.DataFrame(columns=list(MODEL_INPUT_COLUMNS)), pd.DataFrame(columns=list(LABEL_COLUMNS)))
    try:
        outcomes = DeltaTable(config.table_path(OUTCOMES.name)).to_pyarrow_table(columns=[
            "submission_event_id", "event_time", "observed_progress_score",
            "observed_comprehension_level"])
        submissions = DeltaTable(config.table_path(SUBMISSIONS.name)).to_pyarrow_dataset()
    except TableNotFoundError:
        return empty
    if outcomes.num_rows == 0:
        return empty
    if after is not None:
        moment = pd.Timestamp(after)
        moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
        later = submissions.to_table(columns=["event_id"], filter=pc.field("event_time") > pa.scalar(
            moment, pa.timestamp("us", tz="UTC")))["event_id"]
        outcomes = outcomes.filter(pc.is_in(outcomes["submission_event_id"], later))
    # silver.outcomes holds one row per submission; keep the latest should a duplicate slip in.
    latest = (outcomes.to_pandas().sort_values("event_time", kind="stable")
              .drop_duplicates("submission_event_id", keep="last").tail(rows))
    if latest.empty:
        return empty
    chosen = submissions.to_table(
        columns=["event_id", "event_time", "subject", "grade_level", "responses"],
        filter=pc.field("event_id").isin(pa.array(latest["submission_event_id"], pa.string())))
    chosen = chosen.sort_by([("event_time", "ascending"), ("event_id", "ascending")])
    labels = (latest.set_index("submission_event_id")
              .loc[chosen["event_id"].to_pylist(), ["observed_progress_score",
                                                      "observed_comprehension_level"]]
              .reset_index(names="event_id"))
    labels.insert(1, "event_time", chosen["event_time"].to_pandas())
    return model_input_from_arrow(chosen), labels
