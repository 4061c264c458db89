"""The rollback guard: after a promotion, does the new ``production`` version hold up live?

The gates judge a version on the recent labelled window before it is promoted; the guard
watches it afterwards, on the traffic it scores, for ``guard.watch_seconds``:

* **Evidence of the new version** — realized metrics on its own pairs
  (``gold.prediction_outcomes``) once it has ``guard.min_labelled_rows`` of them; before that,
  metrics *estimated* from its predictions (``gold.predictions``, at least
  ``guard.min_estimate_rows``) with :mod:`learnscore.model.estimation`. The estimators need a
  labelled reference of this version: its pairs are too few, so the version scores the recent
  labelled window the gates use (rows after its training data when there are enough), which
  its live predictions are then compared with. Not enough of either: wait.
* **Baseline** — the previous production version on the same window. On realized evidence it
  scores the very submissions of the new version's pairs (read back from ``silver.submissions``)
  and is judged against the same outcomes; on estimated evidence (or when it cannot be loaded)
  its metrics in the promotion's gate report (``before_*`` in ``ops.model_events``, the recent
  labelled window the new version's estimators are calibrated on), or else its own last
  realized metrics.
* **Decision** (:func:`decide`, pure) — roll back when the evidence is worse than the baseline
  by more than ``guard.max_mae_increase`` / ``guard.max_macro_f1_drop``, or past the gates'
  absolute floors (``gates.max_mae``, ``gates.min_macro_f1``); otherwise keep.
* **Action** (``guard.policy``) — ``auto``: :func:`learnscore.registry.promote.rollback` with the
  evidence recorded in the ``ModelRolledBack`` event, and the version tagged
  (:data:`learnscore.registry.access.PROMOTION_BLOCKED_TAG`) so that neither the retrain worker
  nor ``learnscore promote`` without ``--force`` promotes it again; ``alert-only``: a
  ``rollback_recommended`` alert; ``off``: the guard does nothing.

A promotion is judged until it is rolled back or its watch ends: after a rollback the last
``production`` event is the rollback, so there is nothing left to watch — the guard acts once.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import pandas as pd

from learnscore.core.config import Config
from learnscore.model.estimation import PerformanceEstimator, realized_metrics
from learnscore.registry.access import PRODUCTION, block_promotion, production_version, training_cutoff, version_uri
from learnscore.registry.gates import floor_excused
from learnscore.registry.history import PROMOTED, model_events

log = logging.getLogger(__name__)

ACTOR = "rollback-guard"
Action = Literal["wait", "keep", "roll_back"]
_METRICS = ("mae", "macro_f1", "accuracy")


@dataclass(frozen=True)
class Promotion:
    """The promotion the guard watches: ``version`` became production at ``at``."""

    version: str
    previous_version: str | None
    at: datetime
    before_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Evidence:
    """What the new version showed live: ``source`` is ``realized``, ``estimated`` or ``none``."""

    source: str
    n_rows: int
    n_labelled: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Baseline:
    """The previous version's metrics and where they come from (``same live pairs``,
    ``gate report``, ``realized pairs``, ``none``)."""

    version: str | None
    source: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GuardDecision:
    action: Action
    version: str
    reasons: tuple[str, ...]
    evidence: Evidence
    baseline: Baseline

    def summary(self) -> str:
        """One line: the decision, the evidence and why (fits a lifecycle event's reason).

        >>> decision = GuardDecision("roll_back", "7", ("MAE 34.10 exceeds v6's 5.20 by 28.90 (allowed 1.50)",),
        ...                          Evidence("estimated", 800, 0, {"mae": 34.1}),
        ...                          Baseline("6", "gate report", {"mae": 5.2}))
        >>> print(decision.summary())
        roll back version 7: MAE 34.10 exceeds v6's 5.20 by 28.90 (allowed 1.50) [estimated on 800
        predictions, 0 with outcomes; baseline v6 from the gate report]
        """
        verb = {"roll_back": "roll back", "keep": "keep", "wait": "wait on"}[self.action]
        basis = (f"{self.evidence.source} on {self.evidence.n_rows} predictions, "
                 f"{self.evidence.n_labelled} with outcomes; baseline "
                 + (f"v{self.baseline.version} from the {self.baseline.source}" if self.baseline.metrics
                    else "none (floors only)"))
        return f"{verb} version {self.version}: {'; '.join(self.reasons)} [{basis}]"[:2000]

    def evidence_metrics(self) -> dict[str, float]:
        """The numbers behind the decision, for the ``ModelRolledBack`` event."""
        out = {"guard_n_rows": float(self.evidence.n_rows), "guard_n_labelled": float(self.evidence.n_labelled),
               "guard_estimated": 1.0 if self.evidence.source == "estimated" else 0.0,
               "guard_baseline_same_pairs": 1.0 if self.baseline.source == "same live pairs" else 0.0}
        out.update({f"guard_live_{k}": v for k, v in self.evidence.metrics.items()})
        out.update({f"guard_baseline_{k}": v for k, v in self.baseline.metrics.items()})
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


# -- the decision (pure) --------------------------------------------------------------------------
def decide(version: str, evidence: Evidence, baseline: Baseline, config: Config) -> GuardDecision:
    """Keep, roll back, or wait for more evidence (the policy of the module docstring).

    >>> from learnscore.core.config import Config
    >>> live = Evidence("realized", 900, 400, {"mae": 5.4, "macro_f1": 0.70})
    >>> before = Baseline("6", "gate report", {"mae": 5.0, "macro_f1": 0.72})
    >>> decide("7", live, before, Config()).action
    'keep'
    >>> worse = Evidence("realized", 900, 400, {"mae": 7.1, "macro_f1": 0.70})
    >>> decide("7", worse, before, Config()).reasons
    ("MAE 7.10 exceeds v6's 5.00 by 2.10 (allowed 1.50)",)
    >>> decide("7", Evidence("none", 20, 0), before, Config()).action
    'wait'
    """
    guard, gates = config.guard, config.gates
    if evidence.source == "none":
        return GuardDecision("wait", version, (
            f"{evidence.n_rows} predictions and {evidence.n_labelled} outcomes since the promotion; "
            f"judging needs {guard.min_estimate_rows} predictions or {guard.min_labelled_rows} outcomes",),
            evidence, baseline)
    live, base = evidence.metrics, baseline.metrics
    reasons = []
    mae, f1 = live.get("mae"), live.get("macro_f1")
    # A floor breach rolls back only to a version that is not worse still (gates.floor_excused).
    if mae is not None and mae > gates.max_mae and not floor_excused(mae, base.get("mae"), lower_is_better=True):
        reasons.append(f"MAE {mae:.2f} is above the limit {gates.max_mae:.2f}")
    if f1 is not None and f1 < gates.min_macro_f1 and not floor_excused(f1, base.get("macro_f1"),
                                                                         lower_is_better=False):
        reasons.append(f"macro-F1 {f1:.3f} is below the floor {gates.min_macro_f1:.3f}")
    if mae is not None and "mae" in base and mae - base["mae"] > guard.max_mae_increase:
        reasons.append(f"MAE {mae:.2f} exceeds v{baseline.version}'s {base['mae']:.2f} by "
                       f"{mae - base['mae']:.2f} (allowed {guard.max_mae_increase:.2f})")
    if f1 is not None and "macro_f1" in base and base["macro_f1"] - f1 > guard.max_macro_f1_drop:
        reasons.append(f"macro-F1 {f1:.3f} trails v{baseline.version}'s {base['macro_f1']:.3f} by "
                       f"{base['macro_f1'] - f1:.3f} (allowed {guard.max_macro_f1_drop:.3f})")
    if reasons:
        return GuardDecision("roll_back", version, tuple(reasons), evidence, baseline)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in live.items())
    return GuardDecision("keep", version, (f"{shown}: within the margins and floors",), evidence, baseline)


# -- gathering the evidence (I/O) -----------------------------------------------------------------
def watched_promotion(config: Config, now: datetime | None = None) -> Promotion | None:
    """The promotion to judge: the current ``production`` version when the last ``production``
    event is its promotion and the watch is not over; None otherwise."""
    now = now or datetime.now(timezone.utc)
    events = model_events(config)
    moves = events[events["alias"] == PRODUCTION]
    if moves.empty:
        return None
    last = moves.iloc[-1]
    if last.event_type != PROMOTED:
        return None
    current = production_version(config)
    if current != str(last.version):
        if current is not None:
            log.debug("production is version %s, the history's last promotion version %s: moved outside "
                      "learnscore, not watched", current, last.version)
        return None
    at = pd.Timestamp(last.occurred_at)
    at = (at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")).to_pydatetime()
    if now - at > timedelta(seconds=config.guard.watch_seconds):
        return None
    metrics = json.loads(last.metrics_json or "{}")
    before = {k[len("before_"):]: float(v) for k, v in metrics.items() if k.startswith("before_")}
    previous = None if pd.isna(last.previous_version) else str(last.previous_version)
    return Promotion(str(last.version), previous, at, before)


_PAIR_COLUMNS = ["event_id", "progress_score", "comprehension_level", "observed_progress_score",
                 "observed_comprehension_level"]


def version_pairs(config: Config, version: str) -> pd.DataFrame:
    """``version``'s rows of ``gold.prediction_outcomes`` (its predictions with their outcomes)."""
    return _version_rows(config, "gold.prediction_outcomes", version, _PAIR_COLUMNS)


def live_evidence(config: Config, promotion: Promotion, reference: PerformanceEstimator | None = None,
                  pairs: pd.DataFrame | None = None) -> Evidence:
    """The new version's realized metrics, or estimated ones (``reference`` fitted for it), or none."""
    guard = config.guard
    pairs = version_pairs(config, promotion.version) if pairs is None else pairs
    predictions = _version_rows(config, "gold.predictions", promotion.version, [
        "event_id", "subject", "grade_level", "progress_score", "comprehension_level",
        "p_beginner", "p_developing", "p_proficient", "p_advanced"])
    if len(pairs) >= guard.min_labelled_rows:
        return Evidence("realized", len(predictions), len(pairs), realized_metrics(pairs))
    if len(predictions) >= guard.min_estimate_rows and reference is not None:
        return Evidence("estimated", len(predictions), len(pairs), reference.estimate(predictions).as_dict())
    return Evidence("none", len(predictions), len(pairs))


def baseline_for(config: Config, promotion: Promotion) -> Baseline:
    """The previous version's metrics: from the promotion's gate report, else its last pairs."""
    if promotion.before_metrics:
        return Baseline(promotion.previous_version, "gate report",
                        {k: v for k, v in promotion.before_metrics.items() if k in _METRICS})
    if promotion.previous_version is None:
        return Baseline(None, "none")
    pairs = _version_rows(config, "gold.prediction_outcomes", promotion.previous_version, [
        "event_time", "progress_score", "comprehension_level", "observed_progress_score",
        "observed_comprehension_level"])
    if len(pairs) < config.guard.min_labelled_rows:
        return Baseline(promotion.previous_version, "none")
    newest = pairs.sort_values("event_time", kind="stable").tail(config.gates.window_rows)
    return Baseline(promotion.previous_version, "realized pairs", realized_metrics(newest))


def same_window_baseline(config: Config, promotion: Promotion, pairs: pd.DataFrame, model) -> Baseline:
    """The previous version on the new version's own live pairs: ``model`` (the previous
    version, loaded) scores the same submissions (from ``silver.submissions``) and is judged
    against the same outcomes — the comparison the issue asks for, without a shadow query."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from learnscore.model.features import model_input_from_arrow
    from learnscore.schemas.tables import SUBMISSIONS

    chosen = DeltaTable(config.table_path(SUBMISSIONS.name)).to_pyarrow_dataset().to_table(
        columns=["event_id", "subject", "grade_level", "responses"],
        filter=pc.field("event_id").isin(pa.array(pairs["event_id"], pa.string())))
    if chosen.num_rows < config.guard.min_labelled_rows:
        return Baseline(promotion.previous_version, "none")
    chosen = chosen.sort_by([("event_id", "ascending")])
    predicted = model.predict(model_input_from_arrow(chosen))
    labels = pairs.drop_duplicates("event_id").set_index("event_id").loc[chosen["event_id"].to_pylist()]
    same = pd.DataFrame({"progress_score": predicted["progress_score"].to_numpy(),
                         "comprehension_level": predicted["comprehension_level"].to_numpy(),
                         "observed_progress_score": labels["observed_progress_score"].to_numpy(),
                         "observed_comprehension_level": labels["observed_comprehension_level"].to_numpy()})
    return Baseline(promotion.previous_version, "same live pairs", realized_metrics(same))


def reference_estimator(config: Config, version: str) -> PerformanceEstimator | None:
    """Estimators for ``version`` fitted on its predictions for the recent labelled window (the
    rows after its training data when at least ``estimation.min_reference_rows`` are; the whole
    window otherwise), or None when there is no labelled window."""
    import mlflow

    from learnscore.registry.window import recent_labelled_window

    model_input, labels = recent_labelled_window(config, config.gates.window_rows)
    if labels.empty:
        return None
    cutoff = training_cutoff(config, version)
    if cutoff is not None:
        after = (pd.to_datetime(labels["event_time"], utc=True) > cutoff).to_numpy()
        if after.sum() >= config.estimation.min_reference_rows:
            model_input, labels = model_input[after], labels[after]
        else:
            log.info("guard: only %d labelled rows after version %s's training data; its reference "
                     "includes rows it was trained on (estimates lean optimistic)", after.sum(), version)
    predictions = mlflow.pyfunc.load_model(version_uri(config, version)).predict(model_input)
    reference = pd.DataFrame({
        "subject": model_input["subject"].to_numpy(), "grade_level": model_input["grade_level"].to_numpy(),
        **{column: predictions[column].to_numpy() for column in predictions.columns},
        "observed_progress_score": labels["observed_progress_score"].to_numpy(),
        "observed_comprehension_level": labels["observed_comprehension_level"].to_numpy()})
    return PerformanceEstimator().fit(reference)


def _version_rows(config: Config, table: str, version: str, columns: list[str]) -> pd.DataFrame:
    import pyarrow.compute as pc
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        dataset = DeltaTable(config.table_path(table)).to_pyarrow_dataset()
    except TableNotFoundError:
        return pd.DataFrame(columns=columns)
    return dataset.to_table(columns=columns, filter=pc.field("model_version") == str(version)).to_pandas()


# -- acting ------------------------------------------------------------------------------------------
class RollbackGuard:
    """Checks the watched promotion and acts per ``guard.policy``; keeps a version's reference
    estimators between checks (scoring the labelled window costs a model load)."""

    def __init__(self, config: Config, *, policy: str | None = None):
        self.config = config
        self.policy = policy or config.guard.policy
        if self.policy not in ("auto", "alert-only", "off"):
            raise ValueError(f"guard policy must be auto, alert-only or off, got {self.policy!r}")
        self._references: dict[str, PerformanceEstimator | None] = {}
        self._models: dict[str, Any] = {}  # the previous version, loaded once per promotion

    def check(self, now: datetime | None = None) -> GuardDecision | None:
        """Judge the watched promotion once; None when there is nothing to watch (or policy off)."""
        if self.policy == "off":
            return None
        promotion = watched_promotion(self.config, now)
        if promotion is None:
            return None
        if promotion.previous_version is None:
            # The first production version has nothing to fall back to: a rollback could only
            # fail. The gates' floors judged it at promotion; the performance alerts watch it.
            log.debug("guard: version %s is the first production version: nothing to roll back to",
                      promotion.version)
            return None
        pairs = version_pairs(self.config, promotion.version)
        evidence = live_evidence(self.config, promotion, self._reference(promotion.version), pairs)
        decision = decide(promotion.version, evidence, self._baseline(promotion, evidence, pairs),
                          self.config)
        log.log(logging.WARNING if decision.action == "roll_back" else logging.INFO, "guard: %s",
                decision.summary())
        if decision.action == "roll_back":
            self._act(decision)
        return decision

    def _baseline(self, promotion: Promotion, evidence: Evidence, pairs: pd.DataFrame) -> Baseline:
        """On realized evidence, the previous version on the same live pairs; otherwise (or
        when it cannot score them) its gate-report or own recent figures."""
        previous = promotion.previous_version
        if evidence.source == "realized" and previous is not None:
            try:
                if previous not in self._models:
                    import mlflow

                    self._models = {previous: mlflow.pyfunc.load_model(version_uri(self.config, previous))}
                baseline = same_window_baseline(self.config, promotion, pairs, self._models[previous])
                if baseline.metrics:
                    return baseline
            except Exception as exc:  # noqa: BLE001 - the gate report still gives a baseline
                log.warning("guard: could not score version %s on version %s's live pairs: %s; "
                            "comparing with its gate-report figures", previous, promotion.version, exc)
        return baseline_for(self.config, promotion)

    def _reference(self, version: str) -> PerformanceEstimator | None:
        if version not in self._references:
            try:
                self._references[version] = reference_estimator(self.config, version)
            except Exception as exc:  # noqa: BLE001 - a version that cannot score its reference is judged on realized figures
                log.warning("guard: could not build estimators for version %s: %s; it is judged on "
                            "realized figures only", version, exc)
                self._references[version] = None
        return self._references[version]

    def _act(self, decision: GuardDecision) -> None:
        from learnscore.core.alerts import alert
        from learnscore.registry.promote import rollback

        text = decision.summary()
        if self.policy == "alert-only":
            alert("rollback_recommended", f"guard (alert-only): {text}", key=decision.version,
                  version=decision.version, **decision.evidence_metrics())
            return
        # Another guard (the CLI next to the worker) may have acted since this one looked.
        if production_version(self.config) != decision.version or watched_promotion(self.config) is None:
            log.info("guard: version %s is no longer the watched production version: nothing to do",
                     decision.version)
            return
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        block_promotion(self.config, decision.version, f"rolled back by the guard at {stamp}: {text}")
        rollback(self.config, actor=ACTOR, reason=text, evidence=decision.evidence_metrics())


def run_guard(config: Config, *, once: bool = False, stop=None, policy: str | None = None,
              on_decision=None) -> list[GuardDecision]:
    """``learnscore guard``: check every ``guard.check_seconds`` until ``stop`` is set (or once).
    Errors of one check (registry away, a table mid-write) are logged; the next check runs."""
    import threading

    stop = stop or threading.Event()
    guard = RollbackGuard(config, policy=policy)
    decisions: list[GuardDecision] = []
    while True:
        try:
            decision = guard.check()
        except Exception as exc:  # noqa: BLE001 - the guard outlives one failed check
            log.error("guard: check failed: %s", exc)
            decision = None
        if decision is not None:
            decisions.append(decision)
            if on_decision is not None:
                on_decision(decision)
        if once or stop.wait(config.guard.check_seconds):
            return decisions


def describe(decision: GuardDecision | None) -> dict[str, Any]:
    """A decision as a plain dict (CLI output, logs)."""
    if decision is None:
        return {"action": "none", "summary": "no promotion to watch"}
    return {"action": decision.action, "version": decision.version, "summary": decision.summary(),
            **decision.evidence_metrics()}
