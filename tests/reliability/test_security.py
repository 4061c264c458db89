"""Security promises: pickle refused everywhere, the endpoint keeps its secrets, no raw learner id
in gold/ops/BI tables, no secret in MLflow or in the checkout.

Skops-only model loading with the reviewed type list is proven in tests/batch/test_serialization.py
(a file asking for another type is refused, directly and through MLflow); SASL_SSL end to end and
secrets in process logs are in test_sasl_ssl_pipeline.py.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from learnscore.core.config import Secrets

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PICKLE = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"

# Distinctive test secrets: any appearance in a response, a table, a run or a file is a leak.
TEST_API_KEY = "apikey-4c1d9e-DO-NOT-LEAK-7f3b2a"
TEST_PSEUDONYM_KEY = "pseudonymkey-9a8b7c6d5e4f-DO-NOT-LEAK-0123456789"


@pytest.fixture
def secrets_env(monkeypatch):
    monkeypatch.setenv(Secrets.API_KEY, TEST_API_KEY)
    monkeypatch.setenv(Secrets.PSEUDONYM_KEY, TEST_PSEUDONYM_KEY)


# -- pickle is refused by every process we start ------------------------------------------------


def test_every_process_we_start_refuses_pickle_even_if_its_parent_allows_it(tmp_path, monkeypatch, spark,
                                                                           stack_config):
    from learnscore.core.spark import spark_conf
    from learnscore.core.tracking import use_mlflow
    from learnscore.stack.processes import start_background, stop_process

    monkeypatch.setenv(PICKLE, "true")  # a careless parent environment
    out = tmp_path / "child.log"
    record = start_background("probe", [sys.executable, "-c", f"import os; print(os.environ.get('{PICKLE}'))"],
                              out, "probe", env={PICKLE: "true"})
    deadline = 50
    while record.is_running() and deadline:
        deadline -= 1
        __import__("time").sleep(0.2)
    stop_process(record)
    assert out.read_text().strip() == "false"  # the stack's services and the demo's children

    use_mlflow(stack_config)  # every entry point that talks to MLflow
    assert os.environ[PICKLE] == "false"
    monkeypatch.setenv(PICKLE, "true")
    from typer.testing import CliRunner

    from learnscore.cli import app

    assert CliRunner().invoke(app, ["schemas", "export", "--check"]).exit_code == 0  # every CLI command
    assert os.environ[PICKLE] == "false"

    # Spark's Python workers (where the stream's model UDF loads the model), locally and on a cluster.
    assert spark_conf(stack_config)[f"spark.executorEnv.{PICKLE}"] == "false"
    from pyspark.sql import functions as F

    @F.udf("string")
    def worker_setting(_):
        import os as worker_os

        return worker_os.environ.get(PICKLE)

    assert {r.v for r in spark.range(4).select(worker_setting("id").alias("v")).collect()} == {"false"}


def test_the_serving_benchmark_starts_its_endpoint_with_pickle_refused():
    source = (ROOT / "bench" / "serve.py").read_text()
    assert f'"{PICKLE}": "false"' in source  # its only Popen; the rest go through start_background
    sources = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    starters = [name for name in sources if not name.startswith("tests/") and "Popen(" in (ROOT / name).read_text()]
    assert sorted(starters) == ["bench/import_files.py", "bench/serve.py", "learnscore/demo.py",
                                "learnscore/stack/processes.py"]
    assert f'"{PICKLE}": "false"' in (ROOT / "bench" / "import_files.py").read_text()
    # The demo's one-shot steps (train, promote) start their own processes: SAFE_ENV wins there too.
    assert "**SAFE_ENV}" in (ROOT / "learnscore" / "demo.py").read_text()


def test_a_streaming_plan_does_not_show_the_kafka_password(spark, config, monkeypatch):
    """The Kafka source's ``kafka.sasl.jaas.config`` option holds the password; Spark must not
    print it in the plans that explain() and a failed query's error show (the session also
    redacts options named like it: ``spark.sql.redaction.options.regex`` in learnscore/spark.py)."""
    from learnscore.core.kafka_io import spark_kafka_options
    from learnscore.core.spark import spark_conf

    monkeypatch.setenv(Secrets.KAFKA_PASSWORD, "kafkapass-DO-NOT-LEAK-5e6f-plan")
    sasl = config.model_copy(update={"kafka": config.kafka.model_copy(update={
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "learnscore"})})
    options = spark_kafka_options(sasl)
    assert "kafkapass-DO-NOT-LEAK-5e6f-plan" in options["kafka.sasl.jaas.config"]
    frame = spark.readStream.format("kafka").options(**options).option("subscribe", "x").load()
    plan = frame._jdf.queryExecution().toString()
    assert "KafkaSourceProvider" in plan and "kafkapass-DO-NOT-LEAK" not in plan
    assert "jaas" in spark_conf(sasl)["spark.sql.redaction.options.regex"]


# -- the endpoint -------------------------------------------------------------------------------


def test_the_endpoint_keeps_its_key_and_its_stack_traces_to_itself(rel_config, logged_model_uri, rel,
                                                                   secrets_env, fitted_model,
                                                                   small_history_events, tmp_path):
    import mlflow

    from learnscore.model.loader import save_model_file
    from learnscore.model.packaging import _log_pyfunc
    from learnscore.schemas import topics

    # Every refusal logged (not the default sample): the log is checked for the key too.
    config = rel_config.model_copy(update={"serving": rel_config.serving.model_copy(
        update={"max_body_bytes": 64 * 1024, "max_batch": 5, "refusal_log_share": 1.0})})
    assert Secrets(config).api_key.get_secret_value() == TEST_API_KEY  # from the environment
    rel.register_production(config, logged_model_uri)
    event = copy.deepcopy(small_history_events[0][2500])
    key_in = [{**event, "subject": TEST_API_KEY}, {**event, "event_id": TEST_API_KEY},
              {**event, "event_time": TEST_API_KEY}, {**event, "learner_id": TEST_API_KEY * 5},
              {**event, "assessment_id": {"key": TEST_API_KEY}}]
    answers = []
    with rel.running_endpoint(config) as base, httpx.Client(base_url=base, timeout=60) as client:
        headers = {"X-API-Key": TEST_API_KEY}
        assert client.post("/v1/score", json=event).status_code == 401
        assert client.post("/v1/score", json=event, headers={"X-API-Key": "nope"}).status_code == 401
        assert client.post("/v1/score", json=event, headers=headers).status_code == 200
        for bad in key_in:
            answers.append(client.post("/v1/score", json=bad, headers=headers))
        answers.append(client.post("/v1/score", content=b'{"subject": "' + TEST_API_KEY.encode() + b'"',
                                   headers=headers))
        answers.append(client.post("/v1/score", json=[{**event, "padding": TEST_API_KEY * 3000}],
                                   headers=headers))
        answers.append(client.post("/v1/score", json=[event] * 6, headers=headers))
        statuses = [a.status_code for a in answers]
        assert statuses == [422] * 6 + [413, 422], [a.text[:200] for a in answers]
        assert answers[-1].json()["error"] == "too_many_items"

        # A model that raises while scoring: a 500 that says nothing about the inside.
        broken = copy.copy(fitted_model)
        broken.level_pipeline_ = None  # loads, then raises TypeError on every prediction
        with mlflow.start_run(run_name="broken-model"):
            save_model_file(broken, tmp_path / "broken" / "diagnostic_model")
            broken_uri = _log_pyfunc(mlflow, tmp_path / "broken" / "diagnostic_model", None).model_uri  # no example: no trial run
        version = rel.register_production(config, broken_uri)
        rel.wait_for(lambda: client.get("/v1/model", headers=headers).json()["production"]["version"] == version,
                     60, "the swap")
        failed = client.post("/v1/score", json=event, headers=headers)
        answers.append(failed)
        assert failed.status_code == 500 and failed.json()["error"] == "internal", failed.text
        assert client.get("/healthz").status_code == 200  # still up
        for answer in answers:
            assert answer.headers["content-type"] == "application/json"
            assert TEST_API_KEY not in answer.text and TEST_PSEUDONYM_KEY not in answer.text
            assert "Traceback" not in answer.text and 'File "' not in answer.text
            assert "NoneType" not in answer.text and "level_pipeline_" not in answer.text
    logged = rel.consume_all(config, topics.ENDPOINT_REQUESTS)
    assert len(logged) == 3 + len(answers)
    assert not [m.value for m in logged if TEST_API_KEY.encode() in m.value]
    errors = [orjson.loads(m.value).get("error") for m in logged]
    assert "internal error (see the endpoint's log)" in errors


# -- pseudonyms ------------------------------------------------------------------------------------


def string_values_by_table(spark, config, layers=("gold", "ops")) -> dict[str, list[str]]:
    """Every value of every string column of every Delta table of ``layers`` in the lake."""
    from pyspark.sql import functions as F

    found: dict[str, list[str]] = {}
    for layer in layers:
        folder = Path(config.lake.root) / layer
        for table in sorted(p for p in folder.iterdir() if (p / "_delta_log").exists()) if folder.exists() else []:
            frame = spark.read.format("delta").load(str(table))
            strings = [f.name for f in frame.schema.fields if f.dataType.simpleString() == "string"]
            values: list[str] = []
            if strings:
                for row in frame.select(F.concat_ws("\u0001", *strings).alias("v")).collect():
                    values.append(row.v)
            found[f"{layer}.{table.name}"] = values
    return found


@pytest.mark.slow
def test_no_raw_learner_id_reaches_a_gold_ops_or_bi_table(spark, rel_config, logged_model_uri, rel,
                                                          secrets_env, small_history_events):
    from learnscore.bi.daily_summary import refresh_daily_summary
    from learnscore.schemas import topics
    from learnscore.streaming.job import start_scorer

    config = rel_config.model_copy(update={"privacy": rel_config.privacy.model_copy(
        update={"min_cell_learners": 1})})  # keep every BI cell: more rows to scan
    rel.register_production(config, logged_model_uri)
    rel.create_stream_topics(config)
    tag = uuid.uuid4().hex[:6]
    submissions = []
    for index, template in enumerate(small_history_events[0][2000:2060]):
        event = copy.deepcopy(template)
        event.update(event_id=str(uuid.uuid4()), learner_id=f"rawlearner-{tag}-{index:03d}")
        submissions.append(event)
    outcomes = [{"event_id": str(uuid.uuid4()), "schema_version": 1, "event_time": s["event_time"],
                 "submission_event_id": s["event_id"], "learner_id": s["learner_id"],
                 "observed_progress_score": 50.0, "observed_comprehension_level": "developing"}
                for s in submissions[:30]]
    learner_ids = [s["learner_id"] for s in submissions]
    rel.produce_located(config, topics.SUBMISSIONS, [(s["learner_id"].encode(), orjson.dumps(s)) for s in submissions])
    rel.produce_located(config, topics.OUTCOMES, [(o["learner_id"].encode(), orjson.dumps(o)) for o in outcomes])
    with rel.running_endpoint(config) as base, \
            httpx.Client(base_url=base, headers={"X-API-Key": TEST_API_KEY}, timeout=60) as client:
        for event in submissions[:10]:
            assert client.post("/v1/score", json=event).status_code == 200
        for event in submissions[10:15]:  # refused, with the learner id in the body
            assert client.post("/v1/score", json={**event, "grade_level": 13}).status_code == 422
    expected_rows = len(submissions) + len(outcomes) + 15

    scorer = start_scorer(spark, config)  # the drift detectors included: they write ops tables too
    gold = lambda name: spark.read.format("delta").load(config.table_path(name)).count()
    try:
        rel.wait_for(lambda: scorer.failure() or (rel.rows_read(spark, config) >= expected_rows
                                                  and gold("gold.predictions") >= len(submissions)
                                                  and gold("gold.prediction_outcomes") >= len(outcomes)),
                     300, "the submissions, outcomes and request log landed, scored and paired")
        assert scorer.failure() is None
    finally:
        scorer.stop()
    refresh_daily_summary(spark, config)

    tables = string_values_by_table(spark, config)
    assert {"gold.predictions", "gold.prediction_outcomes", "gold.daily_summary", "ops.stream_progress",
            "ops.endpoint_requests"} <= set(tables)
    assert len(tables["gold.predictions"]) == len(submissions)
    assert len(tables["ops.endpoint_requests"]) == 15
    leaks = [(name, value[:120]) for name, values in tables.items() for value in values
             if any(learner in value for learner in learner_ids)]
    assert not leaks, leaks[:5]
    # The silver tables do keep them (they are not BI-facing): the scan would have seen a leak.
    silver = string_values_by_table(spark, config, layers=("silver",))
    assert any(learner_ids[0] in value for value in silver["silver.submissions"])


# -- secrets in MLflow and in the checkout ---------------------------------------------------------


@pytest.mark.slow
def test_a_training_run_records_no_secret(spark, silver_history, mlflow_store, small_history, secrets_env,
                                          monkeypatch, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from learnscore.batch.train import train_model

    monkeypatch.setenv(Secrets.KAFKA_PASSWORD, "kafkapass-DO-NOT-LEAK-5e6f")
    lake_config, _ = silver_history
    config = lake_config.model_copy(update={
        "mlflow": lake_config.mlflow.model_copy(update={"model_name": f"secret-scan-{uuid.uuid4().hex[:6]}"}),
        "model": lake_config.model.model_copy(update={
            "score": lake_config.model.score.model_copy(update={"max_iter": 10}),
            "level": lake_config.model.level.model_copy(update={"max_iter": 5})})})
    result = train_model(spark, config, history_dir=small_history, actor="secret-scan")
    run = MlflowClient().get_run(result.run_id)
    recorded = [*run.data.params.items(), *run.data.tags.items()]
    version = MlflowClient().get_model_version(config.mlflow.model_name, result.version)
    recorded += list(version.tags.items())
    folders = [Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, dst_path=str(tmp_path / "run"))),
               Path(mlflow.artifacts.download_artifacts(
                   f"models:/{config.mlflow.model_name}/{result.version}", dst_path=str(tmp_path / "model")))]
    texts = [p.read_bytes() for folder in folders for p in folder.rglob("*") if p.is_file()]
    assert texts
    for secret in (TEST_API_KEY, TEST_PSEUDONYM_KEY, "kafkapass-DO-NOT-LEAK-5e6f"):
        assert not [item for item in recorded if secret in str(item)], secret
        assert not [t for t in texts if secret.encode() in t], secret
    assert recorded  # the scan saw something


def test_committed_config_holds_no_secret():
    import yaml

    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    secret_names = ("password", "api_key", "apikey", "secret", "token", "pseudonym_key")

    def secret_settings(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from secret_settings(value, f"{path}.{key}" if path else str(key))
        elif node not in (None, "") and any(name in path.lower() for name in secret_names):
            yield path, node

    for name in sorted(p for p in tracked if p.startswith("conf/") and p.endswith(".yaml")):
        settings = yaml.safe_load((ROOT / name).read_text())
        assert not list(secret_settings(settings)), name
    # The distinctive values these tests (and test_sasl_ssl_pipeline) use appear nowhere in the
    # checkout but in the tests that define them.
    values = (TEST_API_KEY, TEST_PSEUDONYM_KEY, "kafkapass-DO-NOT-LEAK")
    holders = [name for name in tracked if (ROOT / name).is_file() and not name.startswith("tests/reliability/")
               and any(v.encode() in (ROOT / name).read_bytes() for v in values)]
    assert holders == []
