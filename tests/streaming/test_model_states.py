"""What the scoring query does when the model is missing, unreachable, broken or swapped.

The scoring query's ``foreachBatch`` handler is driven directly, with decoded micro-batches built
here: no running query, just the handler against the real broker and registry. What it did is
read back from its three topics (scores, retries, its progress).
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from learnscore.core.ports import free_port
from learnscore.streaming.model_cache import REGISTRY_UNREACHABLE
from tests.support import ScoringHandler as Handler
from tests.support import decoded_batch

pytestmark = pytest.mark.integration

@pytest.fixture
def restore_mlflow_uris():
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def test_an_unreachable_registry_parks_every_submission(kit, restore_mlflow_uris, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = f"http://127.0.0.1:{free_port()}"
    config = kit.config.model_copy(update={"mlflow": kit.config.mlflow.model_copy(update={
        "tracking_uri": dead, "registry_uri": dead})})
    handle = Handler(kit, config, tmp_path)
    events = [kit.events.submission(i) for i in range(5)]
    handle(decoded_batch(kit.spark, config, events), 0)

    assert handle.scores() == []
    assert sorted(handle.retries()) == sorted((e["event_id"], "none") for e in events)
    (progress,) = handle.progress()
    assert progress["model_status"] == REGISTRY_UNREACHABLE and progress["failed"] == 5
    assert "did not answer" in progress["message"] and dead in progress["message"]
    assert progress["pending_unscored"] == 5


def nan_scoring(model):
    """A copy of ``model`` whose score model answers NaN: loads fine, predicts garbage."""
    import copy

    import numpy as np

    broken = copy.deepcopy(model)
    regressor = broken.score_pipeline_[-1]
    regressor._baseline_prediction = np.full_like(regressor._baseline_prediction, np.nan)
    return broken


def test_a_model_that_outputs_nan_publishes_nothing_and_its_rows_wait(kit, models, small_model, tmp_path):
    config = kit.config
    bad = models.register(nan_scoring(small_model[0]))
    handle = Handler(kit, config, tmp_path)
    events = [kit.events.submission(i) for i in range(8)]
    handle(decoded_batch(kit.spark, config, events), 0)

    assert handle.scores() == []
    assert sorted(handle.retries()) == sorted((e["event_id"], bad) for e in events)
    (first,) = handle.progress()
    assert (first["model_version"], first["scored"], first["failed"], first["pending_unscored"]) == (bad, 0, 8, 8)
    assert "unusable model output" in first["message"]

    good = models.register()  # production moves to a sound version: the waiting rows are scored
    time.sleep(config.streaming.alias_check_seconds)
    more = [kit.events.submission(100 + i) for i in range(2)]
    handle(decoded_batch(kit.spark, config, more, first_offset=100), 1)
    scores = handle.scores()
    assert sorted(s["submission_event_id"] for s in scores) == sorted(e["event_id"] for e in events + more)
    assert {s["model_version"] for s in scores} == {good}
    second = handle.progress()[-1]
    assert "caught up 8 waiting submissions" in second["message"] and second["pending_unscored"] == 0


def test_a_version_that_fails_to_load_keeps_the_previous_one(kit, models, tmp_path):
    import mlflow

    config = kit.config
    good = models.register()
    broken = models.register(alias=None)
    # Take the model file away from the broken version's stored artifacts.
    source = mlflow.MlflowClient().get_model_version_download_uri(config.mlflow.model_name, broken)
    stored = Path(urlparse(source).path)
    removed = list(stored.rglob("model.skops"))
    assert removed, f"no model file under {stored} (download uri {source})"
    for path in removed:
        path.unlink()

    handle = Handler(kit, config, tmp_path)
    handle(decoded_batch(kit.spark, config, [kit.events.submission(0)]), 0)
    models.promote(broken)
    time.sleep(config.streaming.alias_check_seconds)
    handle(decoded_batch(kit.spark, config, [kit.events.submission(1)], first_offset=1), 1)

    progress = handle.progress()
    assert progress[0]["model_status"] == "ok" and progress[0]["model_version"] == good
    assert progress[1]["model_status"] == "load_failed" and progress[1]["model_version"] == good
    assert f"version {broken}" in progress[1]["message"]
    assert {s["model_version"] for s in handle.scores()} == {good} and len(handle.scores()) == 2
