"""The drift report's pure parts: bins, windows and metric rows (the Spark job: test_drift_report.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from learnscore.batch.distribution_metrics import js_distance, ks, psi, quantile_edges
from learnscore.batch.drift_report import bin_counts, metric_rows, window_starts

NOW = datetime(2025, 3, 1, 12, 30, tzinfo=timezone.utc)


def test_binned_metrics_agree_with_scipy_on_the_same_bins():
    rng = np.random.default_rng(0)
    reference, window = rng.normal(0, 1, 20_000), rng.normal(0.3, 1, 5_000)
    edges = quantile_edges(reference, 20)
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=20)
    w = np.bincount(np.searchsorted(edges, window, side="right"), minlength=20)
    assert abs(js_distance(r, w) - jensenshannon(r / r.sum(), w / w.sum(), base=2)) < 1e-12
    # KS at the bin edges is a lower bound of the exact statistic, and close to it on 20 bins.
    exact = ks_2samp(reference, window).statistic
    assert exact - 0.03 < ks(r, w) <= exact + 1e-12
    assert psi(r, r) == 0.0 and psi(r, w) > 0.05


def test_metric_rows_compare_with_training_and_the_previous_window_and_leave_small_cells_out():
    rng = np.random.default_rng(1)
    starts = window_starts(NOW, timedelta(hours=1), 2)
    frames = [pd.DataFrame({"window": -1, "segment": "math/5-8",
                            "accuracy": rng.normal(0.7, 0.1, 4000)})]
    for index, mean in enumerate((0.7, 0.7, 0.5)):
        frames.append(pd.DataFrame({"window": index, "segment": "math/5-8",
                                    "accuracy": rng.normal(mean, 0.1, 1000)}))
    frames.append(pd.DataFrame({"window": 2, "segment": "reading/1-4",
                                "accuracy": rng.normal(0.7, 0.1, 5)}))
    features = pd.concat(frames, ignore_index=True)
    edges = {"accuracy": quantile_edges(features.loc[features["window"] == -1, "accuracy"])}
    rows, suppressed = metric_rows(bin_counts(features, edges), starts, timedelta(hours=1), 10, NOW)
    table = {(r["window_start"].hour, r["segment"], r["reference"]): r for r in rows}
    assert sorted(table) == [(10, "all", "previous"), (10, "all", "training"),
                             (10, "math/5-8", "previous"), (10, "math/5-8", "training"),
                             (11, "all", "previous"), (11, "all", "training"),
                             (11, "math/5-8", "previous"), (11, "math/5-8", "training")]
    assert suppressed == 2  # reading/1-4 has 5 rows in the last window: against both references
    stable, shifted = table[(10, "math/5-8", "training")], table[(11, "math/5-8", "training")]
    assert stable["psi"] < 0.05 and stable["ks"] < 0.06 and stable["js"] < 0.1
    assert shifted["psi"] > 1.0 and shifted["ks"] > 0.6 and shifted["js"] > 0.6
    assert (shifted["n_reference"], shifted["n_window"]) == (4000, 1000)
    assert table[(11, "math/5-8", "previous")]["n_reference"] == 1000
    assert shifted["window_end"] - shifted["window_start"] == timedelta(hours=1)
