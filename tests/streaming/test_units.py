"""Small pure pieces of the scorer, checked against their reference implementations."""

from __future__ import annotations

import uuid

import pytest
from pyspark.sql import functions as F

from learnscore.core.privacy import pseudonymise
from learnscore.streaming.score import pseudonym_column, score_event_id, score_event_id_column


@pytest.mark.integration
def test_score_event_ids_in_spark_equal_the_python_uuid5(spark):
    rows = [(str(uuid.UUID(int=i * 7919 + 13, version=4)),) for i in range(300)]
    frame = spark.createDataFrame(rows, "submission string")
    got = frame.select("submission", score_event_id_column(F.col("submission")).alias("id")).collect()
    assert all(row.id == score_event_id(row.submission) for row in got)
    assert {uuid.UUID(row.id).version for row in got} == {5}
    assert len({row.id for row in got}) == 300


@pytest.mark.integration
def test_pseudonyms_in_spark_are_the_python_ones(spark):
    key = "k" * 40
    frame = spark.createDataFrame([("learner-1",), ("learner-2",), (None,)], "learner_id string")
    got = frame.select("learner_id", pseudonym_column(F.col("learner_id"), key).alias("key")).collect()
    assert {row.learner_id: row.key for row in got} == {
        "learner-1": pseudonymise("learner-1", key), "learner-2": pseudonymise("learner-2", key), None: None}


def test_pseudonymise_refuses_what_is_not_a_string():
    with pytest.raises(TypeError, match="learner_id must be a string"):
        pseudonymise(42, "k" * 32)
