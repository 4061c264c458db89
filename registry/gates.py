"""Gates a model version must pass before it may become ``production``.

0. ``trust``: it may be loaded at all (``registry/trust.py``: our skops loader or an allowed one,
   no code path, no pickle, the files it was registered with), checked before anything of it runs.
1. ``signature``: its MLflow signature is the contract's (:func:`learnscore.model.packaging.model_signature`).
2. ``smoke``: it loads (through the safe skops loader) and scores a smoke batch sanely: one row
   out per row in, no NaN, score within 0–100, a known level, probabilities summing to 1.
3. ``vs_production_mae`` / ``vs_production_macro_f1``: on the same recent labelled window it is
   not worse than the current production version beyond ``gates.max_mae_increase`` /
   ``gates.max_macro_f1_drop``. The window holds only submissions made after the candidate's
   training data ends (its ``data.train_until`` tag; its holdout and what came since): rows it
   was trained on would flatter it, and after a concept drift, rows of the old concept (the
   newest outcomes when silver lags behind the scores) would judge it by the relation it was
   retrained to leave.
4. ``floor_mae`` / ``floor_macro_f1``: absolute limits on the window (``gates.max_mae``,
   ``gates.min_macro_f1``).

Every result says what was measured, the limit, and by how much a failing version misses it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from learnscore.core.config import Config
from learnscore.model.metrics import level_metrics, score_metrics
from learnscore.registry.access import PRODUCTION, alias_version, version_uri
from learnscore.registry.trust import UntrustedModel, load_trusted_version
from learnscore.schemas.events import LEVELS
from learnscore.schemas.scoring import PREDICTION_COLUMNS

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    message: str

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:<24} {self.message}"


@dataclass(frozen=True)
class GateReport:
    """All gate results for one version, with the window metrics of it and of production."""

    version: str
    results: tuple[GateResult, ...]
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    production_version: str | None = None
    production_metrics: dict[str, float] = field(default_factory=dict)
    window_rows: int = 0
    window_after: str | None = None  # the candidate's training cutoff: the window's rows came later

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> list[GateResult]:
        return [result for result in self.results if not result.passed]

    def summary(self) -> str:
        head = (f"gates for version {self.version} on {self.window_rows} recent labelled submissions"
                + _made_after(self.window_after)
                + (f" (production: v{self.production_version})" if self.production_version else
                   " (no production version yet)"))
        return "\n".join([head, *(f"  {result}" for result in self.results)])




# -- the gates (pure) ---------------------------------------------------------------------------


def check_signature(signature) -> GateResult:
    """The version's signature equals the contract's, column by column."""
    from learnscore.model.packaging import model_signature

    if signature is None:
        return GateResult("signature", False, "the version has no signature; log it with "
                                              "learnscore.model.packaging.log_diagnostic_model")
    expected = model_signature()
    problems = []
    for side in ("inputs", "outputs"):
        want = {c["name"]: c for c in _columns(getattr(expected, side))}
        have = {c["name"]: c for c in _columns(getattr(signature, side))}
        for name in want.keys() - have.keys():
            problems.append(f"{side[:-1]} {name!r} is missing")
        for name in have.keys() - want.keys():
            problems.append(f"{side[:-1]} {name!r} is not in the contract")
        for name in want.keys() & have.keys():
            if want[name] != have[name]:
                problems.append(f"{side[:-1]} {name!r} is {_type_text(have[name])}, "
                                f"the contract says {_type_text(want[name])}")
    if problems:
        return GateResult("signature", False, "; ".join(sorted(problems)))
    return GateResult("signature", True, "inputs and outputs match the contract")


def check_smoke(predictions: pd.DataFrame | None, rows_in: int, error: str | None = None) -> GateResult:
    """Sanity of the predictions for a smoke batch of ``rows_in`` rows."""
    if error is not None:
        return GateResult("smoke", False, error)
    problems = []
    columns = list(predictions.columns)
    if columns != list(PREDICTION_COLUMNS):
        problems.append(f"columns are {columns}, expected {list(PREDICTION_COLUMNS)}")
    elif len(predictions) != rows_in:
        problems.append(f"{len(predictions)} rows out for {rows_in} rows in")
    else:
        numeric = predictions.drop(columns="comprehension_level").astype(float)
        if numeric.isna().any().any():
            problems.append(f"{int(numeric.isna().any(axis=1).sum())} rows have NaN values")
        score = numeric["progress_score"]
        outside = int(((score < 0) | (score > 100)).sum())
        if outside:
            problems.append(f"{outside} scores outside 0–100")
        unknown = int((~predictions["comprehension_level"].isin(LEVELS)).sum())
        if unknown:
            problems.append(f"{unknown} levels not among {', '.join(LEVELS)}")
        total = numeric[[f"p_{level}" for level in LEVELS]].sum(axis=1)
        worst = float((total - 1).abs().max()) if len(total) else 0.0
        if worst > 1e-6:
            problems.append(f"probabilities sum to 1 ± {worst:.2g} (allowed 1e-6)")
    if problems:
        return GateResult("smoke", False, "; ".join(problems))
    return GateResult("smoke", True, f"{rows_in} rows scored: no NaN, scores in 0–100, "
                                     f"probabilities sum to 1")


def check_against_production(candidate: dict[str, float], production: dict[str, float] | None,
                             production_version: str | None, config: Config) -> list[GateResult]:
    """Not worse than production on the same window beyond the configured tolerances."""
    if not production:
        note = "no production version yet: nothing to compare with"
        return [GateResult("vs_production_mae", True, note),
                GateResult("vs_production_macro_f1", True, note)]
    gates = config.gates
    mae_gap = candidate["mae"] - production["mae"]
    f1_gap = production["macro_f1"] - candidate["macro_f1"]
    return [
        _limit_result("vs_production_mae", mae_gap <= gates.max_mae_increase,
                      f"MAE {candidate['mae']:.3f} vs production v{production_version}'s "
                      f"{production['mae']:.3f}", "worse", mae_gap, gates.max_mae_increase),
        _limit_result("vs_production_macro_f1", f1_gap <= gates.max_macro_f1_drop,
                      f"macro-F1 {candidate['macro_f1']:.3f} vs production v{production_version}'s "
                      f"{production['macro_f1']:.3f}", "lower", f1_gap, gates.max_macro_f1_drop),
    ]


def check_floors(candidate: dict[str, float], config: Config, production: dict[str, float] | None = None,
                 production_version: str | None = None) -> list[GateResult]:
    """Absolute limits. A candidate beyond one still passes it when production, on the same rows,
    is beyond it too and worse than the candidate: refusing would keep the worse model serving
    (after a concept shift the old model fails the very floors it was promoted under).

    >>> from learnscore.core.config import Config
    >>> [r.passed for r in check_floors({"mae": 4.2, "macro_f1": 0.36}, Config())]
    [True, False]
    >>> print(check_floors({"mae": 4.2, "macro_f1": 0.36}, Config(), {"mae": 12.2, "macro_f1": 0.32}, "1")[1].message)
    macro-F1 0.360 is below the minimum 0.400, but production v1 is further below on the same rows (0.320): ...
    """
    gates, production = config.gates, production or {}
    return [
        _floor_result("floor_mae", "MAE", candidate["mae"], gates.max_mae, production.get("mae"),
                      production_version, lower_is_better=True),
        _floor_result("floor_macro_f1", "macro-F1", candidate["macro_f1"], gates.min_macro_f1,
                      production.get("macro_f1"), production_version, lower_is_better=False),
    ]


def floor_excused(value: float, other: float | None, *, lower_is_better: bool) -> bool:
    """Whether ``value``, beyond a floor, is excused: ``other`` (the version it would replace,
    or be replaced by, on the same rows) is worse still."""
    if other is None:
        return False
    return value < other if lower_is_better else value > other


def _floor_result(name: str, label: str, value: float, limit: float, production: float | None,
                  production_version: str | None, *, lower_is_better: bool) -> GateResult:
    if value <= limit if lower_is_better else value >= limit:
        meets = "within the limit" if lower_is_better else "meets the minimum"
        return GateResult(name, True, f"{label} {value:.3f} {meets} {limit:.3f}")
    beyond = f"{label} {value:.3f} {'exceeds the limit' if lower_is_better else 'is below the minimum'} {limit:.3f}"
    if floor_excused(value, production, lower_is_better=lower_is_better):
        return GateResult(name, True, f"{beyond}, but production v{production_version} is further "
                                      f"{'above' if lower_is_better else 'below'} on the same rows "
                                      f"({production:.3f}): the candidate replaces a worse model")
    return GateResult(name, False, f"{beyond} by {abs(value - limit):.3f}")


def window_metrics(predictions: pd.DataFrame, labels: pd.DataFrame) -> dict[str, float]:
    """Score and level metrics of predictions against observed outcomes (same row order)."""
    probabilities = predictions[[f"p_{level}" for level in LEVELS]].to_numpy(dtype=float)
    return {**score_metrics(labels["observed_progress_score"], predictions["progress_score"]),
            **level_metrics(labels["observed_comprehension_level"],
                            predictions["comprehension_level"], probabilities)}


# -- running them (I/O) ---------------------------------------------------------------------------


def run_gates(config: Config, version: str) -> GateReport:
    """Run every gate for ``version`` against the recent labelled window; never raises for a
    failing gate (the report says it); the caller decides."""
    from mlflow.models import get_model_info

    from learnscore.registry.access import training_cutoff
    from learnscore.registry.window import recent_labelled_window

    uri = version_uri(config, version)
    try:
        candidate = load_trusted_version(config, version)
    except UntrustedModel as exc:  # checked before anything of the version runs
        return GateReport(version, (GateResult("trust", False, str(exc)),))
    except Exception as exc:  # noqa: BLE001 - a version that cannot be loaded fails, with the reason
        return GateReport(version, (GateResult("trust", True, "no code path, no pickle, content as registered"),
                                    check_smoke(None, 0, error=f"could not load: {exc}")))
    results = [GateResult("trust", True, "no code path, no pickle, content as registered"),
               check_signature(get_model_info(uri).signature)]
    cutoff = training_cutoff(config, version)
    model_input, labels = recent_labelled_window(config, config.gates.window_rows, after=cutoff)
    after = _made_after(cutoff.isoformat() if cutoff else None)
    log.info("gates: scoring version %s on %d recent labelled submissions%s", version, len(labels), after)
    try:
        smoke_input = model_input.head(config.gates.smoke_rows)
        if smoke_input.empty:
            smoke_input = pd.DataFrame(get_model_info(uri).load_input_example() or [])
        results.append(check_smoke(candidate.predict(smoke_input), len(smoke_input)))
    except Exception as exc:  # noqa: BLE001 - a model that cannot load or score fails the gate, with the reason
        results.append(check_smoke(None, 0, error=f"could not load or score: {exc}"))
        return GateReport(version, tuple(results))
    if labels.empty:
        results.append(GateResult("window", False, f"no labelled submissions{after} (silver.submissions "
                                  "⋈ silver.outcomes) to judge the version on; load a history or wait "
                                  "for outcomes"))
        return GateReport(version, tuple(results))
    candidate_metrics = window_metrics(candidate.predict(model_input), labels)
    production_version = alias_version(config, PRODUCTION)
    production_metrics = None
    if production_version is not None and production_version != str(version):
        try:
            production = load_trusted_version(config, production_version)
            production_metrics = window_metrics(production.predict(model_input), labels)
        except UntrustedModel as exc:
            # A tampered production must not block the version that replaces it; said loudly.
            log.error("gates: %s; version %s is judged on the absolute floors alone", exc, version)
            production_version = None
    elif production_version == str(version):
        production_metrics = candidate_metrics
    results += check_against_production(candidate_metrics, production_metrics, production_version, config)
    results += check_floors(candidate_metrics, config, production_metrics if production_version != str(version)
                            else None, production_version)
    return GateReport(version, tuple(results), candidate_metrics, production_version,
                      production_metrics or {}, len(labels), cutoff.isoformat() if cutoff else None)


# -- helpers ---------------------------------------------------------------------------------------


def _made_after(cutoff: str | None) -> str:
    """How the window's lower bound reads in the report and the log ("" for a plain window)."""
    return f" made after its training data ({cutoff})" if cutoff else ""


def _columns(schema) -> list[dict]:
    return schema.to_dict() if schema is not None else []


def _type_text(column: dict) -> str:
    kind = column.get("type")
    if kind == "array":
        return f"array<{column.get('items', {}).get('type')}>"
    return str(kind)


def _limit_result(name: str, passed: bool, measured: str, direction: str, gap: float,
                  tolerance: float) -> GateResult:
    if passed:
        return GateResult(name, True, f"{measured}: within the tolerance {tolerance:.3f}")
    return GateResult(name, False, f"{measured}: {gap:.3f} {direction}, beyond the tolerance "
                                   f"{tolerance:.3f} by {gap - tolerance:.3f}")
