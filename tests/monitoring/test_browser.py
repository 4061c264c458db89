"""The dashboard in headless Chromium: every panel renders with data; a screenshot is kept.

Drives Debian's chromium through chromedriver's W3C WebDriver HTTP API with httpx (no browser
download, no extra Python package).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from learnscore.core.config import Secrets
from learnscore.core.ports import free_port
from learnscore.monitoring.app import PANEL_IDS
from tests.support import running_endpoint
from tests.support import wait_for as _wait

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1800,3400"]


class WebDriver:
    """The few WebDriver commands the test needs."""

    def __init__(self, base: str, user_data_dir: Path):
        self.base = base
        answer = httpx.post(f"{base}/session", timeout=60, json={"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": shutil.which("chromium"),
                                   "args": [*CHROME_FLAGS, f"--user-data-dir={user_data_dir}"]}}}})
        answer.raise_for_status()
        self.session = f"{base}/session/{answer.json()['value']['sessionId']}"

    def get(self, url: str) -> None:
        httpx.post(f"{self.session}/url", json={"url": url}, timeout=60).raise_for_status()

    def script(self, source: str):
        answer = httpx.post(f"{self.session}/execute/sync", json={"script": source, "args": []}, timeout=30)
        answer.raise_for_status()
        return answer.json()["value"]

    def screenshot(self, path: Path) -> None:
        answer = httpx.get(f"{self.session}/screenshot", timeout=30)
        answer.raise_for_status()
        path.write_bytes(base64.b64decode(answer.json()["value"]))

    def quit(self) -> None:
        httpx.delete(self.session, timeout=30)


@pytest.fixture
def chromedriver(tmp_path):
    if not shutil.which("chromedriver") or not shutil.which("chromium"):
        pytest.fail("chromium and chromedriver are needed: apt-get install -y chromium chromium-driver")
    port = free_port()
    process = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/status", timeout=2).json()["value"]["ready"]:
                break
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("chromedriver did not start")
        time.sleep(0.2)
    driver = WebDriver(base, tmp_path / "chrome-profile")
    try:
        yield driver
    finally:
        driver.quit()
        process.terminate()
        process.wait(timeout=15)


def _serve_dashboard(config):
    import uvicorn

    from learnscore.monitoring.app import create_dashboard_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_dashboard_app(config), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def log_in(driver: WebDriver, url: str, api_key: str) -> None:
    """Open the dashboard, which sends a browser without a session to its login page, and log in
    there with the API key as a person would (the form sets the session cookie)."""
    def path() -> str | None:
        try:
            return driver.script("return document.readyState === 'complete' ? location.pathname : null")
        except httpx.HTTPStatusError:  # the page is navigating
            return None

    driver.get(url)
    assert _wait(path, 30, "the login page") == "/login"
    driver.script(f"document.getElementById('key').value = {json.dumps(api_key)}; document.forms[0].submit();")
    _wait(lambda: path() == "/", 30, "the dashboard after logging in")


def open_dashboard(config, driver: WebDriver, screenshot: str, timeout_s: float = 60) -> dict:
    """Serve the dashboard over ``config``'s lake, open it, wait until every panel has drawn (or
    ``timeout_s`` passed); keep a screenshot in test-artifacts/. Returns what the page shows."""
    config = config.model_copy(update={"dashboard": config.dashboard.model_copy(update={"refresh_seconds": 1})})
    server, thread, url = _serve_dashboard(config)
    try:
        log_in(driver, url, Secrets(config).api_key.get_secret_value())
        deadline = time.monotonic() + timeout_s
        states = {}
        while time.monotonic() < deadline:
            states = driver.script(
                "return Object.fromEntries([...document.querySelectorAll('section.panel')]"
                ".map(s => [s.id, s.dataset.state]))")
            if states and all(state == "ok" for state in states.values()):
                break
            time.sleep(0.5)
        drawn = driver.script(
            "return Object.fromEntries([...document.querySelectorAll('section.panel')].map(s => [s.id, "
            "s.querySelectorAll('svg.chart path.series, svg.chart rect.bar, svg.chart circle.event').length]))")
        titles = driver.script("return [...document.querySelectorAll('section.panel h2')].map(h => h.textContent)")
        notes = driver.script(
            "return Object.fromEntries([...document.querySelectorAll('section.panel')].map(s => [s.id, "
            "(s.querySelector('.empty') || {}).textContent || '']))")
        endpoint_tile = driver.script(
            "const t = document.querySelector('#panel-endpoint .tile b'); return t ? t.textContent : null")
        ARTIFACTS.mkdir(exist_ok=True)
        driver.screenshot(ARTIFACTS / screenshot)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    return {"states": states, "drawn": drawn, "titles": titles, "empty_notes": notes,
            "endpoint_tile": endpoint_tile,
            "screenshot": ARTIFACTS / screenshot}


def assert_every_panel_drawn(page: dict) -> None:
    assert page["states"] == {f"panel-{panel_id}": "ok" for panel_id in PANEL_IDS}, page["empty_notes"]
    assert all(count > 0 for count in page["drawn"].values()), page["drawn"]
    assert all(page["titles"])
    assert page["screenshot"].stat().st_size > 10_000


def test_every_panel_renders_with_data_in_chromium(seeded_lake, chromedriver):
    """Seeded tables (each written by its own writer): fast, and every panel's code path drawn."""
    assert_every_panel_drawn(open_dashboard(seeded_lake, chromedriver, "dashboard.png"))


# -- the dashboard on data written by a short real run -------------------------------------------

#: Panels whose tables the drift detectors write (ops.drift_events, ops.drift_metrics); the
#: short run below has no drift part yet, so they must show their empty state, not an error.
NOT_WRITTEN_BY_THE_RUN = ("drift_events", "drift_metrics")


def _endpoint_traffic(config, base: str, events: list[dict], pause_s: float, statuses: list[int]) -> None:
    """Scored, refused and unauthorised requests, like real clients, one every ``pause_s``."""
    from learnscore.core.config import Secrets

    headers = {"X-API-Key": Secrets(config).api_key.get_secret_value()}
    with httpx.Client(base_url=base, timeout=30) as client:
        for index, event in enumerate(events):
            if index % 10 == 3:
                answer = client.post("/v1/score", json={**event, "subject": "art"}, headers=headers)
            elif index % 10 == 7:
                answer = client.post("/v1/score", json=event)
            else:
                answer = client.post("/v1/score", json=event, headers=headers)
            statuses.append(answer.status_code)
            time.sleep(pause_s)


def _rows_read(config) -> int:
    from learnscore.core.lake import read_table

    progress = read_table(config, "ops.stream_progress", columns=["query", "rows_read"])
    return int(progress[progress["query"] == "land"]["rows_read"].sum())


@pytest.mark.slow
def test_every_panel_renders_with_data_from_a_real_run(spark, config, mlflow_store, small_history,
                                                         small_history_events, fitted_model, chromedriver):
    """simulator → Kafka → the real stream → Delta; requests through the real endpoint; the page."""
    import mlflow

    from learnscore.batch.importer import import_history
    from learnscore.core.lake import read_table
    from learnscore.core.tracking import use_mlflow
    from learnscore.model.features import model_input_from_events
    from learnscore.model.packaging import log_diagnostic_model
    from learnscore.registry.promote import promote
    from learnscore.registry.register import register_version
    from learnscore.schemas import topics
    from learnscore.simulator import settings_from_config
    from learnscore.simulator.stream import StreamOptions, stream_to_kafka
    from learnscore.streaming.job import start_scorer

    config = config.model_copy(update={
        "streaming": config.streaming.model_copy(update={"trigger_seconds": 0.5, "alias_check_seconds": 0.5}),
        # Every refused request logged (in production a sample of the 401s is), so the run can
        # wait for each request it sent.
        "serving": config.serving.model_copy(update={"port": free_port(), "alias_check_seconds": 0.5,
                                                     "refusal_log_share": 1.0}),
    })
    submissions = small_history_events[0]
    # The first model through the real lifecycle: the history in silver (the gates' labelled
    # window), logged as training logs it, registered as staging, promoted by the gates.
    import_history(spark, config, small_history)
    use_mlflow(config)
    with mlflow.start_run(run_name="dashboard-real-run"):
        model_uri = log_diagnostic_model(fitted_model, model_input_from_events(submissions[:3]))
    version = register_version(config, model_uri, tags={"trigger": "test"}, metrics={}, actor="test",
                               reason="first model of the dashboard's real run")
    promote(config, version, actor="test", reason="gates passed in the dashboard's real run")

    scorer = start_scorer(spark, config)
    statuses: list[int] = []
    try:
        with running_endpoint(config, wait_ready=True) as endpoint:
            # Requests through the real endpoint while the simulator streams live learners.
            traffic = threading.Thread(target=_endpoint_traffic,
                                       args=(config, endpoint, submissions[2000:2080], 0.1, statuses))
            traffic.start()
            live = stream_to_kafka(config, StreamOptions(
                rate=40, duration_s=6, invalid_ratio=0.05, outcome_delay_s=2, seed=5,
                progress_interval_s=60, settings=settings_from_config(config)))
            traffic.join()
            assert not live.failed and sorted(set(statuses)) == [200, 401, 422]
            sent = live.messages(topics.SUBMISSIONS) + live.messages(topics.OUTCOMES) + len(statuses)
            _wait(lambda: _rows_read(config) >= sent
                  and len(read_table(config, "ops.endpoint_requests", columns=["request_id"])) == len(statuses),
                  600, f"the stream to read the {sent} messages of the run", scorer=scorer)
            scorer.stop()
            page = open_dashboard(config, chromedriver, "dashboard-real-run.png")  # the endpoint still up
    finally:
        scorer.stop()

    written = [panel_id for panel_id in PANEL_IDS if panel_id not in NOT_WRITTEN_BY_THE_RUN]
    assert {panel_id: page["states"][f"panel-{panel_id}"] for panel_id in written} == dict.fromkeys(written, "ok"), \
        page["empty_notes"]
    assert all(page["drawn"][f"panel-{panel_id}"] > 0 for panel_id in written), page["drawn"]
    assert {page["states"][f"panel-{panel_id}"] for panel_id in NOT_WRITTEN_BY_THE_RUN} == {"empty"}
    assert page["endpoint_tile"] == "ready"
    assert page["screenshot"].stat().st_size > 10_000
