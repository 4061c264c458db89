"""The dashboard's JSON over real Delta tables: empty tables, full tables, tables being written."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from learnscore.monitoring.app import PANEL_IDS, create_dashboard_app

pytestmark = pytest.mark.integration


def _key(config) -> dict[str, str]:
    from learnscore.core.config import Secrets

    return {"X-API-Key": Secrets(config).api_key.get_secret_value()}


def _panels(config) -> dict[str, dict]:
    with TestClient(create_dashboard_app(config), headers=_key(config)) as client:
        answer = client.get("/api/panels")
    assert answer.status_code == 200
    return {panel["id"]: panel for panel in answer.json()["panels"]}


def test_missing_tables_show_empty_panels_not_errors(config):
    panels = _panels(config)
    assert tuple(panels) == PANEL_IDS
    assert {panel["state"] for panel in panels.values()} == {"empty"}
    assert panels["scores"]["note"] == "no predictions yet"
    assert panels["model_versions"]["note"] == ("no estimates yet: the retrain worker estimates every 300 s "
                                                "(estimation.interval_seconds)")
    assert panels["endpoint"]["tiles"][0] == {"label": "endpoint", "value": "down", "tone": "bad"}


def test_every_panel_has_data_from_the_tables(seeded_lake):
    panels = _panels(seeded_lake)
    assert {panel_id: panel["state"] for panel_id, panel in panels.items()} == dict.fromkeys(PANEL_IDS, "ok")
    tiles = {tile["label"]: tile["value"] for tile in panels["requests"]["tiles"]}
    assert tiles["attempts"] == 300
    versions = panels["versions"]["charts"][0]
    assert versions["categories"] == ["v1", "v2"]
    assert panels["scores"]["tiles"][0] == {"label": "predictions", "value": 400}
    assert sum(panels["scores"]["charts"][0]["series"][0]["values"]) == 400
    assert [p["group"] for p in panels["lifecycle"]["charts"][0]["points"]] == [
        "ModelRegistered", "ModelPromoted", "ModelRegistered", "ModelPromoted", "ModelRolledBack"]
    assert panels["live_error"]["charts"][1]["categories"] == ["v1", "v2", "v3 staging"]
    assert len(panels["drift_events"]["charts"][0]["points"]) == 3


def test_the_model_versions_panel_shows_scored_estimated_realized_and_the_moves(seeded_lake):
    from learnscore.core.lake import read_table

    panel = _panels(seeded_lake)["model_versions"]
    tiles = {tile["label"]: tile["value"] for tile in panel["tiles"]}
    assert tiles["v1 scored"] == 240 and tiles["v2 scored"] == 160
    assert tiles["v1 newest window: macro-F1 estimated / realized"] == "0.690 / –"
    assert tiles["v2 newest window: macro-F1 estimated / realized"] == "0.740 / –"
    shadow = read_table(seeded_lake, "gold.shadow_prediction_outcomes", columns=["event_id"])
    outcomes = read_table(seeded_lake, "gold.prediction_outcomes", columns=["event_id", "abs_error"])
    production = outcomes[outcomes["event_id"].isin(shadow["event_id"])]["abs_error"].mean()
    assert tiles["same 20 learners: MAE production vs v3 staging"] == f"{production:.3g} vs {production + 1:.3g}"

    charts = {chart["title"]: chart for chart in panel["charts"]}
    assert list(charts) == [
        "submissions scored per 15s, by version",
        "v1 macro-F1 per 5-min window: estimated vs realized", "v1 MAE per 5-min window: estimated vs realized",
        "v2 macro-F1 per 5-min window: estimated vs realized", "v2 MAE per 5-min window: estimated vs realized"]
    scored = charts["submissions scored per 15s, by version"]
    assert [s["name"] for s in scored["series"]] == ["v1", "v2"]
    assert [sum(s["values"]) for s in scored["series"]] == [240, 160]
    f1 = charts["v1 macro-F1 per 5-min window: estimated vs realized"]
    assert f1["x"] == ["2026-11-20T09:00:00Z", "2026-11-20T09:05:00Z"]  # segment "all" only
    assert {s["name"]: s["values"] for s in f1["series"]} == {"estimated": [0.7, 0.69], "realized": [0.72, None]}
    mae = charts["v1 MAE per 5-min window: estimated vs realized"]
    assert {s["name"]: s["values"] for s in mae["series"]} == {"estimated": [5.1, 5.3], "realized": [5.4, None]}
    assert charts["v2 MAE per 5-min window: estimated vs realized"]["x"] == ["2026-11-20T09:05:00Z"]
    # Promotions and rollbacks inside each chart's time span; v1's promotion came before all of them.
    moves = [("2026-11-20T09:06:30Z", "promoted", "v2 promoted"),
             ("2026-11-20T09:09:00Z", "rolled_back", "v2 rolled back to v1")]
    for chart in panel["charts"]:
        assert [(m["t"], m["kind"], m["label"]) for m in chart["markers"]] == moves, chart["title"]
    assert panel["charts"][0]["markers"][1]["detail"] == "estimated MAE 9.10 vs 5.30"
    assert panel["note"] == ""


def test_the_model_versions_panel_says_when_estimation_is_off(config):
    from learnscore.monitoring.panels import model_versions_panel
    from learnscore.monitoring.tables import TableReader

    reader = TableReader(config)
    tables = [reader.read(name) for name in ("gold.predictions", "ops.estimated_performance", "ops.model_events",
                                             "gold.prediction_outcomes")]
    panel = model_versions_panel(*tables, None, 120, 60, estimation_interval_s=0)
    assert panel["state"] == "empty" and "scheduled estimation is off" in panel["note"]


def test_reads_keep_working_while_a_table_is_appended(seeded_lake):
    from datetime import datetime, timedelta, timezone

    from learnscore.core.lake import append_rows

    app = create_dashboard_app(seeded_lake)
    failures: list[int] = []
    stop = threading.Event()

    def write() -> None:
        for n in range(15):
            append_rows(seeded_lake, "ops.model_events", [{
                "event_id": f"x{n}", "occurred_at": datetime(2026, 11, 21, tzinfo=timezone.utc)
                + timedelta(seconds=n), "event_type": "ModelPromoted", "model_name": "m", "version": str(n),
                "alias": "production", "actor": "test", "reason": "concurrent write"}])
        stop.set()

    writer = threading.Thread(target=write)
    with TestClient(app, headers=_key(seeded_lake)) as client:
        writer.start()
        reads = 0
        while not stop.is_set() or reads < 3:
            answer = client.get("/api/panels")
            reads += 1
            if answer.status_code != 200:
                failures.append(answer.status_code)
        writer.join()
        final = {p["id"]: p for p in client.get("/api/panels").json()["panels"]}
    assert failures == []
    assert len(final["lifecycle"]["charts"][0]["points"]) == 5 + 15


def test_only_holders_of_the_api_key_see_the_panels(config):
    from learnscore.monitoring.access import SESSION_COOKIE

    key = _key(config)["X-API-Key"]
    with TestClient(create_dashboard_app(config), follow_redirects=False) as client:
        refused = {path: client.get(path) for path in ("/", "/api/panels", "/static/charts.js")}
        open_paths = [client.get("/healthz").status_code, client.get("/login").status_code]
        wrong = client.post("/login", data={"key": "x" * 40})
        assert SESSION_COOKIE not in client.cookies
        bearer = client.get("/api/panels", headers={"Authorization": f"Bearer {key}"}).status_code
        logged_in = client.post("/login", data={"key": key})
        session = client.cookies.get(SESSION_COOKIE)
        after_login = [client.get(path).status_code for path in ("/", "/api/panels", "/static/charts.js")]
        client.get("/logout")
        after_logout = client.get("/api/panels").status_code

    assert refused["/"].status_code == 303 and refused["/"].headers["location"] == "/login"
    assert [refused[p].status_code for p in ("/api/panels", "/static/charts.js")] == [401, 401]
    assert refused["/api/panels"].json()["error"] == "unauthorised" and key not in refused["/api/panels"].text
    assert open_paths == [200, 200]
    assert wrong.status_code == 401 and "not the API key" in wrong.text
    assert bearer == 200
    assert logged_in.status_code == 303 and logged_in.headers["location"] == "/"
    assert session and key not in session  # an HMAC of the key, not the key
    assert "httponly" in logged_in.headers["set-cookie"].lower()
    assert "samesite=strict" in logged_in.headers["set-cookie"].lower()
    assert after_login == [200, 200, 200]
    assert after_logout == 401
