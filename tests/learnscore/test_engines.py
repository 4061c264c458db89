"""The engines the project stands on, used for real: Spark + Delta, Kafka → Delta streaming, MLflow."""

import pytest

from learnscore.core import kafka_io

pytestmark = pytest.mark.integration


def test_delta_write_read_and_time_travel(spark, config):
    path = config.table_path("test.numbers")
    spark.range(5).write.format("delta").save(path)
    spark.range(5, 12).write.format("delta").mode("append").save(path)
    assert spark.read.format("delta").load(path).count() == 12
    first = spark.read.format("delta").option("versionAsOf", 0).load(path)
    assert sorted(row.id for row in first.collect()) == [0, 1, 2, 3, 4]


def test_project_tables_are_created_with_their_checkpoint_interval_and_old_ones_brought_in_line(spark, config):
    from delta.tables import DeltaTable

    from learnscore.core.lake import CHECKPOINT_INTERVAL, ensure_spark_tables

    def interval(name):
        detail = DeltaTable.forPath(spark, config.table_path(name)).detail().first()
        return detail.properties.get(CHECKPOINT_INTERVAL)

    wanted = str(config.lake.delta_checkpoint_interval)
    ensure_spark_tables(spark, config, ["silver.outcomes"])  # new
    assert interval("silver.outcomes") == wanted
    spark.sql(f"ALTER TABLE delta.`{config.table_path('silver.outcomes')}` "
              f"SET TBLPROPERTIES ('{CHECKPOINT_INTERVAL}' = '7')")  # as an older release left it
    ensure_spark_tables(spark, config, ["silver.outcomes"])
    assert interval("silver.outcomes") == wanted


def test_kafka_to_delta_stream_restarts_where_it_stopped(spark, config):
    topic = config.topic("stream-restart")
    kafka_io.create_topics(config, ["stream-restart"], partitions=2)
    table, checkpoint = config.table_path("test.stream"), config.checkpoint_path("stream-restart")

    def produce(first: int, last: int) -> None:
        producer = kafka_io.producer(config)
        for index in range(first, last):
            producer.send(topic, key=str(index % 7).encode(), value=str(index).encode())
        producer.flush()
        producer.close()

    def drain() -> None:
        reader = (spark.readStream.format("kafka").options(**kafka_io.spark_kafka_options(config))
                  .option("subscribe", topic).option("startingOffsets", "earliest").load())
        query = (reader.selectExpr("CAST(value AS STRING) AS value", "partition", "offset")
                 .writeStream.format("delta").option("checkpointLocation", checkpoint)
                 .trigger(availableNow=True).start(table))
        query.awaitTermination(180)
        assert query.exception() is None

    produce(0, 100)
    drain()
    produce(100, 150)
    drain()  # a new query on the same checkpoint continues after offset 100, no re-read
    values = [int(row.value) for row in spark.read.format("delta").load(table).collect()]
    assert sorted(values) == list(range(150))


def test_mlflow_logs_a_run_and_registers_a_version(mlflow_store, config, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from learnscore.core.tracking import use_mlflow

    use_mlflow(config)
    import numpy as np
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(np.arange(10.0).reshape(-1, 1), np.arange(10.0) * 2)
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("mae", 4.2)
        logged = mlflow.sklearn.log_model(model, name="model", serialization_format="skops")
    client = MlflowClient()
    assert client.get_run(run.info.run_id).data.metrics["mae"] == 4.2
    version = mlflow.register_model(logged.model_uri, config.mlflow.model_name)
    client.set_registered_model_alias(config.mlflow.model_name, "staging", version.version)
    assert client.get_model_version_by_alias(config.mlflow.model_name, "staging").version == version.version
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith(config.mlflow.artifact_root)
    # MLflow itself refuses to deserialize it: every process runs with pickle loading off.
    with pytest.raises(mlflow.exceptions.MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        mlflow.pyfunc.load_model(f"models:/{config.mlflow.model_name}@staging")


def test_vacuum_deletes_the_files_a_compaction_replaced_once_past_the_tables_retention(spark, config):
    from delta.tables import DeltaTable

    from learnscore.core.lake import vacuum_tables

    path = config.table_path("test.vacuumed")
    for first in range(0, 30, 10):  # three appends, then compacted into one file
        spark.range(first, first + 10).write.format("delta").mode("append").save(path)
    table = DeltaTable.forPath(spark, path)
    written = table.detail().first().numFiles
    table.optimize().executeCompaction()
    assert table.detail().first().numFiles == 1 < written
    assert vacuum_tables(spark, config, names=["test.vacuumed"]) == {"test.vacuumed": 0}  # a week
    assert spark.read.format("delta").option("versionAsOf", 0).load(path).count() == 10

    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES "
              f"('delta.deletedFileRetentionDuration' = 'interval 0 hours')")
    deleted = vacuum_tables(spark, config, names=["test.vacuumed", "test.never-written"])
    assert deleted == {"test.vacuumed": written}  # the replaced files; a missing table is skipped
    assert sorted(r.id for r in spark.read.format("delta").load(path).collect()) == list(range(30))
    with pytest.raises(Exception, match="RETENTION"):  # version 0 is gone, and Delta says so
        spark.read.format("delta").option("versionAsOf", 0).load(path).collect()


def test_the_driver_maps_the_class_archive_that_learnscore_jars_built(spark, config):
    from learnscore.core.class_archive import archive_path

    archive = archive_path(config)
    assert archive is not None and archive.is_file(), "make jars builds it; see its log line"
    bean = spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    assert f"-XX:SharedArchiveFile={archive}" in list(bean.getInputArguments())
