"""Headless Chromium for the dashboard tests: Debian's chromium through chromedriver's W3C
WebDriver HTTP API with httpx (no browser download, no extra Python package)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from learnscore.core.config import Secrets
from learnscore.core.ports import free_port
from learnscore.monitoring.app import PANEL_IDS
from tests.support import wait_for as _wait

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
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


@contextmanager
def chromedriver_session(profile_dir: Path) -> Iterator[WebDriver]:
    """chromedriver on a free port and one headless Chromium session; both ended on exit."""
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
    driver = WebDriver(base, profile_dir)
    try:
        yield driver
    finally:
        driver.quit()
        process.terminate()
        process.wait(timeout=15)


def serve_dashboard(config):
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
    """Serve the dashboard over ``config``'s lake, open it, wait until every panel has drawn or
    said why not (or ``timeout_s`` passed); keep a screenshot in test-artifacts/. Returns what the page shows."""
    config = config.model_copy(update={"dashboard": config.dashboard.model_copy(update={"refresh_seconds": 1})})
    server, thread, url = serve_dashboard(config)
    try:
        log_in(driver, url, Secrets(config).api_key.get_secret_value())
        deadline = time.monotonic() + timeout_s
        states = {}
        while time.monotonic() < deadline:
            states = driver.script(
                "return Object.fromEntries([...document.querySelectorAll('section.panel')]"
                ".map(s => [s.id, s.dataset.state]))")
            if states and all(state not in ("loading", None) for state in states.values()):
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
