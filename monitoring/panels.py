"""The dashboard's panels as plain data: pure functions from table frames to chart specs.

Each panel is ``{"id", "title", "state": "ok" | "empty", "note", "tiles", "charts"}``; the page
draws the charts (line, bar, events) without knowing where the numbers came from.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from learnscore.schemas.events import LEVELS

Panel = dict[str, Any]


def _iso(values) -> list[str]:
    return [pd.Timestamp(value).strftime("%Y-%m-%dT%H:%M:%SZ") for value in values]


def _numbers(values) -> list[float | None]:
    return [None if value is None or (isinstance(value, float) and not math.isfinite(value))
            else round(float(value), 4) for value in values]


def _empty(panel_id: str, title: str, note: str, tiles: list[dict] | None = None) -> Panel:
    return {"id": panel_id, "title": title, "state": "empty", "note": note, "tiles": tiles or [], "charts": []}


def _ok(panel_id: str, title: str, charts: list[dict], tiles: list[dict] | None = None, note: str = "") -> Panel:
    return {"id": panel_id, "title": title, "state": "ok", "note": note, "tiles": tiles or [], "charts": charts}


def window(frame: pd.DataFrame, column: str, minutes: int) -> pd.DataFrame:
    """Rows in the last ``minutes`` before the newest row (so a paused demo still shows its data).

    >>> f = pd.DataFrame({"t": pd.to_datetime(["2026-01-01 10:00", "2026-01-01 12:00"], utc=True)})
    >>> len(window(f, "t", 60))
    1
    """
    frame = frame[frame[column].notna()]
    if frame.empty:
        return frame
    times = pd.to_datetime(frame[column], utc=True)
    return frame[times >= times.max() - pd.Timedelta(minutes=minutes)]


def bucket_seconds(times: pd.Series, largest: int, points: int = 40) -> int:
    """A bucket size that gives about ``points`` points over the span, at most ``largest`` seconds.

    >>> t = pd.Series(pd.to_datetime(["2026-01-01 10:00:00", "2026-01-01 10:02:00"], utc=True))
    >>> bucket_seconds(t, 60)
    3
    """
    if times.empty:
        return largest
    span = (times.max() - times.min()).total_seconds()
    return int(max(1, min(largest, math.ceil(span / points))))


def _bucket(frame: pd.DataFrame, column: str, seconds: int) -> pd.Series:
    return pd.to_datetime(frame[column], utc=True).dt.floor(f"{seconds}s")


def requests_panel(requests: pd.DataFrame, minutes: int, largest_bucket: int) -> Panel:
    """Attempts, successes and error rate over time (ops.endpoint_requests)."""
    title = "Endpoint requests: attempts, successes, error rate"
    frame = window(requests, "received_at", minutes)
    if frame.empty:
        return _empty("requests", title, "no endpoint requests logged yet")
    seconds = bucket_seconds(pd.to_datetime(frame["received_at"], utc=True), largest_bucket)
    status = frame["status_code"].astype(int)
    grouped = pd.DataFrame({"bucket": _bucket(frame, "received_at", seconds),
                            "ok": status.between(200, 299), "client": status.between(400, 499),
                            "server": status >= 500}).groupby("bucket")
    counts = grouped.agg(attempts=("ok", "size"), successes=("ok", "sum"),
                         client_errors=("client", "sum"), server_errors=("server", "sum"))
    rate = 1 - counts["successes"] / counts["attempts"]
    total = len(frame)
    successes = int(status.between(200, 299).sum())
    x = _iso(counts.index)
    return _ok("requests", title, [
        {"type": "line", "title": f"requests per {seconds}s", "x": x, "series": [
            {"name": "attempts", "values": _numbers(counts["attempts"])},
            {"name": "successes", "values": _numbers(counts["successes"])},
            {"name": "4xx", "values": _numbers(counts["client_errors"])},
            {"name": "5xx", "values": _numbers(counts["server_errors"])}]},
        {"type": "line", "title": "error rate (share not 2xx)", "x": x, "percent": True,
         "series": [{"name": "error rate", "values": _numbers(rate)}]},
    ], tiles=[{"label": "attempts", "value": total}, {"label": "successes", "value": successes},
              {"label": "error rate", "value": f"{(1 - successes / total):.1%}"}])


def endpoint_panel(requests: pd.DataFrame, probe: dict[str, Any], minutes: int, largest_bucket: int) -> Panel:
    """Endpoint up/down (a live /readyz probe) and latency p50/p95/p99 over time."""
    title = "Endpoint status and latency"
    up = probe.get("up", False)
    tiles = [{"label": "endpoint", "value": probe.get("status", "down"), "tone": "good" if up else "bad"},
             {"label": "serving version", "value": probe.get("version") or "–"},
             {"label": "registry", "value": probe.get("registry", "–")}]
    frame = window(requests, "received_at", minutes)
    frame = frame[frame["latency_ms"].notna()]
    if frame.empty:
        return _empty("endpoint", title, "no request latencies logged yet", tiles)
    seconds = bucket_seconds(pd.to_datetime(frame["received_at"], utc=True), largest_bucket)
    grouped = frame.assign(bucket=_bucket(frame, "received_at", seconds)).groupby("bucket")["latency_ms"]
    quantiles = grouped.quantile([0.5, 0.95, 0.99]).unstack()
    overall = frame["latency_ms"].quantile([0.5, 0.95, 0.99]).tolist()
    tiles += [{"label": f"p{q}", "value": f"{value:.1f} ms"} for q, value in zip((50, 95, 99), overall)]
    return _ok("endpoint", title, [
        {"type": "line", "title": "latency (ms)", "x": _iso(quantiles.index), "series": [
            {"name": "p50", "values": _numbers(quantiles[0.5])},
            {"name": "p95", "values": _numbers(quantiles[0.95])},
            {"name": "p99", "values": _numbers(quantiles[0.99])}]},
    ], tiles=tiles)


def versions_panel(requests: pd.DataFrame, minutes: int) -> Panel:
    """Successes and error rate per model version."""
    title = "Per-version successes and error rate"
    frame = window(requests, "received_at", minutes)
    frame = frame[frame["model_version"].notna()]
    if frame.empty:
        return _empty("versions", title, "no request was routed to a model yet")
    status = frame["status_code"].astype(int)
    per = (pd.DataFrame({"version": frame["model_version"].astype(str), "ok": status.between(200, 299)})
           .groupby("version")["ok"].agg(["size", "sum"]))
    per = per.loc[sorted(per.index, key=_version_key)]
    rate = 1 - per["sum"] / per["size"]
    categories = [f"v{version}" for version in per.index]
    return _ok("versions", title, [
        {"type": "bar", "title": "successes", "categories": categories,
         "series": [{"name": "successes", "values": _numbers(per["sum"])},
                    {"name": "failures", "values": _numbers(per["size"] - per["sum"])}]},
        {"type": "bar", "title": "error rate", "categories": categories, "percent": True,
         "series": [{"name": "error rate", "values": _numbers(rate)}]},
    ])


def stream_panel(progress: pd.DataFrame, quarantine: pd.DataFrame, minutes: int) -> Panel:
    """Stream throughput, the two latencies and the quarantine rate (ops.stream_progress).

    The landing query reads every message once: its batches give throughput and quarantine;
    the scoring query's give the event → score latency and the rows waiting for a model; the
    gold query's the event → gold latency.
    """
    title = "Stream: throughput, score and gold latency, quarantine rate"
    frame = window(progress, "started_at", minutes).sort_values("started_at")
    if "query" in frame.columns:
        landing = frame[frame["query"] == "land"]
        scoring, gold = frame[frame["query"] == "score"], frame[frame["query"] == "gold"]
    else:  # rows written before the stream was split in queries
        landing = scoring = gold = frame
    if landing.empty:
        return _empty("stream", title, "the streaming scorer has not finished a micro-batch yet")
    frame = landing
    duration = frame["duration_s"].astype(float).clip(lower=1e-3)
    rows = frame["rows_read"].fillna(0).astype(float)
    throughput = rows / duration
    quarantine_rate = (frame["quarantined"].fillna(0).astype(float) / rows.where(rows > 0)).fillna(0)
    x = _iso(frame["started_at"])
    charts = [
        {"type": "line", "title": "throughput (rows/s per landing micro-batch)", "x": x,
         "series": [{"name": "rows/s", "values": _numbers(throughput)}]},
        {"type": "line", "title": "event → score latency p95 (s) and rows waiting for a model",
         "x": _iso(scoring["started_at"]), "series": [
            {"name": "score p95 s", "values": _numbers(scoring["latency_p95_s"])},
            {"name": "waiting rows", "values": _numbers(scoring["pending_unscored"])}]},
        {"type": "line", "title": "event → gold latency p95 (s)", "x": _iso(gold["started_at"]),
         "series": [{"name": "gold p95 s", "values": _numbers(gold["latency_p95_s"])}]},
        {"type": "line", "title": "quarantine rate", "x": x, "percent": True,
         "series": [{"name": "quarantined / read", "values": _numbers(quarantine_rate)}]},
    ]
    if not quarantine.empty:
        reasons = quarantine["reason_code"].fillna("unknown").value_counts().head(8)
        charts.append({"type": "bar", "title": "quarantined events by reason (all time)",
                       "categories": list(reasons.index), "series": [{"name": "events", "values": _numbers(reasons)}]})
    total_rows = rows.sum()
    return _ok("stream", title, charts, tiles=[
        {"label": "micro-batches", "value": len(frame)},
        {"label": "rows read", "value": int(total_rows)},
        {"label": "quarantined", "value": int(frame["quarantined"].fillna(0).sum())},
        {"label": "last batch", "value": x[-1]},
    ])


def drift_events_panel(events: pd.DataFrame) -> Panel:
    title = "Drift events"
    frame = events[events["detected_at"].notna()].sort_values("detected_at")
    if frame.empty:
        return _empty("drift_events", title, "no drift detected")
    points = [{"t": t, "group": f"{kind}: {signal}", "label": f"{detector} on {signal} ({segment})",
               "detail": f"mean {_fmt(before)} → {_fmt(after)}" + (" · retrain requested" if request else "")}
              for t, kind, signal, detector, segment, before, after, request in zip(
                  _iso(frame["detected_at"]), frame["kind"].fillna("?"), frame["signal"].fillna("?"),
                  frame["detector"].fillna("?"), frame["segment"].fillna("all"), frame["mean_before"],
                  frame["mean_after"], frame["request_id"])]
    per_signal = frame["signal"].fillna("?").value_counts()
    return _ok("drift_events", title, [
        {"type": "events", "title": "detections over time", "points": points[-200:]},
        {"type": "bar", "title": "detections by signal", "categories": list(per_signal.index),
         "series": [{"name": "detections", "values": _numbers(per_signal)}]},
    ], tiles=[{"label": "detections", "value": len(frame)},
              {"label": "retrain requests", "value": int(frame["request_id"].notna().sum())}])


def drift_metrics_panel(metrics: pd.DataFrame, top: int = 6) -> Panel:
    title = "Drift metrics (PSI per feature)"
    frame = metrics[metrics["psi"].notna()] if not metrics.empty else metrics
    if frame.empty:
        return _empty("drift_metrics", title, "no drift metrics computed yet (learnscore monitor drift)")
    frame = frame.assign(t=pd.to_datetime(frame["window_end"].fillna(frame["computed_at"]), utc=True))
    latest = frame[frame["t"] == frame["t"].max()].groupby("feature")["psi"].max().sort_values(ascending=False)
    features = list(latest.index[:top])
    pivot = frame[frame["feature"].isin(features)].pivot_table(index="t", columns="feature", values="psi",
                                                                aggfunc="max").sort_index()
    return _ok("drift_metrics", title, [
        {"type": "line", "title": "PSI over time (highest features)", "x": _iso(pivot.index),
         "series": [{"name": feature, "values": _numbers(pivot[feature])} for feature in features]},
        {"type": "bar", "title": "latest PSI by feature", "categories": list(latest.index[:12]),
         "series": [{"name": "PSI", "values": _numbers(latest.iloc[:12])}]},
    ], note="PSI above 0.2 usually means a real shift")


def lifecycle_panel(events: pd.DataFrame) -> Panel:
    title = "Model lifecycle"
    frame = events[events["occurred_at"].notna()].sort_values("occurred_at")
    if frame.empty:
        return _empty("lifecycle", title, "no model registered yet")
    points = []
    for t, kind, version, alias, previous, actor, reason in zip(
            _iso(frame["occurred_at"]), frame["event_type"].fillna("?"), frame["version"],
            frame["alias"], frame["previous_version"], frame["actor"], frame["reason"]):
        moved = f" → {alias}" if isinstance(alias, str) and alias else ""
        was = f" (was v{previous})" if isinstance(previous, str) and previous else ""
        points.append({"t": t, "group": kind, "label": f"v{version}{moved}{was}",
                       "detail": f"{actor or '?'}: {(reason or '')[:160]}"})
    return _ok("lifecycle", title, [{"type": "events", "title": "registered, promoted, rolled back",
                                     "points": points[-200:]}],
               tiles=[{"label": kind, "value": count} for kind, count in frame["event_type"].value_counts().items()])


def live_error_panel(outcomes: pd.DataFrame, minutes: int, largest_bucket: int,
                     shadow: pd.DataFrame | None = None) -> Panel:
    """Live error against observed outcomes, by model version (gold.prediction_outcomes), with
    the challengers' (gold.shadow_prediction_outcomes) beside them as "<version> <alias>"."""
    title = "Live error against outcomes, by version (challengers in shadow)"
    frame = outcomes[outcomes["abs_error"].notna()] if not outcomes.empty else outcomes
    if frame.empty:
        return _empty("live_error", title, "no outcomes joined to predictions yet")
    frame = frame.assign(version=frame["model_version"].astype(str))
    challengers = _challengers(shadow)
    frame = pd.concat([frame, challengers], ignore_index=True) if not challengers.empty else frame
    frame = frame.assign(t=pd.to_datetime(frame["joined_at"].fillna(frame["outcome_time"]), utc=True))
    frame = window(frame, "t", minutes)
    seconds = bucket_seconds(frame["t"], largest_bucket)
    frame = frame.assign(bucket=frame["t"].dt.floor(f"{seconds}s"), correct=frame["level_correct"].astype(float))
    mae = frame.pivot_table(index="bucket", columns="version", values="abs_error", aggfunc="mean").sort_index()
    versions = sorted(mae.columns, key=_version_key)
    per = frame.groupby("version").agg(mae=("abs_error", "mean"), accuracy=("correct", "mean"),
                                       n=("abs_error", "size"))
    per = per.loc[sorted(per.index, key=_version_key)]
    return _ok("live_error", title, [
        {"type": "line", "title": f"mean absolute error per {seconds}s", "x": _iso(mae.index),
         "series": [{"name": f"v{version}", "values": _numbers(mae[version])} for version in versions]},
        {"type": "bar", "title": "mean absolute error by version",
         "categories": [f"v{version}" for version in per.index],
         "series": [{"name": "MAE", "values": _numbers(per["mae"])}]},
        {"type": "bar", "title": "level accuracy by version", "percent": True,
         "categories": [f"v{version}" for version in per.index],
         "series": [{"name": "level accuracy", "values": _numbers(per["accuracy"])}]},
    ], tiles=[{"label": f"v{version} n", "value": int(n)} for version, n in per["n"].items()]
       + same_learners_tiles(outcomes, challengers))


_ESTIMATE_WINDOWS_SHOWN = 48  # per version: two days of hourly windows
_VERSIONS_CHARTED = 4  # the newest versions with estimates get their two charts each


def model_versions_panel(predictions: pd.DataFrame, estimates: pd.DataFrame, events: pd.DataFrame,
                         outcomes: pd.DataFrame, shadow: pd.DataFrame | None, minutes: int, largest_bucket: int,
                         estimation_interval_s: float) -> Panel:
    """Per model version: submissions scored (gold.predictions), estimated against realized
    macro-F1 and MAE per window (ops.estimated_performance, segment ``all``), production against
    each challenger on the same learners (the pairs), and promotions and rollbacks
    (ops.model_events) marked on the time axes.

    >>> empty = pd.DataFrame(columns=["model_version", "scored_at", "segment", "event_type"])
    >>> model_versions_panel(empty, empty, empty, empty, None, 60, 60, 300)["note"]
    'no estimates yet: the retrain worker estimates every 300 s (estimation.interval_seconds)'
    """
    title = "Model versions: scored, estimated vs realized performance, promotions and rollbacks"
    waiting = ("no estimates yet: " + (f"the retrain worker estimates every {estimation_interval_s:.0f} s "
                                       "(estimation.interval_seconds)" if estimation_interval_s > 0 else
                                       "scheduled estimation is off (estimation.interval_seconds is 0); run "
                                       "learnscore monitor performance"))
    scored = predictions[predictions["model_version"].notna()] if not predictions.empty else predictions
    overall = (estimates[(estimates["segment"] == "all") & estimates["model_version"].notna()]
               if not estimates.empty else estimates)
    if scored.empty and overall.empty:
        return _empty("model_versions", title, waiting)
    markers = lifecycle_markers(events)
    charts, tiles = [], []
    if not scored.empty:
        frame = window(scored.assign(t=pd.to_datetime(scored["scored_at"], utc=True)), "t", minutes)
        seconds = bucket_seconds(frame["t"], largest_bucket)
        counts = (frame.assign(bucket=frame["t"].dt.floor(f"{seconds}s"), version=frame["model_version"].astype(str))
                  .pivot_table(index="bucket", columns="version", values="t", aggfunc="size", fill_value=0)
                  .sort_index())
        charts.append(_marked({"type": "line", "title": f"submissions scored per {seconds}s, by version",
                               "x": _iso(counts.index),
                               "series": [{"name": f"v{version}", "values": _numbers(counts[version])}
                                          for version in sorted(counts.columns, key=_version_key)]},
                              markers, counts.index.min(), counts.index.max() + pd.Timedelta(seconds=seconds)))
        per_version = scored["model_version"].astype(str).value_counts()
        tiles += [{"label": f"v{version} scored", "value": int(per_version[version])}
                  for version in sorted(per_version.index, key=_version_key)]
    if not overall.empty:
        overall = overall.assign(version=overall["model_version"].astype(str),
                                 start=pd.to_datetime(overall["window_start"], utc=True),
                                 end=pd.to_datetime(overall["window_end"], utc=True)).sort_values("start")
        charted = sorted(overall["version"].unique(), key=_version_key)[-_VERSIONS_CHARTED:]
        for version in charted:
            rows = overall[overall["version"] == version].tail(_ESTIMATE_WINDOWS_SHOWN)
            length = f"{int((rows['end'] - rows['start']).iloc[-1].total_seconds() // 60)}-min"
            for metric, label in (("macro_f1", "macro-F1"), ("mae", "MAE")):
                charts.append(_marked({
                    "type": "line", "title": f"v{version} {label} per {length} window: estimated vs realized",
                    "x": _iso(rows["start"]),
                    "series": [{"name": "estimated", "values": _numbers(rows[f"estimated_{metric}"])},
                               {"name": "realized", "values": _numbers(rows[f"realized_{metric}"])}]},
                    markers, rows["start"].min(), rows["end"].max()))
            newest = rows.iloc[-1]
            tiles.append({"label": f"v{version} newest window: macro-F1 estimated / realized",
                          "value": f"{_three(newest['estimated_macro_f1'])} / {_three(newest['realized_macro_f1'])}"})
    challengers = _challengers(shadow)
    tiles += same_learners_tiles(outcomes[outcomes["abs_error"].notna()] if not outcomes.empty else outcomes,
                                 challengers)
    return _ok("model_versions", title, charts, tiles=tiles, note=waiting if overall.empty else "")


def lifecycle_markers(events: pd.DataFrame) -> list[dict]:
    """Promotions and rollbacks (ops.model_events) as time-axis markers, oldest first.

    >>> t = pd.to_datetime(["2026-11-20 09:00", "2026-11-20 09:30"], utc=True)
    >>> events = pd.DataFrame({"occurred_at": t, "event_type": ["ModelPromoted", "ModelRolledBack"],
    ...                        "version": ["2", "1"], "alias": ["production"] * 2, "previous_version": ["1", "2"],
    ...                        "reason": ["gates passed", "MAE 9.1 vs 5.0"]})
    >>> [(m["t"][11:16], m["kind"], m["label"]) for m in lifecycle_markers(events)]
    [('09:00', 'promoted', 'v2 promoted'), ('09:30', 'rolled_back', 'v2 rolled back to v1')]
    """
    if events.empty:
        return []
    moves = events[events["event_type"].isin(["ModelPromoted", "ModelRolledBack"])
                   & events["occurred_at"].notna()].sort_values("occurred_at", kind="stable")
    markers = []
    for t, kind, version, previous, reason in zip(_iso(moves["occurred_at"]), moves["event_type"], moves["version"],
                                                  moves["previous_version"], moves["reason"]):
        if kind == "ModelPromoted":
            markers.append({"t": t, "kind": "promoted", "label": f"v{version} promoted", "detail": reason or ""})
        else:  # a rollback records the version it restored; previous_version is the one taken back
            markers.append({"t": t, "kind": "rolled_back", "label": f"v{previous} rolled back to v{version}",
                            "detail": reason or ""})
    return markers


def _marked(chart: dict, markers: list[dict], since, until) -> dict:
    """``chart`` with the markers whose time lies in ``[since, until]``."""
    inside = [m for m in markers if pd.Timestamp(since) <= pd.Timestamp(m["t"]) <= pd.Timestamp(until)]
    return {**chart, "markers": inside}


def _challengers(shadow: pd.DataFrame | None) -> pd.DataFrame:
    """Shadow pairs with an error, each labelled ``"<version> <alias>"``."""
    if shadow is None or shadow.empty:
        return pd.DataFrame()
    challengers = shadow[shadow["abs_error"].notna()]
    return challengers.assign(version=challengers["model_version"].astype(str) + " "
                              + challengers["model_alias"].fillna("shadow").astype(str))


def _three(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value):.3f}"


def same_learners_tiles(outcomes: pd.DataFrame, challengers: pd.DataFrame) -> list[dict]:
    """Production against each challenger on the submissions both scored: MAE side by side.

    >>> prod = pd.DataFrame({"event_id": ["a", "b", "c"], "abs_error": [4.0, 6.0, 9.0]})
    >>> ch = pd.DataFrame({"event_id": ["a", "b"], "abs_error": [2.0, 3.0], "version": ["3 staging"] * 2})
    >>> same_learners_tiles(prod, ch)
    [{'label': 'same 2 learners: MAE production vs v3 staging', 'value': '5 vs 2.5'}]
    """
    if challengers.empty or outcomes.empty:
        return []
    tiles = []
    for version, rows in challengers.groupby("version"):
        both = rows.merge(outcomes[["event_id", "abs_error"]], on="event_id", suffixes=("", "_production"))
        if both.empty:
            continue
        tiles.append({"label": f"same {len(both)} learners: MAE production vs v{version}",
                      "value": f"{_fmt(both['abs_error_production'].mean())} vs {_fmt(both['abs_error'].mean())}"})
    return tiles


def scores_panel(predictions: pd.DataFrame, bins: int = 20) -> Panel:
    """Distribution of predicted progress scores and comprehension levels (gold.predictions)."""
    title = "Predicted scores and levels"
    frame = predictions[predictions["progress_score"].notna()] if not predictions.empty else predictions
    if frame.empty:
        return _empty("scores", title, "no predictions yet")
    counts, edges = np.histogram(frame["progress_score"].astype(float).clip(0, 100), bins=bins, range=(0, 100))
    levels = frame["comprehension_level"].value_counts()
    return _ok("scores", title, [
        {"type": "bar", "title": "progress score", "categories": [f"{int(edges[i])}" for i in range(bins)],
         "series": [{"name": "predictions", "values": _numbers(counts)}]},
        {"type": "bar", "title": "comprehension level", "categories": list(LEVELS),
         "series": [{"name": "predictions", "values": _numbers(levels.reindex(list(LEVELS), fill_value=0))}]},
    ], tiles=[{"label": "predictions", "value": len(frame)},
              {"label": "mean score", "value": f"{frame['progress_score'].mean():.1f}"}])


def psychometrics_panel(predictions: pd.DataFrame, flags: pd.DataFrame, minutes: int, largest_bucket: int,
                        grade_bands) -> Panel:
    """Rapid guessing by segment over time (gold.predictions) and the flagged items with their
    evidence (ops.item_flags)."""
    from learnscore.schemas.segments import segment_labels

    title = "Psychometrics: rapid guessing and flagged items"
    frame = predictions[predictions["rapid_guess_share"].notna()] if not predictions.empty else predictions
    flagged = flags[flags["flagged_at"].notna()] if not flags.empty else flags
    if frame.empty and flagged.empty:
        return _empty("psychometrics", title, "no effort measured yet: nothing scored, or the production "
                                              "version's item bank has no response times")
    charts, tiles = [], []
    if not frame.empty:
        frame = window(frame.assign(t=pd.to_datetime(frame["scored_at"], utc=True)), "t", minutes)
        seconds = bucket_seconds(frame["t"], largest_bucket)
        frame = frame.assign(bucket=frame["t"].dt.floor(f"{seconds}s"), segment=segment_labels(frame, grade_bands),
                             flagged=frame["low_effort"].fillna(False).astype(float))
        rate = frame.pivot_table(index="bucket", columns="segment", values="flagged", aggfunc="mean").sort_index()
        charts.append({"type": "line", "title": f"share of low-effort submissions per {seconds}s, by segment",
                       "percent": True, "x": _iso(rate.index),
                       "series": [{"name": segment, "values": _numbers(rate[segment])} for segment in rate.columns]})
        tiles += [{"label": "low-effort share", "value": f"{frame['flagged'].mean():.1%}"},
                  {"label": "rapid guesses (mean share)", "value": f"{frame['rapid_guess_share'].mean():.1%}"}]
    if not flagged.empty:
        flagged = flagged.sort_values("flagged_at")
        charts.append({"type": "events", "title": "flagged items", "points": [
            {"t": t, "group": flag, "label": f"{item} ({direction or '-'}, v{version})",
             "detail": evidence + (f" · cleared by {reviewer}" if status == "cleared" else "")}
            for t, flag, item, direction, version, evidence, status, reviewer in zip(
                _iso(flagged["flagged_at"]), flagged["flag"], flagged["item_id"], flagged["direction"],
                flagged["model_version"], flagged["evidence"].fillna(""), flagged["status"],
                flagged["reviewed_by"])][-200:]})
    tiles.append({"label": "items flagged", "value": int((flagged["status"] == "flagged").sum()) if not flagged.empty
                  else 0})
    return _ok("psychometrics", title, charts, tiles=tiles)


def _fmt(value) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def _version_key(version: str):
    """Numeric versions in numeric order ('2' before '10').

    >>> sorted(["10", "2", "x"], key=_version_key)
    ['2', '10', 'x']
    """
    return (0, int(version), "") if str(version).isdigit() else (1, 0, str(version))
