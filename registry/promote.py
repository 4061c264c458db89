"""Move ``production``: promote a version after its gates pass, or roll back to the previous one.

Both record the move (``learnscore.registry.history``) with who, why and the window metrics of the
version before and after, so ``learnscore models`` and ``rollback`` can replay it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from learnscore.core.alerts import alert
from learnscore.core.config import Config
from learnscore.registry.access import (
    PRODUCTION,
    STAGING,
    GateRefused,
    PromotionBlocked,
    alias_version,
    promotion_block,
    set_alias,
    version_exists,
)
from learnscore.registry.gates import GateReport, run_gates, window_metrics
from learnscore.registry.history import (
    PROMOTED,
    ROLLED_BACK,
    LifecycleHistoryError,
    LifecycleRecorder,
    production_lineage,
)
from learnscore.registry.trust import load_trusted_version

log = logging.getLogger(__name__)


class PromotionError(RuntimeError):
    """The request cannot be carried out (no such version, nothing staged, ...)."""


@dataclass(frozen=True)
class AliasMove:
    alias: str
    version: str
    previous_version: str | None
    report: GateReport | None = None


def promote(config: Config, version: str | int | None = None, *, actor: str, reason: str,
            force: bool = False) -> AliasMove:
    """Run the gates for ``version`` (default: the ``staging`` version) and, if all pass, point
    ``production`` at it. Raises :class:`GateRefused` (with the report) when a gate fails, and
    :class:`PromotionBlocked` for a version the rollback guard took out of production, unless
    ``force`` (which overrides that block only, never the gates)."""
    with LifecycleRecorder(config) as recorder:  # no broker, no move: fail before the gates run
        version = str(version) if version is not None else alias_version(config, STAGING)
        if version is None:
            raise PromotionError(f"no version of {config.mlflow.model_name} has the alias {STAGING!r}; "
                                 f'train one with "learnscore train" or name it with --version')
        _require_version(config, version)
        blocked = promotion_block(config, version)
        if blocked and not force:
            raise PromotionBlocked(version, blocked)
        if blocked:
            log.warning("version %s is blocked (%s); promoting it as forced by %s", version, blocked, actor)
        previous = alias_version(config, PRODUCTION)
        if previous == version:
            raise PromotionError(f"version {version} is already {PRODUCTION}")
        report = run_gates(config, version)
        log.info("gates for version %s: %s", version, "all passed" if report.passed else
                 "failed " + ", ".join(result.name for result in report.failures))
        if not report.passed:
            raise GateRefused(report)
        _set_alias(config, PRODUCTION, version)
        recorder.record(PROMOTED, version=version, alias=PRODUCTION, previous_version=previous,
                        actor=actor, reason=reason,
                        metrics=_before_after(report.production_metrics, report.candidate_metrics))
    alert("model_promoted", f"version {version} of {config.mlflow.model_name} is production "
                            f"(was {previous or 'none'}): {reason}", key=version, version=version,
          previous_version=previous, actor=actor,
          **{f"window_{k}": v for k, v in report.candidate_metrics.items() if k in ("mae", "macro_f1")})
    return AliasMove(PRODUCTION, version, previous, report)


def rollback(config: Config, *, actor: str, reason: str, evidence: dict[str, float] | None = None) -> AliasMove:
    """Point ``production`` back at the version it had before the current one (from the
    recorded history). No gates: a rollback must work when things are on fire.

    When the alias was moved outside learnscore (set straight in the registry, past the
    gates), the version before it is the last one the history records in ``production``.
    ``evidence`` (what made the caller roll back, e.g. the guard's live metrics) is recorded
    with the event's metrics.
    """
    current = alias_version(config, PRODUCTION)
    if current is None:
        raise LifecycleHistoryError(f"{config.mlflow.model_name} has no {PRODUCTION} version to roll back")
    lineage = production_lineage(config)
    if not lineage:
        raise LifecycleHistoryError(
            f"{PRODUCTION} points to version {current} but no {PRODUCTION} version is on record: "
            f'there is nothing to roll back to. Set it deliberately with "learnscore promote --version N"')
    if lineage[-1] != current:
        target = lineage[-1]
        log.warning("%s was moved to version %s outside learnscore (the recorded history ends at "
                    "version %s): rolling back to version %s", PRODUCTION, current, target, target)
    elif len(lineage) < 2:
        raise LifecycleHistoryError(f"version {current} is the first {PRODUCTION} version on record: "
                                    f"there is no earlier one to roll back to")
    else:
        target = lineage[-2]
    metrics = {**_rollback_metrics(config, current, target),
               **{k: v for k, v in (evidence or {}).items() if v is not None and math.isfinite(v)}}
    with LifecycleRecorder(config) as recorder:
        _set_alias(config, PRODUCTION, target)
        recorder.record(ROLLED_BACK, version=target, alias=PRODUCTION, previous_version=current,
                        actor=actor, reason=reason, metrics=metrics)
    alert("model_rolled_back", f"{config.mlflow.model_name}: production rolled back from version {current} "
                               f"to {target} by {actor}: {reason}", key=current, version=current,
          restored_version=target, actor=actor, **(evidence or {}))
    return AliasMove(PRODUCTION, target, current)


def _set_alias(config: Config, alias: str, version: str) -> None:
    set_alias(config, alias, version)
    log.info("%s %s → version %s", config.mlflow.model_name, alias, version)


def _require_version(config: Config, version: str) -> None:
    if not version_exists(config, version):
        raise PromotionError(f"{config.mlflow.model_name} has no version {version}; "
                             f'"learnscore models" lists the versions')


def _before_after(before: dict[str, float] | None, after: dict[str, float]) -> dict[str, float]:
    return {**{f"before_{k}": v for k, v in (before or {}).items()},
            **{f"after_{k}": v for k, v in after.items()}}


def _rollback_metrics(config: Config, current: str, target: str) -> dict[str, float]:
    """Window metrics of the version leaving production and the one returning (best effort:
    a broken current version must not block its own rollback)."""
    from learnscore.registry.window import recent_labelled_window

    model_input, labels = recent_labelled_window(config, config.gates.window_rows)
    if labels.empty:
        return {}
    metrics: dict[str, float] = {}
    for prefix, version in (("before", current), ("after", target)):
        try:
            predictions = load_trusted_version(config, version).predict(model_input)
            measured = window_metrics(predictions, labels)
            # A version that predicts NaN is a reason to roll back: its metrics are not finite
            # and would break the event's contract, so they are left out, not the rollback.
            metrics.update({f"{prefix}_{k}": v for k, v in measured.items() if math.isfinite(v)})
            if len(measured) > sum(math.isfinite(v) for v in measured.values()):
                log.warning("version %s has non-finite window metrics; left out of the rollback "
                            "record", version)
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            log.warning("could not score version %s for the rollback record: %s", version, exc)
    return metrics
