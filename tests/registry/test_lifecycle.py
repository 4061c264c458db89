"""The model lifecycle end to end on a simulated history: train → staging → gates → production,
a deliberately worse version refused, a better one promoted, rollback, and the recorded history."""

import json
import uuid

import orjson
import pytest

from learnscore.batch.train import TrainingDataError, read_labelled_submissions, train_model
from learnscore.registry.access import PRODUCTION, STAGING, GateRefused, alias_version, training_cutoff
from learnscore.registry.history import LifecycleHistoryError, model_events
from learnscore.registry.promote import PromotionError, promote, rollback
from learnscore.schemas import topics
from learnscore.schemas.events import EVENTS, validate_event

pytestmark = pytest.mark.integration


@pytest.fixture
def lifecycle_config(config, silver_history):
    """The test's own model name and topics, on the shared silver lake."""
    lake_config, _ = silver_history
    return config.model_copy(update={"lake": lake_config.lake})


def _worse(config):
    """Hyperparameters that cannot learn: one shallow tree per model."""
    params = {"max_iter": 1, "learning_rate": 0.05, "max_leaf_nodes": 2}
    model = config.model.model_copy(update={"score": config.model.score.model_copy(update=params),
                                            "level": config.model.level.model_copy(update=params)})
    return config.model_copy(update={"model": model})


def _lifecycle_messages(config) -> list[dict]:
    from learnscore.core.kafka_io import consumer

    reader = consumer(config, config.topic(topics.LIFECYCLE), auto_offset_reset="earliest",
                      consumer_timeout_ms=5000, group_id=None)
    try:
        return [orjson.loads(message.value) for message in reader]
    finally:
        reader.close()


def _cli(config, *args):
    from typer.testing import CliRunner

    import learnscore.cli as cli

    cli._state.config = config
    try:
        return CliRunner().invoke(cli.app, list(args))
    finally:
        cli._state.config = None


def test_train_promote_refuse_promote_rollback(spark, lifecycle_config, small_history, mlflow_store):
    from mlflow.tracking import MlflowClient

    config = lifecycle_config
    client = MlflowClient()

    # -- version 1: trained, registered as staging, quality far above the baseline ---------------
    first = train_model(spark, config, history_dir=small_history, actor="test")
    m = first.metrics
    assert first.version == "1" and alias_version(config, STAGING) == "1"
    assert first.rows_train == 2400 and first.rows_holdout == 600
    assert m["holdout_mae"] < 0.6 * m["baseline_mae"]
    assert m["holdout_r2"] > m["baseline_r2"] + 0.7
    assert m["holdout_macro_f1"] > m["baseline_macro_f1"] + 0.35
    assert m["holdout_qwk"] > 0.75
    assert m["r2_share_of_oracle"] >= 0.8
    assert 0 <= m["holdout_ece"] < 0.1 and 0 < m["holdout_brier"] < m["baseline_brier"]

    run = client.get_run(first.run_id)
    assert run.data.params["data.silver.submissions.version"] == str(first.data_versions["silver.submissions"])
    assert run.data.params["score.max_iter"] == str(config.model.score.max_iter)
    assert run.data.tags["trigger"] == "manual" and run.data.tags["code_version"]
    inputs = {d.dataset.name: json.loads(d.dataset.source) for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"silver.submissions", "silver.outcomes"}
    assert inputs["silver.outcomes"]["delta_table_version"] == first.data_versions["silver.outcomes"]
    artifacts = {a.path for a in client.list_artifacts(first.run_id, "evaluation")}
    assert {"evaluation/feature_importance.png", "evaluation/confusion_matrix.png",
            "evaluation/feature_importance.json"} <= artifacts
    tags = client.get_model_version(config.mlflow.model_name, "1").tags
    assert tags["trigger"] == "manual" and tags["run_id"] == first.run_id
    assert tags["data.silver.submissions.version"] == str(first.data_versions["silver.submissions"])
    assert tags["lifecycle.registered.alias"] == STAGING
    # The newest training submission's time (the holdout comes after it): drift's in-sample line.
    labelled = read_labelled_submissions(spark, config, first.data_versions)
    newest_trained = labelled["event_time"].iloc[first.rows_train - 1]
    assert training_cutoff(config, "1") == newest_trained.tz_localize("UTC").to_pydatetime()

    moved = promote(config, actor="test", reason="first model")
    assert (moved.version, moved.previous_version) == ("1", None)
    assert alias_version(config, PRODUCTION) == "1" and moved.report.passed
    # Judged on what it never saw: its holdout (what came after its training data), not all 3,000.
    assert moved.report.window_rows == first.rows_holdout == 600
    assert moved.report.window_after == newest_trained.tz_localize("UTC").isoformat()
    assert "made after its training data" in moved.report.summary()

    # -- version 2: deliberately worse, refused with the gate and the margin -----------------------
    worse = train_model(spark, _worse(config), history_dir=small_history, actor="test")
    assert worse.version == "2" and alias_version(config, STAGING) == "2"
    with pytest.raises(GateRefused) as refused:
        promote(config, actor="test", reason="should not pass")
    failed = {result.name: result.message for result in refused.value.report.failures}
    assert {"vs_production_mae", "vs_production_macro_f1", "floor_mae"} <= set(failed)
    assert "worse, beyond the tolerance 0.500 by" in failed["vs_production_mae"]
    assert "vs production v1's" in failed["vs_production_mae"]
    assert alias_version(config, PRODUCTION) == "1"
    result = _cli(config, "promote")
    assert result.exit_code == 3
    assert "FAIL  vs_production_mae" in result.output and "by" in result.output

    # -- version 3: a retrain, promoted over version 1; then rolled back ---------------------------
    request = str(uuid.uuid4())
    third = train_model(spark, config, history_dir=small_history, trigger="drift", request_id=request,
                        actor="retrain-worker")
    assert third.version == "3"
    assert client.get_model_version(config.mlflow.model_name, "3").tags["request_id"] == request
    moved = promote(config, actor="test", reason="retrained on drift")
    assert (moved.version, moved.previous_version) == ("3", "1")

    result = _cli(config, "rollback", "--reason", "alerts after the promotion")
    assert result.exit_code == 0, result.output
    assert "production → version 1 (was 3)" in result.output
    assert alias_version(config, PRODUCTION) == "1"

    history = model_events(config)
    assert list(zip(history.event_type, history.version, history.alias.fillna(""))) == [
        ("ModelRegistered", "1", "staging"), ("ModelPromoted", "1", "production"),
        ("ModelRegistered", "2", "staging"), ("ModelRegistered", "3", "staging"),
        ("ModelPromoted", "3", "production"), ("ModelRolledBack", "1", "production")]
    assert history.previous_version.tolist()[-2:] == ["1", "3"]
    promoted = json.loads(history.metrics_json.iloc[4])
    assert {"before_mae", "after_mae", "before_macro_f1", "after_macro_f1"} <= set(promoted)

    tags = client.get_model_version(config.mlflow.model_name, "1").tags
    assert tags["lifecycle.rolled_back.reason"] == "alerts after the promotion"
    assert tags["lifecycle.rolled_back.previous_version"] == "3"
    assert set(json.loads(tags["lifecycle.rolled_back.metrics_before"])) >= {"mae", "macro_f1"}
    assert json.loads(tags["lifecycle.promoted.metrics_after"])["mae"] == pytest.approx(
        promoted["before_mae"])

    messages = _lifecycle_messages(config)
    assert [(e["version"], e.get("alias")) for e in messages] == [
        ("1", "staging"), ("1", "production"), ("2", "staging"), ("3", "staging"),
        ("3", "production"), ("1", "production")]
    kinds = ["ModelRegistered", "ModelPromoted", "ModelRegistered", "ModelRegistered",
             "ModelPromoted", "ModelRolledBack"]
    assert all(validate_event(EVENTS[kind], event).ok for kind, event in zip(kinds, messages))

    with pytest.raises(LifecycleHistoryError, match="first production version on record"):
        rollback(config, actor="test", reason="nothing before v1")

    listing = _cli(config, "models")
    assert listing.exit_code == 0, listing.output
    assert "production" in listing.output and "ModelRolledBack" in listing.output


def test_promote_and_rollback_refuse_clearly_without_versions(lifecycle_config, mlflow_store):
    from learnscore.core.tracking import use_mlflow

    use_mlflow(lifecycle_config)
    with pytest.raises(PromotionError, match="no version of .* has the alias 'staging'"):
        promote(lifecycle_config, actor="test", reason="nothing there")
    with pytest.raises(LifecycleHistoryError, match="no production version to roll back"):
        rollback(lifecycle_config, actor="test", reason="nothing there")


def test_training_without_data_says_what_to_do(spark, config, mlflow_store):
    with pytest.raises(TrainingDataError, match="learnscore import"):
        train_model(spark, config)


def test_without_kafka_nothing_moves_and_the_error_says_what_to_do(spark, lifecycle_config, mlflow_store):
    from learnscore.core.kafka_io import BrokerUnreachable

    offline = lifecycle_config.model_copy(update={"kafka": lifecycle_config.kafka.model_copy(
        update={"bootstrap_servers": "127.0.0.1:1", "request_timeout_s": 2})})
    with pytest.raises(BrokerUnreachable, match="learnscore stack up"):
        train_model(spark, offline)  # refused before reading or fitting anything
    with pytest.raises(BrokerUnreachable, match="learnscore stack up"):
        promote(offline, actor="test", reason="broker down")
