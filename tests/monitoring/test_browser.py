"""The dashboard in headless Chromium: every panel renders with data; a screenshot is kept.

Seeded tables here; the same check on the tables of a real run (the live demo, drift and a
promotion included) is in tests/e2e/test_fast_demo.py.
"""

from __future__ import annotations

import pytest

from tests.browser import assert_every_panel_drawn, chromedriver_session, open_dashboard

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture
def chromedriver(tmp_path):
    with chromedriver_session(tmp_path / "chrome-profile") as driver:
        yield driver


def test_every_panel_renders_with_data_in_chromium(seeded_lake, chromedriver):
    """Seeded tables (each written by its own writer): fast, and every panel's code path drawn."""
    assert_every_panel_drawn(open_dashboard(seeded_lake, chromedriver, "dashboard.png"))
