"""Bring your own model: a model trained by the team's own code (not learnscore's class) is
registered with `learnscore register`, gated, promoted, scored by a running stream and served by
the endpoint; one that does not fit the contract, or is pickled without the operator's consent,
is refused with the reason."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from learnscore.core.config import Secrets
from learnscore.core.ports import free_port
from learnscore.registry.access import PRODUCTION, alias_version
from tests.support import ROOT, ScorerProcess, process_env, running_endpoint, wait_for

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "own_model.py"


@pytest.fixture
def own_config(config, silver_history, monkeypatch):
    """The test's model name on the shared labelled silver lake (read only), pickle allowed."""
    lake_config, _ = silver_history
    # use_mlflow() below sets it for this process; monkeypatch puts the old value back afterwards.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    return config.model_copy(update={"lake": lake_config.lake,
                                     "models": config.models.model_copy(update={"allow_pickle": True})})


def _log_example_model(config, signature=None) -> str:
    """The example's model, trained on a few hundred labelled rows, logged; its URI."""
    import mlflow

    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import own_model
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    from learnscore.core.tracking import use_mlflow
    from learnscore.registry.window import recent_labelled_window

    use_mlflow(config)
    model_input, labels = recent_labelled_window(config, 400)
    model = own_model.train(model_input, labels)
    if signature is None:
        return own_model.log(model, model_input)
    with mlflow.start_run(run_name="own-model-wrong-signature"):
        return mlflow.pyfunc.log_model(name="model", python_model=model, signature=signature).model_uri


def _cli(config, *args):
    from typer.testing import CliRunner

    import learnscore.cli as cli

    cli._state.config = config
    try:
        return CliRunner().invoke(cli.app, list(args))
    finally:
        cli._state.config = None


def test_a_model_off_the_contract_or_pickled_without_consent_is_refused_with_the_reason(own_config, mlflow_store):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    from learnscore.model.packaging import model_signature
    from learnscore.registry.access import registry_client

    contract = model_signature()
    wrong = ModelSignature(inputs=Schema([ColSpec(DataType.double, "grade_level"), *contract.inputs.inputs[2:]]),
                           outputs=Schema(contract.outputs.inputs[:-1]))
    refused = _cli(own_config, "register", "--model-uri", _log_example_model(own_config, wrong))
    assert refused.exit_code == 3, refused.output
    text = " ".join(refused.output.split())
    assert "input 'subject' is missing" in text and "input 'grade_level' is double, the contract says long" in text
    assert "output 'p_advanced' is missing" in text and "model_signature()" in text

    uri = _log_example_model(own_config)
    strict = own_config.model_copy(update={"models": own_config.models.model_copy(update={"allow_pickle": False})})
    refused = _cli(strict, "register", "--model-uri", uri)
    assert refused.exit_code == 3, refused.output
    assert "pickle runs code while loading (models.allow_pickle is false)" in " ".join(refused.output.split())
    assert not registry_client(own_config).search_model_versions(f"name='{own_config.mlflow.model_name}'")


def test_a_team_s_own_model_is_registered_promoted_streamed_and_served(own_config, kit, mlflow_store, tmp_path):
    from learnscore.core.tracking import use_mlflow
    from learnscore.registry.artifacts import version_item_bank
    from learnscore.registry.promote import promote
    from learnscore.schemas import topics

    # The worked example, as a user runs it: trains, logs and registers (staging).
    env = process_env(own_config, LEARNSCORE__MODELS__ALLOW_PICKLE="true")
    run = subprocess.run([sys.executable, str(EXAMPLE), "--rows", "2000"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    version = re.search(r"v(\d+) → staging", run.stdout).group(1)

    use_mlflow(own_config)  # as `learnscore promote` does: MLflow's pickle gate follows the config
    move = promote(own_config, version, actor="test", reason="own model")  # the gates, on silver
    assert move.report.passed and alias_version(own_config, PRODUCTION) == version
    assert len(version_item_bank(own_config, version).item_ids) > 0  # its item_bank.json, for drift

    # The stream (its own lake and topics) scores with it; the endpoint serves it.
    stream_config = kit.config.model_copy(update={"models": own_config.models})
    scorer = ScorerProcess(stream_config, tmp_path / "scorer.log", LEARNSCORE__MODELS__ALLOW_PICKLE="true")
    submissions = [kit.events.submission(i) for i in range(20)]
    kit.produce(topics.SUBMISSIONS, kit.as_messages(submissions))
    scorer.start()
    try:
        scorer.wait_for_log(r"scorer started", "the scorer to start")

        def scored() -> bool:
            assert scorer.process.poll() is None, f"the scorer exited:\n{scorer.tail()}"
            return kit.table("gold.predictions").count() >= len(submissions)

        wait_for(scored, 600, "the stream to score every submission with the team's model")
    finally:
        scorer.kill()
    gold = kit.table("gold.predictions").collect()
    assert {str(row.model_version) for row in gold} == {version}
    assert all(0 <= row.progress_score <= 100 for row in gold)

    serving = own_config.model_copy(update={"serving": own_config.serving.model_copy(update={"port": free_port()})})
    key = Secrets(serving).api_key.get_secret_value()
    with running_endpoint(serving, request_log=False, wait_ready=True) as base:
        answer = httpx.post(f"{base}/v1/score", json=submissions[0], headers={"X-API-Key": key}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == version
