"""Safe serialization: the logged model is skops only, loads with pickle loading off, and a model
file that asks for a type off the reviewed list is refused before anything is built."""

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from learnscore.model.features import model_input_from_events
from learnscore.model.loader import MODEL_FILE, TRUSTED_TYPES, UntrustedModelError, load_model_file, save_model_file

pytestmark = pytest.mark.integration


class NotOnTheList:
    """Stands in for a type an attacker (or a careless refactor) smuggles into a model file."""

    def __init__(self):
        self.payload = "anything"


@pytest.fixture
def logged_model(mlflow_store, config, fitted_model, small_history_events):
    import mlflow

    from learnscore.core.tracking import use_mlflow
    from learnscore.model.packaging import log_diagnostic_model

    use_mlflow(config)
    with mlflow.start_run():
        uri = log_diagnostic_model(fitted_model, model_input_from_events(small_history_events[0][:5]))
    return uri


def test_the_logged_model_is_skops_and_no_pickle(logged_model, tmp_path):
    import mlflow
    import yaml

    local = Path(mlflow.artifacts.download_artifacts(logged_model, dst_path=str(tmp_path / "copy")))
    files = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib", ".cloudpickle"))]
    assert f"data/diagnostic_model/{MODEL_FILE}" in files
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "learnscore.model.loader"
    assert "python_model" not in flavor and "cloudpickle_version" not in flavor
    assert (local / "data" / "diagnostic_model" / MODEL_FILE).read_bytes()[:2] == b"PK"  # skops is a zip


def test_loading_works_with_pickle_deserialization_off(logged_model, fitted_model, small_history_events):
    import mlflow

    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    model_input = model_input_from_events(small_history_events[0][2000:2100])
    loaded = mlflow.pyfunc.load_model(logged_model)
    pd.testing.assert_frame_equal(loaded.predict(model_input), fitted_model.predict(model_input))


def test_the_trusted_list_is_exactly_what_the_model_needs(fitted_model, tmp_path):
    import skops.io

    path = save_model_file(fitted_model, tmp_path)
    assert sorted(skops.io.get_untrusted_types(file=path)) == sorted(TRUSTED_TYPES)


def test_a_model_asking_for_another_type_is_refused(fitted_model, tmp_path):
    import skops.io

    fitted_model.smuggled = NotOnTheList()
    try:
        skops.io.dump(fitted_model, tmp_path / MODEL_FILE)
    finally:
        del fitted_model.smuggled
    with pytest.raises(UntrustedModelError, match=r"test_serialization\.NotOnTheList.*not on the reviewed list"):
        load_model_file(tmp_path)
    with pytest.raises(UntrustedModelError):
        save_model_file(NotOnTheList(), tmp_path / "again")  # refused at save time as well


def test_mlflow_refuses_a_tampered_artifact(logged_model, fitted_model, tmp_path):
    import mlflow
    import skops.io

    local = Path(mlflow.artifacts.download_artifacts(logged_model, dst_path=str(tmp_path / "copy")))
    fitted_model.smuggled = NotOnTheList()
    try:
        skops.io.dump(fitted_model, local / "data" / "diagnostic_model" / MODEL_FILE)
    finally:
        del fitted_model.smuggled
    with pytest.raises(UntrustedModelError, match="NotOnTheList"):
        mlflow.pyfunc.load_model(str(local))
    shutil.rmtree(local)
