"""A model version logged before the ``learnscore.*`` namespace still serves after ``registry upgrade``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learnscore.core.config import ModelsConfig
from learnscore.registry.trust import CONTENT_SHA256_TAG, structure_problems
from learnscore.registry.upgrade import (
    UPGRADED_FROM_TAG,
    LegacyModelError,
    require_current,
    upgrade_legacy_versions,
)
from tests.support import register_production

FIXTURE = Path(__file__).parents[1] / "fixtures" / "legacy_model"


@pytest.fixture
def legacy_version(config, mlflow_store, tmp_path) -> str:
    """The fixture folder logged as a run artifact and registered as ``production``."""
    import mlflow

    model_dir = tmp_path / "model"
    shutil.copytree(FIXTURE, model_dir, ignore=shutil.ignore_patterns("README.md", "expected_*"))
    # The logged-model id belongs to the store it was logged in; as a run artifact here it has none.
    mlmodel = model_dir / "MLmodel"
    mlmodel.write_text("".join(line for line in mlmodel.read_text().splitlines(keepends=True)
                               if not line.startswith(("model_id:", "model_uuid:"))))
    with mlflow.start_run(run_name="legacy") as run:
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
    return register_production(config, f"runs:/{run.info.run_id}/model")


@pytest.mark.integration  # the MLflow store
def test_legacy_version_is_refused_with_the_fix(config, legacy_version):
    with pytest.raises(LegacyModelError, match="learnscore registry upgrade"):
        require_current(config, legacy_version)


def test_trust_checks_refuse_a_legacy_version_with_the_fix():
    # What the stream's model cache and the endpoint say before loading it (registry/trust.py).
    problems = structure_problems(FIXTURE, ModelsConfig())
    assert [p for p in problems if "loader_module" in p or "loader batch.model_loader" in p] == [
        "it was logged by an earlier learnscore (loader batch.model_loader); run `learnscore registry "
        "upgrade` once to re-register it under learnscore.model.loader (its aliases move to the new version)"]


@pytest.mark.integration  # the MLflow store
def test_upgrade_reregisters_moves_aliases_and_predicts_the_same(config, legacy_version):
    import mlflow
    from mlflow.tracking import MlflowClient

    [upgrade] = upgrade_legacy_versions(config)
    assert upgrade.old_version == legacy_version and upgrade.aliases == ("production",)
    client = MlflowClient()
    name = config.mlflow.model_name
    assert str(client.get_model_version_by_alias(name, "production").version) == upgrade.new_version
    new_tags = client.get_model_version(name, upgrade.new_version).tags
    assert new_tags[UPGRADED_FROM_TAG] == legacy_version
    assert new_tags[CONTENT_SHA256_TAG]  # pinned like any new version: later loads check its files
    require_current(config, upgrade.new_version)

    model_input = pd.DataFrame(json.loads((FIXTURE / "expected_input.json").read_text()))
    expected = pd.DataFrame(json.loads((FIXTURE / "expected_predictions.json").read_text()))
    got = mlflow.pyfunc.load_model(f"models:/{name}@production").predict(model_input)
    np.testing.assert_allclose(got["progress_score"], expected["progress_score"], atol=1e-9)
    assert list(got["comprehension_level"]) == list(expected["comprehension_level"])

    assert upgrade_legacy_versions(config) == []  # already done: a second run changes nothing
