"""Distances between two distributions given as counts over the same bins (pure, numpy).

The drift report bins every feature once, on quantiles of its reference (training) data, and
compares histograms, so that Spark only has to count rows per bin:

* **PSI** (population stability index), ``Σ (w − r) · ln(w / r)`` over shares, on deciles —
  the usual reading: < 0.1 stable, 0.1–0.25 moderate, > 0.25 a real shift;
* **KS**, the largest gap between the two cumulative distributions, taken at the bin edges
  (a lower bound of the exact two-sample statistic; exact when values sit on the edges);
* **Jensen–Shannon distance**, ``sqrt(JS divergence)`` with base-2 logarithms: 0 for identical
  histograms, 1 for disjoint ones (the same value as ``scipy.spatial.distance.jensenshannon``
  with ``base=2``).

Empty bins are smoothed with ``EPSILON`` in PSI only (its logarithm needs both shares > 0).
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-4


def _shares(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("a histogram with no rows has no distribution")
    return counts / total


def psi(reference_counts, window_counts) -> float:
    """Population stability index of ``window`` against ``reference``.

    >>> round(psi([25, 25, 25, 25], [25, 25, 25, 25]), 6)
    0.0
    >>> round(psi([25, 25, 25, 25], [10, 20, 30, 40]), 4)
    0.2282
    """
    reference = np.maximum(_shares(reference_counts), EPSILON)
    window = np.maximum(_shares(window_counts), EPSILON)
    return float(np.sum((window - reference) * np.log(window / reference)))


def ks(reference_counts, window_counts) -> float:
    """Largest gap between the two cumulative distributions at the bin edges.

    >>> ks([50, 50, 0, 0], [0, 0, 50, 50])
    1.0
    >>> ks([25, 25, 25, 25], [10, 20, 30, 40])
    0.2
    """
    gap = np.cumsum(_shares(reference_counts)) - np.cumsum(_shares(window_counts))
    return float(round(np.max(np.abs(gap)), 12))


def js_distance(reference_counts, window_counts) -> float:
    """Jensen–Shannon distance (base 2): 0 for the same histogram, 1 for disjoint ones.

    >>> js_distance([1, 1, 0, 0], [0, 0, 1, 1])
    1.0
    >>> round(js_distance([25, 25, 25, 25], [10, 20, 30, 40]), 4)
    0.2005
    """
    p, q = _shares(reference_counts), _shares(window_counts)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        present = a > 0
        return float(np.sum(a[present] * np.log2(a[present] / m[present])))

    return float(np.sqrt(max(0.5 * kl(p) + 0.5 * kl(q), 0.0)))


def to_deciles(counts_20) -> np.ndarray:
    """Counts over 20 quantile bins → over 10 (adjacent pairs), for PSI's usual decile reading.

    >>> to_deciles(list(range(20))).tolist()
    [1.0, 5.0, 9.0, 13.0, 17.0, 21.0, 25.0, 29.0, 33.0, 37.0]
    """
    counts = np.asarray(counts_20, dtype=np.float64)
    if counts.size % 2:
        counts = np.append(counts, 0.0)
    return counts.reshape(-1, 2).sum(axis=1)


def quantile_edges(values, bins: int = 20) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates dropped: discrete features).

    Values equal to an edge fall in the bin to its right, as with ``np.searchsorted(...,
    side="right")`` and Spark's Bucketizer.

    >>> quantile_edges(np.arange(100), bins=4).tolist()
    [24.75, 49.5, 74.25]
    >>> quantile_edges([0, 0, 0, 1, 1, 2], bins=4).tolist()
    [0.0, 0.5, 1.0]
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
