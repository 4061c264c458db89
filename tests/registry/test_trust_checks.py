"""The trust checks on model folders saved here (no store, no broker): what is refused and why.

The same checks against a real registry, the endpoint and the stream's model cache are in
test_trust.py.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import yaml

from learnscore.core.config import ModelsConfig
from learnscore.registry.trust import (
    CONTENT_MANIFEST_TAG,
    UntrustedModel,
    check_folder,
    content_tags,
)

DEFAULT = ModelsConfig()


class NotOnTheList:
    """A type no reviewer put on TRUSTED_TYPES."""

    def __init__(self):
        self.payload = "anything"


@pytest.fixture(scope="module")
def saved_model(fitted_model, tmp_path_factory) -> Path:
    """The session's fitted model saved as training logs it: our loader, one model.skops."""
    import mlflow

    from learnscore.model.loader import save_model_file

    scratch = tmp_path_factory.mktemp("saved")
    save_model_file(fitted_model, scratch / "diagnostic_model")
    mlflow.pyfunc.save_model(path=str(scratch / "model"), loader_module="learnscore.model.loader",
                             data_path=str(scratch / "diagnostic_model"))
    return scratch / "model"


@pytest.fixture
def model(saved_model, tmp_path) -> Path:
    """A fresh copy to tamper with."""
    return Path(shutil.copytree(saved_model, tmp_path / "model"))


def _edit_mlmodel(folder: Path, **pyfunc_changes) -> None:
    path = folder / "MLmodel"
    document = yaml.safe_load(path.read_text())
    document["flavors"]["python_function"].update(pyfunc_changes)
    path.write_text(yaml.safe_dump(document))


def _refusal(folder: Path, tags: dict | None = None, models: ModelsConfig = DEFAULT) -> str:
    with pytest.raises(UntrustedModel) as refused:
        check_folder(folder, models, tags or {}, "version 9 of m")
    return str(refused.value)


def test_a_model_as_training_saves_it_passes_with_its_registered_content(model, caplog):
    tags = content_tags(model)
    check_folder(model, DEFAULT, tags, "version 1 of m")
    assert "learnscore.content_sha256" in tags and "MLmodel" in tags[CONTENT_MANIFEST_TAG]
    with caplog.at_level(logging.WARNING, "learnscore.registry.trust"):
        check_folder(model, DEFAULT, {}, "version 1 of m")  # registered before hashes: accepted, said so
    assert "no recorded content hash" in caplog.text and "version 1 of m" in caplog.text
    # The secure profile refuses it: deleting the hash tag is no way around the content check.
    strict = DEFAULT.model_copy(update={"require_content_hash": True})
    assert "no content hash was recorded at registration" in _refusal(model, {}, strict)
    check_folder(model, strict, tags, "version 1 of m")


def test_another_loader_module_is_refused_unless_allowed(model):
    tags = content_tags(model)
    _edit_mlmodel(model, loader_module="evil_loader")
    message = _refusal(model, tags)
    assert message.startswith("version 9 of m is not loaded: ")
    assert "python_function.loader_module is 'evil_loader', neither learnscore.model.loader nor on " \
           "models.allowed_loader_modules (empty)" in message
    assert "its files differ from those registered: MLmodel changed" in message
    allowed = ModelsConfig(allowed_loader_modules=("evil_loader",))
    check_folder(model, allowed, content_tags(model), "v")  # an operator's reviewed choice


def test_a_code_path_is_refused_even_with_our_loader(model):
    tags = content_tags(model)
    (model / "code").mkdir()
    (model / "code" / "learnscore_shadow.py").write_text("import os\n")
    _edit_mlmodel(model, code="code")
    message = _refusal(model, tags)
    assert "python_function.code is 'code': a code path goes onto sys.path and runs" in message
    assert "MLmodel changed, code/learnscore_shadow.py added" in message
    # Nothing allows code paths, not even an allowed loader with pickle on.
    lenient = ModelsConfig(allowed_loader_modules=("evil_loader",), allow_pickle=True)
    assert "code path" in _refusal(model, {}, lenient)


def test_changed_model_bytes_are_refused_by_the_hash_alone(model, saved_model, small_history_events, tmp_path):
    from learnscore.model.diagnostic import DiagnosticModel
    from learnscore.model.features import model_input_from_events
    from learnscore.model.loader import save_model_file

    tags = content_tags(model)
    submissions, outcomes = small_history_events
    other = DiagnosticModel(score_params={"max_iter": 3}, level_params={"max_iter": 2}, random_state=3).fit(
        model_input_from_events(submissions[:300]), [o["observed_progress_score"] for o in outcomes[:300]],
        [o["observed_comprehension_level"] for o in outcomes[:300]])
    replacement = save_model_file(other, tmp_path / "other")  # a genuine, trusted-type model file
    shutil.copyfile(replacement, model / "data" / "diagnostic_model" / "model.skops")
    check_folder(model, DEFAULT, {}, "unpinned")  # structurally fine: only the hash can tell
    assert _refusal(model, tags).endswith(
        "its files differ from those registered: data/diagnostic_model/model.skops changed")


def test_pickle_is_refused_unless_the_operator_opts_in(tmp_path):
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    mlflow.pyfunc.save_model(path=str(tmp_path / "pickled"), python_model=Echo())
    message = _refusal(tmp_path / "pickled")
    assert "python_function.loader_module is 'mlflow.pyfunc.model'" in message
    assert "python_function.python_model is 'python_model.pkl' (cloudpickle): pickle runs code while " \
           "loading (models.allow_pickle is false)" in message
    assert "python_model.pkl is a pickle file" in message
    opted_in = ModelsConfig(allowed_loader_modules=("mlflow.pyfunc.model",), allow_pickle=True)
    check_folder(tmp_path / "pickled", opted_in, {}, "v")


def test_a_skops_file_asking_for_an_unreviewed_type_is_refused(model):
    import skops.io

    skops.io.dump({"payload": NotOnTheList()}, model / "data" / "diagnostic_model" / "model.skops")
    message = _refusal(model)
    assert "data/diagnostic_model/model.skops asks for type(s) " in message
    assert "NotOnTheList, not on the reviewed list learnscore.model.loader.TRUSTED_TYPES" in message


def test_data_beside_the_model_file_links_and_escapes_are_refused(model, tmp_path):
    (model / "data" / "diagnostic_model" / "extra.bin").write_bytes(b"x")
    assert "must hold model.skops alone, holds extra.bin, model.skops" in _refusal(model)
    (model / "data" / "diagnostic_model" / "extra.bin").unlink()
    (model / "data" / "link").symlink_to("/etc/hostname")
    assert "symbolic links (data/link)" in _refusal(model)
    (model / "data" / "link").unlink()
    _edit_mlmodel(model, data="../elsewhere")
    assert "python_function.data '../elsewhere' points outside the model folder" in _refusal(model)
    (model / "MLmodel").write_text("flavors: [unclosed")
    assert "its MLmodel cannot be read" in _refusal(model)
