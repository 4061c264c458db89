"""A model version that cannot load, or that predicts nonsense, never reaches ``production``
through the gates; forced there past them, the stream writes no bad row, and `learnscore
rollback` recovers: the rows that waited are scored once, by the version rolled back to."""

from __future__ import annotations

import copy
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from learnscore.core.lake import read_table
from learnscore.registry.access import PRODUCTION, GateRefused, alias_version
from learnscore.registry.gates import check_smoke
from learnscore.registry.history import model_events
from learnscore.registry.promote import promote
from learnscore.schemas import topics
from learnscore.schemas.events import LEVELS
from learnscore.streaming.runtime import ScorerTopics

pytestmark = pytest.mark.integration


def nan_scores(model):
    """A copy of ``model`` that loads fine and answers NaN for every progress score."""
    broken = copy.deepcopy(model)
    regressor = broken.score_pipeline_[-1]
    regressor._baseline_prediction = np.full_like(regressor._baseline_prediction, np.nan)
    return broken


def unloadable(config, version: str) -> None:
    """Take the model file away from a registered version's stored artifacts."""
    from mlflow.tracking import MlflowClient

    source = MlflowClient().get_model_version_download_uri(config.mlflow.model_name, version)
    removed = list(Path(urlparse(source).path).rglob("model.skops"))
    assert removed, f"no model file under {source}"
    for path in removed:
        path.unlink()


@pytest.fixture
def registry_config(fault_config, silver_history):
    """The test's own model name on the shared silver lake (the gates' labelled window)."""
    lake_config, _ = silver_history
    return fault_config.model_copy(update={"lake": lake_config.lake})


def test_the_smoke_gate_refuses_out_of_range_output_with_the_reason():
    good = {"progress_score": [50.0, 70.0], "comprehension_level": ["beginner", "advanced"],
            **{f"p_{level}": [0.25, 0.25] for level in LEVELS}}
    assert check_smoke(pd.DataFrame(good), 2).passed
    wild = {**good, "progress_score": [-5.0, 140.0], "comprehension_level": ["beginner", "genius"],
            "p_beginner": [0.25, 0.9]}
    result = check_smoke(pd.DataFrame(wild), 2)
    assert not result.passed
    assert result.message == ("2 scores outside 0–100; 1 levels not among beginner, developing, "
                              "proficient, advanced; probabilities sum to 1 ± 0.65 (allowed 1e-6)")


@pytest.mark.slow
def test_bad_versions_are_refused_and_a_forced_one_is_rolled_back(spark, registry_config, fault_config,
                                                                   kit, mlflow_store, fitted_model,
                                                                   small_history_events):
    from mlflow.tracking import MlflowClient

    from learnscore.core import kafka_io
    from learnscore.model.features import model_input_from_events

    config = registry_config
    submissions, _ = small_history_events
    example = model_input_from_events(submissions[:20])
    good = kit.register_production(config, fitted_model, example, alias=None)
    assert promote(config, good, actor="test", reason="a sound first version").report.passed

    nonsense = kit.register_production(config, nan_scores(fitted_model), example, alias=None)
    with pytest.raises(GateRefused) as refused:
        promote(config, nonsense, actor="test", reason="must not pass")
    smoke = {r.name: r for r in refused.value.report.results}["smoke"]
    assert not smoke.passed and smoke.message.startswith(f"{config.gates.smoke_rows} rows have NaN")

    broken = kit.register_production(config, fitted_model, example, alias=None)
    unloadable(config, broken)
    with pytest.raises(GateRefused) as refused:
        promote(config, broken, actor="test", reason="must not pass")
    # The trust gate (registry/trust.py) sees the model file missing before anything loads it.
    failed = [r for r in refused.value.report.results if not r.passed]
    assert failed and failed[0].name in ("trust", "smoke"), failed
    assert alias_version(config, PRODUCTION) == good

    # Forced past the gates, straight in the registry: the stream must not write its output.
    MlflowClient().set_registered_model_alias(config.mlflow.model_name, PRODUCTION, nonsense)
    stream_config = fault_config.model_copy(update={"mlflow": config.mlflow})
    kafka_io.create_topics(stream_config, [*ScorerTopics.BASE_NAMES])
    events = submissions[2000:2030]
    producer = kafka_io.producer(stream_config)
    for key, value in kit.messages(events):
        producer.send(stream_config.topic(topics.SUBMISSIONS), key=key, value=value)
    producer.flush(timeout=60)
    producer.close()
    scorer = kit.ScorerThread(stream_config)
    scorer.start()
    try:
        def first_report():
            scorer.check()
            progress = read_table(stream_config, "ops.stream_progress")
            read = progress[(progress["query"] == "score") & (progress.rows_read > 0)]
            return read.sort_values("batch_id").iloc[0] if len(read) else None

        kit.wait_for(lambda: first_report() is not None, 600, "a micro-batch with the forced version")
        first = first_report()
        assert kit.table_count(stream_config, "silver.submissions") == len(events)
        assert (first.model_version, first.scored, first.failed) == (nonsense, 0, len(events))
        assert "unusable model output" in first.message
        assert kit.table_count(stream_config, "gold.predictions") == 0

        result = cli(config, "rollback", "--reason", "the forced version scores NaN")
        assert result.exit_code == 0, result.output
        assert f"production → version {good} (was {nonsense})" in result.output

        kit.wait_for(lambda: scorer.check() and kit.table_count(stream_config, "gold.predictions")
                     >= len(events), 600, "the waiting rows scored")
    finally:
        scorer.stop()
    assert scorer.error is None
    gold = spark.read.format("delta").load(stream_config.table_path("gold.predictions")).collect()
    assert sorted(row.event_id for row in gold) == sorted(e["event_id"] for e in events)
    assert {row.model_version for row in gold} == {good}
    history = model_events(config)
    last = history.iloc[-1]
    assert (last.event_type, last.version, last.previous_version) == ("ModelRolledBack", good, nonsense)


def cli(config, *args):
    from typer.testing import CliRunner

    import learnscore.cli as commands

    commands._state.config = config
    try:
        return CliRunner().invoke(commands.app, list(args))
    finally:
        commands._state.config = None


def test_rollback_without_a_recorded_production_says_what_to_do(fault_config, kit, mlflow_store,
                                                                 fitted_model, small_history_events):
    from mlflow.tracking import MlflowClient

    from learnscore.model.features import model_input_from_events
    from learnscore.registry.history import LifecycleHistoryError
    from learnscore.registry.promote import rollback

    config = fault_config
    version = kit.register_production(config, fitted_model,
                                      model_input_from_events(small_history_events[0][:20]), alias=None)
    MlflowClient().set_registered_model_alias(config.mlflow.model_name, PRODUCTION, version)
    with pytest.raises(LifecycleHistoryError, match=f"points to version {version} but no production "
                                                    f"version is on record.*learnscore promote --version N"):
        rollback(config, actor="test", reason="forced without history")
