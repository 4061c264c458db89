"""End to end: `learnscore demo --fast` as a user runs it, checked against the tables.

The demo runs as a real subprocess of the installed wheel (``installed_learnscore``), from an
empty folder outside the checkout, with its own state folder and its own free ports for the
MLflow UI, the endpoint and the dashboard; it uses the test broker (the one `make test` runs,
or the session's own) through ``kafka.bootstrap_servers`` and its own per-run topics. The
assertions read Delta (``deltalake``) and the MLflow registry, and compare them with what the
simulator reported it sent (``<state>/demo/stream-report.json``: the ids of the valid
submissions, and the broken events per reason).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from learnscore.core.ports import free_port
from learnscore.monitoring.app import PANEL_IDS
from tests.browser import chromedriver_session, open_dashboard

# Bounds, not goals: --fast takes about 3 minutes on an idle 2-core machine, far longer on a busy one.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[2]


def _demo_environ(state: Path, kafka_broker: str) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith(("LEARNSCORE__", "MLFLOW_", "PYTHONPATH"))}
    environ.update({
        "LEARNSCORE__STATE_DIR": str(state),
        # the jars the checkout resolved (`learnscore jars` from an empty folder: test_wheel.py)
        "LEARNSCORE__SPARK__JARS_DIR": str(ROOT / ".cache" / "jars" / "spark"),
        "LEARNSCORE__BROKER__JARS_DIR": str(ROOT / ".cache" / "jars" / "kafka"),
        "LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS": kafka_broker,
        "LEARNSCORE__MLFLOW__UI_PORT": str(free_port()),
        "LEARNSCORE__SERVING__PORT": str(free_port()),
        "LEARNSCORE__DASHBOARD__PORT": str(free_port()),
    })
    return environ


def story_problems(config, sent: dict, first_version: str) -> list[str]:
    """Everything the tables and the registry say that contradicts the story (empty: it happened).

    ``sent`` is the simulator's report as the demo saved it.
    """
    from mlflow.tracking import MlflowClient

    from learnscore.core.lake import read_table

    problems: list[str] = []
    # v1 became production first, then exactly one newer version (see the test for why one).
    moves = read_table(config, "ops.model_events")
    moves = moves[(moves["alias"] == "production") & (moves["event_type"] == "ModelPromoted")]
    order = moves.sort_values("occurred_at")["version"].tolist()
    if order != [first_version, str(int(first_version) + 1)]:
        problems.append(f"production moves were {order}, expected [{first_version}, "
                        f"{int(first_version) + 1}]")
    client = MlflowClient(config.mlflow.tracking_uri, config.registry_uri)
    production = str(client.get_model_version_by_alias(config.mlflow.model_name, "production").version)
    second = str(int(first_version) + 1)
    if production != second:
        problems.append(f"production is v{production} in the registry, expected v{second}")

    drift = read_table(config, "ops.drift_events")
    if drift.empty:
        problems.append("ops.drift_events is empty: no drift was detected")
    runs = read_table(config, "ops.retrain_runs")
    final = runs[~runs["status"].isin(["started", "covered"])]
    # An attempt that failed and was tried again by the same run, which then succeeded, is the
    # worker doing its job on a loaded machine (one version, every request answered), not a second run.
    succeeded = set(final.loc[final["status"] == "succeeded", "run_id"])
    final = final[~((final["status"] == "attempt_failed") & final["run_id"].isin(succeeded))]
    # Segments may detect the shift a minute apart on a busy machine: a request that comes after
    # the run is answered by its version (recorded as covered), not trained again.
    covered = runs[runs["status"] == "covered"]
    if final["status"].tolist() != ["succeeded"] or final["model_version"].tolist() != [second]:
        problems.append(f"retrain runs {final[['status', 'model_version']].values.tolist()}, "
                        f"expected one succeeded run registering v{second}; their messages: "
                        f"{final.sort_values('started_at')['message'].tolist()}")
    elif set(covered["model_version"]) - {second}:
        problems.append(f"requests covered by versions {sorted(set(covered['model_version']))}, expected v{second}")
    else:
        answered = set(json.loads(final["request_ids"].iloc[0]))
        answered |= {i for ids in covered["request_ids"] for i in json.loads(ids)}
        if not set(drift["request_id"].dropna()) <= answered:
            problems.append("a drift event's retrain request was neither served by the run nor covered by it")

    predictions = read_table(config, "gold.predictions", columns=["event_id", "model_version",
                                                                  "batch_id"])
    valid = set(sent["valid_submission_ids"])
    live = predictions[predictions["event_id"].isin(valid)]
    times = live["event_id"].value_counts()
    missing = valid - set(live["event_id"])
    if missing:
        problems.append(f"{len(missing)} valid submissions were never scored, e.g. "
                        f"{sorted(missing)[:3]}")
    if (times > 1).any():
        problems.append(f"{int((times > 1).sum())} valid submissions were scored more than once")
    by_version = live["model_version"].value_counts().to_dict()
    if not by_version.get(first_version) or not by_version.get(second):
        problems.append(f"live rows by version {by_version}: expected rows of v{first_version} "
                        f"and v{second}")
    # One hot swap: ordered by micro-batch, the versions go v1 … v1, v2 … v2.
    swaps = live.sort_values("batch_id")["model_version"].drop_duplicates().tolist()
    if swaps != [first_version, second][:len(swaps)]:
        problems.append(f"versions in batch order {swaps}: not one swap from v1 to v2")

    quarantine = read_table(config, "silver.quarantine",
                            columns=["source_topic", "reason_code", "event_id"])
    for base, topic in sent["topics"].items():
        got = quarantine[quarantine["source_topic"] == topic]["reason_code"].value_counts().to_dict()
        expected = sent["expected_quarantine"][base]
        if got != expected:
            problems.append(f"quarantine of {topic}: {got}, expected {expected}")
    return problems


def test_fast_demo_tells_the_whole_story(kafka_broker, installed_learnscore, tmp_path):
    from learnscore.core.config import load_config

    state, empty = tmp_path / "state", tmp_path / "empty"
    empty.mkdir()
    environ = _demo_environ(state, kafka_broker)
    finished = subprocess.run([str(installed_learnscore), "demo", "--fast"], cwd=empty,
                              env=environ, capture_output=True, text=True, timeout=1700)
    output = finished.stdout + finished.stderr
    worker_log = state / "logs" / "retrain-worker.log"
    lines = worker_log.read_text().splitlines() if worker_log.exists() else []
    first = next((i for i, line in enumerate(lines) if "retrain request" in line), 0)
    assert finished.returncode == 0, "\n".join([f"demo exited {finished.returncode}:", output[-6000:],
                                                "retrain-worker.log from its first request:",
                                                *lines[first:first + 150]])
    for line in ("[1/5]", "[4/5]", "[5/5]", "dashboard      http://", "MLflow UI      http://",
                 "endpoint       http://", "the story is complete", "stopped the MLflow UI"):
        assert line in output, f"{line!r} missing from the demo's output:\n{output[-4000:]}"

    run = json.loads((state / "demo" / "run.json").read_text())
    config = load_config(environ={**environ, **run["settings"]})
    sent = json.loads((state / "demo" / "stream-report.json").read_text())
    assert sent["submissions"] == len(sent["valid_submission_ids"]) > 0
    assert sum(sum(r.values()) for r in sent["expected_quarantine"].values()) > 0
    assert run["first_version"] == "1"
    # Exactly one retrain run trains: each of the three segments (one grade band in --fast) asks
    # once (a one-hour cooldown); requests 10 s apart fold into one burst, and a request made
    # before that run's data ended is answered by its version (covered); the demo stops 5 s
    # after v2 scores.
    problems = story_problems(config, sent, run["first_version"])
    assert problems == [], "\n".join([*problems, "retrain-worker.log from its first request:",
                                       *lines[first:first + 150]])

    # The check can fail: a submission the simulator sent that no table holds is reported.
    doctored = {**sent, "valid_submission_ids": [*sent["valid_submission_ids"], "not-scored"]}
    assert any("never scored" in p for p in story_problems(config, doctored, "1"))

    # The dashboard over the run's tables, in Chromium: every panel the run writes draws
    # (ops.drift_metrics is written by `learnscore monitor drift`, which the demo does not run).
    with chromedriver_session(tmp_path / "chrome-profile") as driver:
        page = open_dashboard(config, driver, "dashboard-demo.png")
    written = [panel_id for panel_id in PANEL_IDS if panel_id != "drift_metrics"]
    assert {panel_id: page["states"][f"panel-{panel_id}"] for panel_id in written} == \
        dict.fromkeys(written, "ok"), page["empty_notes"]
    assert all(page["drawn"][f"panel-{panel_id}"] > 0 for panel_id in written), page["drawn"]
    assert page["states"]["panel-drift_metrics"] == "empty"

    # Nothing the demo started is left running.
    leftovers = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(state) not in leftovers, [line for line in leftovers.splitlines() if str(state) in line]
