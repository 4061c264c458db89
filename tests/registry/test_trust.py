"""Tampered versions in a real MLflow store are refused by every loader, which keeps the previous one.

Each version is logged and registered the way training does it (``register_version`` records the
SHA-256 of its files); then its files in the artifact store are changed the way someone with
write access to the store could: ``MLmodel`` edited to another loader module, ``MLmodel`` given a
code path, ``model.skops`` swapped for another genuine model. The endpoint and the stream's model
cache (driven directly, as the stream calls it) keep scoring with the version they had, the gates
refuse the version before anything of it runs, and the other loader module is never imported.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import yaml

from learnscore.core.config import Secrets
from learnscore.core.kafka_io import create_topics
from learnscore.core.ports import free_port
from learnscore.model.features import model_input_from_events
from learnscore.registry.access import PRODUCTION, registry_client, set_alias
from learnscore.registry.trust import CONTENT_SHA256_TAG
from learnscore.schemas import topics
from tests.support import running_endpoint, wait_for

pytestmark = pytest.mark.integration

EVIL_MODULE = "learnscore_test_evil_loader"


@pytest.fixture
def trust_config(config, mlflow_store):
    create_topics(config, [topics.LIFECYCLE])
    return config.model_copy(update={
        "serving": config.serving.model_copy(update={"alias_check_seconds": 0.3, "port": free_port()}),
        "streaming": config.streaming.model_copy(update={"alias_check_seconds": 0.0})})


@pytest.fixture
def evil_module(tmp_path, monkeypatch) -> Path:
    """An importable loader module that leaves a mark when it is imported (it must never be)."""
    marker = tmp_path / "imported"
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / f"{EVIL_MODULE}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "def _load_pyfunc(path):\n    raise RuntimeError('never')\n")
    monkeypatch.syspath_prepend(str(folder))
    return marker


def _register(config, model, example) -> str:
    """Log ``model`` and register it as training does (content hash recorded)."""
    import mlflow

    from learnscore.core.tracking import use_mlflow
    from learnscore.model.packaging import log_diagnostic_model
    from learnscore.registry.register import register_version

    use_mlflow(config)
    with mlflow.start_run(run_name="trust-test"):
        uri = log_diagnostic_model(model, example)
    return register_version(config, uri, tags={}, metrics={}, actor="test", reason="trust test")


def _stored_folder(config, version: str) -> Path:
    """Where the registry's artifact store keeps the files of ``version`` (a local store here)."""
    import mlflow

    source = registry_client(config).get_model_version(config.mlflow.model_name, version).source
    location = mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location
    return Path(location.removeprefix("file://"))


def _edit_mlmodel(folder: Path, **changes) -> None:
    document = yaml.safe_load((folder / "MLmodel").read_text())
    document["flavors"]["python_function"].update(changes)
    (folder / "MLmodel").write_text(yaml.safe_dump(document))


@pytest.fixture
def versions(trust_config, fitted_model, small_history_events, evil_module, tmp_path):
    """good (production), then three tampered versions: loader, code, bytes."""
    from learnscore.model.diagnostic import DiagnosticModel
    from learnscore.model.loader import save_model_file

    config = trust_config
    submissions, outcomes = small_history_events
    example = model_input_from_events(submissions[:3])
    good = _register(config, fitted_model, example)
    set_alias(config, PRODUCTION, good)

    loader = _register(config, fitted_model, example)
    _edit_mlmodel(_stored_folder(config, loader), loader_module=EVIL_MODULE)

    code = _register(config, fitted_model, example)
    stored = _stored_folder(config, code)
    (stored / "code").mkdir()
    (stored / "code" / f"{EVIL_MODULE}.py").write_text("raise SystemExit('never')\n")
    _edit_mlmodel(stored, code="code")

    swapped = _register(config, fitted_model, example)
    other = DiagnosticModel(score_params={"max_iter": 3}, level_params={"max_iter": 2}, random_state=5).fit(
        model_input_from_events(submissions[:300]), [o["observed_progress_score"] for o in outcomes[:300]],
        [o["observed_comprehension_level"] for o in outcomes[:300]])
    shutil.copyfile(save_model_file(other, tmp_path / "other"),
                    _stored_folder(config, swapped) / "data" / "diagnostic_model" / "model.skops")
    return {"good": good, "loader": loader, "code": code, "swapped": swapped}


REASONS = {
    "loader": f"python_function.loader_module is '{EVIL_MODULE}', neither learnscore.model.loader nor on "
              f"models.allowed_loader_modules",
    "code": "python_function.code is 'code': a code path goes onto sys.path and runs",
    "swapped": "its files differ from those registered: data/diagnostic_model/model.skops changed",
}


def test_registration_records_the_content_hash(trust_config, versions):
    tags = registry_client(trust_config).get_model_version(trust_config.mlflow.model_name, versions["good"]).tags
    assert len(tags[CONTENT_SHA256_TAG]) == 64


def test_the_endpoint_keeps_its_version_when_a_tampered_one_becomes_production(trust_config, versions,
                                                                                evil_module, small_history_events):
    config = trust_config
    headers = {"X-API-Key": Secrets(config).api_key.get_secret_value()}
    event = small_history_events[0][2500]
    with running_endpoint(config, request_log=False, wait_ready=True) as base, \
            httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        assert client.post("/v1/score", json=event).json()["model_version"] == versions["good"]
        for kind in ("loader", "code", "swapped"):
            set_alias(config, PRODUCTION, versions[kind])
            refused = wait_for(lambda kind=kind: client.get("/v1/model").json()["refused"].get(versions[kind]),
                               60, f"the endpoint to refuse the {kind} version")
            assert REASONS[kind] in refused, refused
            assert f"version {versions[kind]} of {config.mlflow.model_name} is not loaded" in refused
            answer = client.post("/v1/score", json=event)
            assert answer.status_code == 200 and answer.json()["model_version"] == versions["good"]
            assert client.get("/v1/model").json()[PRODUCTION]["version"] == versions["good"]
    assert not evil_module.exists()


def test_the_stream_model_cache_keeps_its_version_when_a_tampered_one_becomes_production(
        spark, trust_config, versions, evil_module):
    from learnscore.streaming.model_cache import LOAD_FAILED, OK, ModelCache

    config = trust_config
    cache = ModelCache(spark, config)
    state = cache.refresh(force=True)
    assert (state.status, state.model.version) == (OK, versions["good"])
    for kind in ("loader", "code", "swapped"):
        set_alias(config, PRODUCTION, versions[kind])
        state = cache.refresh(force=True)
        assert (state.status, state.model.version) == (LOAD_FAILED, versions["good"]), kind
        assert REASONS[kind] in state.message and "UntrustedModel" in state.message
    assert not evil_module.exists()
    # Nothing of a refused download is left behind; the good version's copy is still in use.
    kept = sorted(p.name for p in (Path(config.state_dir) / "scorer" / "models").iterdir())
    assert [name for name in kept if name.startswith(f"{config.mlflow.model_name}-v")] == \
        [Path(cache.model.local_path).name]


def test_the_gates_refuse_a_tampered_version_before_it_runs(trust_config, versions, evil_module):
    from learnscore.registry.gates import run_gates

    for kind in ("loader", "code", "swapped"):
        report = run_gates(trust_config, versions[kind])
        assert [(r.name, r.passed) for r in report.results] == [("trust", False)], report.summary()
        assert REASONS[kind] in report.results[0].message
    assert not evil_module.exists()
