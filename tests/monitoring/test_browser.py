"""The dashboard in headless Chromium: every panel renders with data; a screenshot is kept.

Drives Debian's chromium through chromedriver's W3C WebDriver HTTP API with httpx (no browser
download, no extra Python package).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from learnscore.stack.processes import free_port
from monitoring.app import PANEL_IDS

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

    from monitoring.app import create_dashboard_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_dashboard_app(config), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def open_dashboard(config, driver: WebDriver, screenshot: str, timeout_s: float = 60) -> dict:
    """Serve the dashboard over ``config``'s lake, open it, wait until every panel has drawn (or
    ``timeout_s`` passed); keep a screenshot in test-artifacts/. Returns what the page shows."""
    config = config.model_copy(update={"dashboard": config.dashboard.model_copy(update={"refresh_seconds": 1})})
    server, thread, url = _serve_dashboard(config)
    try:
        driver.get(url)
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
        ARTIFACTS.mkdir(exist_ok=True)
        driver.screenshot(ARTIFACTS / screenshot)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    return {"states": states, "drawn": drawn, "titles": titles, "empty_notes": notes,
            "screenshot": ARTIFACTS / screenshot}


def assert_every_panel_drawn(page: dict) -> None:
    assert page["states"] == {f"panel-{panel_id}": "ok" for panel_id in PANEL_IDS}, page["empty_notes"]
    assert all(count > 0 for count in page["drawn"].values()), page["drawn"]
    assert all(page["titles"])
    assert page["screenshot"].stat().st_size > 10_000


def test_every_panel_renders_with_data_in_chromium(seeded_lake, chromedriver):
    """Seeded tables (each written by its own writer): fast, and every panel's code path drawn."""
    assert_every_panel_drawn(open_dashboard(seeded_lake, chromedriver, "dashboard.png"))
