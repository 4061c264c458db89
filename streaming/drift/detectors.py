"""A River ADWIN detector with a learned reference, an effect-size gate and a saveable state.

Why ADWIN, and why these parameters (measured on this machine's family, see
``bench/results/drift.json``):

* **ADWIN** (Bifet & Gavaldà 2007) compares the means of every split of an adaptive window with
  a Hoeffding–Bernstein bound: its false-alarm rate is bounded by ``delta`` per check for any
  distribution of values in [0, 1], it needs no threshold tuned to a signal's units, and River's
  Rust implementation takes ~2.6 M updates/s. KSWIN raised 125 false alarms on 100 k values and
  runs at ~4 k/s; PageHinkley needs a threshold per signal scale; DDM/EDDM/HDDM take binary
  errors only, and DDM's running minimum makes long stationary streams alarm eventually.
* **Reference standardisation.** ADWIN's bound assumes values in [0, 1]; a signal with a small
  spread in that range (mean log response time, say) is detected far later than one with a wide
  spread. Each detector therefore first learns its reference mean and σ from ``reference_size``
  values (during which it never alarms: small segments never alarm, for stability and privacy),
  then feeds ADWIN ``0.5 + (x − mean) / (2 · span · σ)`` clipped to [0, 1] — ±``span`` σ fill the
  unit interval, so every signal is equally sensitive whatever its units.
* **delta = 1e-5** instead of River's 0.002: on 1 M stationary simulated submissions neither
  raises a single alarm (``bench/results/drift.json``), but 1e-5 leaves a margin for the mild
  non-stationarity of real streams and costs only ~1.4× the delay (a 1 σ shift is found
  ~250 values after onset instead of ~180).
* **min_window = 100** (ADWIN's ``min_window_length``): both sides of a cut hold ≥ 100 values,
  so the evidence means are over enough learners to be stable and to identify no one.
* **min_effect = 0.25 σ**: with large windows ADWIN finds statistically real but tiny changes;
  a change of less than a quarter of the reference σ is not worth retraining a model, so the
  alarm is dropped (counted in :attr:`GatedADWIN.n_ignored`) and ADWIN starts a new window.
* **direction**: an error that *falls* is no reason to retrain; error signals use ``"increase"``.

After an accepted drift the detector learns a new reference from the values that follow
(the new regime is the new normal), exactly as River's detectors reset themselves.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from river import drift as river_drift
from river.base import DriftDetector

Direction = Literal["both", "increase", "decrease"]
STATE_FORMAT = 1
MAX_BLOCKS = 256  # block summaries kept in detail: 256 × clock values (8,192 by default)


@dataclass(frozen=True)
class Detection:
    """Evidence of one accepted drift: the window before the cut against the window after it.

    Means are in the signal's own units; ``effect`` is ``(mean_after − mean_before) / σ_before``.
    ``position`` counts the values this detector had seen (over its lifetime) when it alarmed.
    """

    effect: float
    mean_before: float
    mean_after: float
    n_before: int
    n_after: int
    position: int

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


class GatedADWIN(DriftDetector):
    """River's :class:`~river.drift.ADWIN` on standardised values, with an effect-size gate.

    Parameters
    ----------
    delta
        ADWIN's significance value; lower means fewer false alarms and later alarms.
    clock
        ADWIN checks for a cut every ``clock`` values.
    min_window
        Each side of a cut holds at least this many values (ADWIN's ``min_window_length``).
    reference_size
        Values used to learn the reference mean and σ before any alarm is possible.
    min_effect
        Smallest change, in σ of the window before the cut, that counts as drift.
    direction
        ``"both"``, or ``"increase"`` / ``"decrease"`` to count changes one way only.
    span
        Reference σ on each side of the mean that fill ADWIN's [0, 1] input range.
    min_scale
        Floor on the reference σ, in the signal's units (a constant reference stays usable).

    Examples
    --------
    A stationary stream raises nothing; a 1 σ shift is found a few hundred values after it
    starts.

    >>> import random
    >>> rng = random.Random(42)
    >>> detector = GatedADWIN(reference_size=500)
    >>> stream = [rng.gauss(10, 2) for _ in range(5000)] + [rng.gauss(12, 2) for _ in range(2000)]
    >>> for i, x in enumerate(stream):
    ...     if detector.update(x).drift_detected:
    ...         found = detector.detection
    ...         print(f"drift at {i}: {found.mean_before:.2f} -> {found.mean_after:.2f}, "
    ...               f"effect {found.effect:+.2f} sigma, n {found.n_before}/{found.n_after}")
    drift at 5267: 9.99 -> 11.82, effect +0.91 sigma, n 4512/256

    A change in the other direction than asked for is ignored:

    >>> errors = GatedADWIN(reference_size=500, direction="increase")
    >>> stream = [rng.gauss(10, 2) for _ in range(5000)] + [rng.gauss(8, 2) for _ in range(2000)]
    >>> sum(errors.update(x).drift_detected for x in stream), errors.n_ignored
    (0, 1)

    The state survives a round trip through JSON-able data:

    >>> copy = GatedADWIN.from_state(errors.to_state())
    >>> copy.n_seen == errors.n_seen and copy.to_state() == errors.to_state()
    True
    """

    def __init__(
        self,
        delta: float = 1e-5,
        clock: int = 32,
        min_window: int = 100,
        reference_size: int = 1000,
        min_effect: float = 0.25,
        direction: Direction = "both",
        span: float = 4.0,
        min_scale: float = 1e-9,
    ):
        super().__init__()
        if direction not in ("both", "increase", "decrease"):
            raise ValueError(f"direction must be 'both', 'increase' or 'decrease', got {direction!r}")
        if reference_size < 2:
            raise ValueError(f"reference_size must be at least 2, got {reference_size}")
        self.delta = delta
        self.clock = clock
        self.min_window = min_window
        self.reference_size = reference_size
        self.min_effect = min_effect
        self.direction = direction
        self.span = span
        self.min_scale = min_scale
        self.n_seen = 0
        self.n_detections = 0
        self.n_ignored = 0
        self.detection: Detection | None = None
        self._start_reference()

    # -- state machine -------------------------------------------------------------------
    def _start_reference(self) -> None:
        """Learn a new reference (Welford mean/variance); ADWIN waits until it is known."""
        self._ref_n, self._ref_mean, self._ref_m2 = 0, 0.0, 0.0
        self._center, self._scale = 0.0, 0.0
        self._adwin: river_drift.ADWIN | None = None
        self._clear_window()

    def _clear_window(self) -> None:
        # Raw-unit summaries [n, sum, sum of squares] of the values ADWIN holds since its last
        # reset (ADWIN only drops values at a cut, after which it is reset): the most recent
        # ones in blocks of `clock` values, older ones merged. They locate the change and give
        # the evidence means in the signal's own units.
        self._block = [0, 0.0, 0.0]
        self._blocks: list[list[float]] = []
        self._old = [0, 0.0, 0.0]

    def _new_adwin(self) -> river_drift.ADWIN:
        return river_drift.ADWIN(delta=self.delta, clock=self.clock, max_buckets=5,
                                 min_window_length=self.min_window,
                                 grace_period=2 * self.min_window)

    @property
    def learning_reference(self) -> bool:
        """True while the reference is still being learned (no alarm possible)."""
        return self._adwin is None

    def update(self, x: float) -> GatedADWIN:
        """Feed one value (NaN is skipped); read :attr:`drift_detected` afterwards.

        Returns
        -------
        self
        """
        if self._drift_detected:  # River's convention: reset on the update after a drift
            self._drift_detected = False
            self._start_reference()
        if x != x:  # NaN: a missing value carries no evidence
            return self
        self.n_seen += 1
        if self._adwin is None:
            self._ref_n += 1
            step = x - self._ref_mean
            self._ref_mean += step / self._ref_n
            self._ref_m2 += step * (x - self._ref_mean)
            if self._ref_n >= self.reference_size:
                self._center = self._ref_mean
                self._scale = max(math.sqrt(self._ref_m2 / self._ref_n), self.min_scale)
                self._adwin = self._new_adwin()
            return self
        z = 0.5 + (x - self._center) / (2.0 * self.span * self._scale)
        z = 0.0 if z < 0.0 else 1.0 if z > 1.0 else z
        block = self._block
        block[0] += 1
        block[1] += x
        block[2] += x * x
        if block[0] >= self.clock:
            self._close_block()
        self._adwin.update(z)
        if self._adwin.drift_detected:
            self._judge_cut()
        return self

    def _close_block(self) -> None:
        self._blocks.append(self._block)
        self._block = [0, 0.0, 0.0]
        if len(self._blocks) > MAX_BLOCKS:
            oldest = self._blocks.pop(0)
            self._old = [a + b for a, b in zip(self._old, oldest)]

    def _judge_cut(self) -> None:
        """ADWIN found a cut: keep the alarm only if the change is large enough and wanted.

        ADWIN reports a cut as soon as its *oldest* values differ from the rest, before the
        window holds only the new regime; so the change point is located here as the block
        boundary with the largest two-sample z statistic (the statistic ADWIN bounds), and the
        evidence compares the values before it with the values after it.
        """
        split = _best_split([self._old, *self._blocks, self._block], self.min_window)
        # River resets ADWIN on its next update; do it now so the summaries stay in step.
        self._adwin = self._new_adwin()
        self._clear_window()
        if split is None:
            self.n_ignored += 1
            return
        (n_before, mean_before, var_before), (n_after, mean_after) = split
        sd_before = max(math.sqrt(var_before), self.min_scale)
        effect = (mean_after - mean_before) / sd_before
        wanted = (self.direction == "both" or (self.direction == "increase" and effect > 0)
                  or (self.direction == "decrease" and effect < 0))
        if not wanted or abs(effect) < self.min_effect:
            self.n_ignored += 1
            return
        self.detection = Detection(effect=effect, mean_before=mean_before, mean_after=mean_after,
                                   n_before=n_before, n_after=n_after, position=self.n_seen)
        self.n_detections += 1
        self._drift_detected = True

    # -- persistence ---------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this detector is, as JSON-able data.

        ADWIN's window is River's own binary encoding of its Rust struct (numbers only), in
        base64: restoring it decodes numbers into that struct and runs no code.
        """
        adwin = None
        if self._adwin is not None:
            adwin = base64.b64encode(self._adwin._helper.__getstate__()).decode("ascii")
        return {
            "format": STATE_FORMAT,
            "params": self._get_params(),
            "n_seen": self.n_seen,
            "n_detections": self.n_detections,
            "n_ignored": self.n_ignored,
            "drift_detected": self._drift_detected,
            "detection": asdict(self.detection) if self.detection else None,
            "reference": [self._ref_n, self._ref_mean, self._ref_m2, self._center, self._scale],
            "window": {"block": self._block, "old": self._old,
                       "blocks": _pack(self._blocks)},
            "adwin": adwin,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GatedADWIN:
        """The detector :meth:`to_state` described; a state of another format is refused."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"detector state format {state.get('format')!r} is not "
                             f"{STATE_FORMAT}; delete the drift state file to start afresh")
        detector = cls(**state["params"])
        detector.n_seen = int(state["n_seen"])
        detector.n_detections = int(state["n_detections"])
        detector.n_ignored = int(state["n_ignored"])
        detector._drift_detected = bool(state["drift_detected"])
        detector.detection = Detection(**state["detection"]) if state["detection"] else None
        ref_n, detector._ref_mean, detector._ref_m2, detector._center, detector._scale = state["reference"]
        detector._ref_n = int(ref_n)
        window = state["window"]
        detector._block, detector._old = list(window["block"]), list(window["old"])
        detector._blocks = _unpack(window["blocks"])
        if state["adwin"] is not None:
            detector._adwin = detector._new_adwin()
            detector._adwin._helper.__setstate__(base64.b64decode(state["adwin"]))
        return detector


def _best_split(blocks: list[list[float]], min_side: int):
    """The boundary between ``[n, sum, sum_sq]`` blocks that best separates two means.

    Returns ``((n_before, mean_before, var_before), (n_after, mean_after))`` for the boundary
    with the largest ``|mean_after − mean_before| / sqrt(var · (1/n_before + 1/n_after))``
    among those with at least ``min_side`` values on each side, or None when there is none.

    >>> blocks = [[4, 4.0, 4.0], [4, 4.0, 4.0], [4, 12.0, 36.0], [4, 12.0, 36.0]]
    >>> _best_split(blocks, 4)
    ((8, 1.0, 0.0), (8, 3.0))
    >>> _best_split(blocks, 9) is None
    True
    """
    total_n = sum(block[0] for block in blocks)
    total_sum = sum(block[1] for block in blocks)
    total_sq = sum(block[2] for block in blocks)
    if total_n < 2 * min_side:
        return None
    variance = max(total_sq / total_n - (total_sum / total_n) ** 2, 1e-300)
    best, best_score = None, -1.0
    n0 = s0 = q0 = 0.0
    for block in blocks[:-1]:
        n0, s0, q0 = n0 + block[0], s0 + block[1], q0 + block[2]
        n1 = total_n - n0
        if n0 < min_side or n1 < min_side:
            continue
        mean0, mean1 = s0 / n0, (total_sum - s0) / n1
        score = abs(mean1 - mean0) / math.sqrt(variance * (1 / n0 + 1 / n1))
        if score > best_score:
            best_score = score
            best = ((int(n0), mean0, max(q0 / n0 - mean0 ** 2, 0.0)), (int(n1), mean1))
    return best


def _pack(blocks: list[list[float]]) -> str:
    """Block summaries as base64 of little-endian float64 triples (compact in a JSON file)."""
    import numpy as np

    return base64.b64encode(np.asarray(blocks, dtype="<f8").reshape(-1).tobytes()).decode("ascii")


def _unpack(packed: str) -> list[list[float]]:
    import numpy as np

    values = np.frombuffer(base64.b64decode(packed), dtype="<f8").reshape(-1, 3)
    return [[int(n), float(s), float(q)] for n, s, q in values]
