"""Parity: every path into the model computes the same features for the same submissions.

Paths: training (silver.submissions at a Delta version → Spark select → toPandas), the stream's
Spark UDF (the same columns arriving as Arrow batches in a Python worker), the REST endpoint
(validated event dicts) and the Spark-free registry reader (deltalake → Arrow). The real MLflow
``spark_udf`` on the registry alias must also give exactly the endpoint's predictions.
"""

import numpy as np
import pandas as pd
import pytest

from learnscore.model.features import (
    compute_features,
    feature_matrix,
    feature_names,
    flatten_events,
    model_input_from_arrow,
    model_input_from_events,
    spark_model_input_columns,
)

pytestmark = pytest.mark.integration

ROWS = 400


def _features_in_spark_worker(spark, submissions, item_bank):
    """compute_features inside a pandas UDF: exactly how the stream's UDF receives the columns."""
    from pyspark.sql.functions import pandas_udf

    names = feature_names(item_bank)

    @pandas_udf("array<double>")
    def features(subject: pd.Series, grade_level: pd.Series, item_id: pd.Series, skill: pd.Series,
                 correct: pd.Series, response_time_ms: pd.Series, attempts: pd.Series,
                 hint_used: pd.Series) -> pd.Series:
        frame = pd.DataFrame({"subject": subject, "grade_level": grade_level, "item_id": item_id,
                              "skill": skill, "correct": correct, "response_time_ms": response_time_ms,
                              "attempts": attempts, "hint_used": hint_used})
        return pd.Series(list(compute_features(frame, item_bank).to_numpy()))

    rows = (submissions.select("event_id", features(*spark_model_input_columns()).alias("f"))
            .orderBy("event_id").collect())
    return pd.DataFrame([row.f for row in rows], columns=names,
                        index=[row.event_id for row in rows])


def test_training_udf_endpoint_and_arrow_paths_give_identical_features(
        spark, silver_history, small_history_events, fitted_model):
    from deltalake import DeltaTable

    from learnscore.batch.train import read_labelled_submissions

    silver, versions = silver_history
    bank = fitted_model.item_bank
    events = sorted(small_history_events[0][:ROWS], key=lambda e: e["event_id"])
    ids = [e["event_id"] for e in events]

    endpoint = compute_features(model_input_from_events(events), bank).set_axis(ids)
    # The endpoint's fast path (validated events → flat arrays → feature matrix, no DataFrame).
    fast = pd.DataFrame(feature_matrix(flatten_events(events), bank), columns=feature_names(bank), index=ids)

    training_frame = read_labelled_submissions(spark, silver, versions)
    training_frame = training_frame.set_index("event_id").loc[ids]
    training = compute_features(training_frame, bank)

    table = spark.read.format("delta").load(silver.table_path("silver.submissions"))
    udf = _features_in_spark_worker(spark, table.where(table.event_id.isin(ids)), bank).loc[ids]

    arrow = DeltaTable(silver.table_path("silver.submissions")).to_pyarrow_table(
        columns=["event_id", "subject", "grade_level", "responses"])
    arrow = arrow.take(np.argsort(arrow["event_id"].to_numpy(zero_copy_only=False)))
    arrow = arrow.filter(np.isin(arrow["event_id"].to_numpy(zero_copy_only=False), ids))
    registry = compute_features(model_input_from_arrow(arrow), bank).set_axis(ids)

    for name, other in (("training", training), ("spark udf", udf), ("registry", registry),
                        ("endpoint fast path", fast)):
        assert list(other.columns) == list(endpoint.columns), name
        # Identical, not merely close: same inputs, same code, same floating-point operations.
        assert np.array_equal(other.to_numpy(), endpoint.to_numpy(), equal_nan=True), name


def test_mlflow_spark_udf_on_the_alias_matches_the_endpoint(spark, silver_history, config, mlflow_store,
                                                            small_history_events, fitted_model):
    """The exact call the streaming scorer makes (see batch/packaging.py), ARRAY columns and all."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from learnscore.core.tracking import use_mlflow
    from learnscore.model.packaging import log_diagnostic_model
    from learnscore.registry.access import staging_model_uri
    from learnscore.schemas.scoring import PREDICTION_RESULT_TYPE

    silver, _ = silver_history
    use_mlflow(config)
    with mlflow.start_run():
        uri = log_diagnostic_model(fitted_model, model_input_from_events(small_history_events[0][:3]))
    version = mlflow.register_model(uri, config.mlflow.model_name).version
    MlflowClient().set_registered_model_alias(config.mlflow.model_name, "staging", version)

    predict = mlflow.pyfunc.spark_udf(spark, staging_model_uri(config), result_type=PREDICTION_RESULT_TYPE,
                                      env_manager="local")
    submissions = spark.read.format("delta").load(silver.table_path("silver.submissions"))
    scored = (submissions.withColumn("prediction", predict(*spark_model_input_columns()))
              .select("event_id", "prediction.*").toPandas().set_index("event_id").sort_index())

    events = sorted(small_history_events[0], key=lambda e: e["event_id"])
    expected = fitted_model.predict(model_input_from_events(events)).set_axis([e["event_id"] for e in events])
    assert len(scored) == len(expected) == 3000
    pd.testing.assert_frame_equal(scored, expected, check_names=False, check_exact=True)
