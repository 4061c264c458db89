"""The one way into the model registry: vocabulary, the client, and "which version is where".

Every part (the stream, the endpoint, the retrain worker, the CLI, the gates) asks the registry
through this module, so "which version is production" has one answer and one failure mode:

- alias names and model URIs (a new version gets ``staging``; after its gates, ``production``);
- :func:`registry_client`, an ``MlflowClient`` built from config (never MLflow's globals);
- :func:`alias_version`: the version an alias points to, ``None`` when the model or the alias
  does not exist, :class:`RegistryUnreachable` for anything else (a store that does not answer);
- :class:`GateRefused`, raised by promotion when a version fails a gate, and
  :class:`PromotionBlocked`, when the rollback guard took the version out of production (its
  :data:`PROMOTION_BLOCKED_TAG`), so callers tell a refusal from a crash by type.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from learnscore.core.config import Config

STAGING = "staging"
PRODUCTION = "production"
ALIASES = (STAGING, PRODUCTION)
# Tag on a version: the event time of its newest training submission (ISO 8601, UTC).
TRAIN_UNTIL_TAG = "data.train_until"
# Tag on a version the rollback guard took out of production: why. Never promoted again by
# the retrain worker or `learnscore promote` without --force.
PROMOTION_BLOCKED_TAG = "promotion.blocked"


class RegistryUnreachable(RuntimeError):
    """The registry did not answer as expected; the message says where and why."""


class GateRefused(RuntimeError):
    """A version failed at least one gate; ``report`` (a ``registry.gates.GateReport``) says
    which and by how much."""

    def __init__(self, report: Any):
        self.report = report
        failed = "; ".join(f"{r.name}: {r.message}" for r in report.failures)
        super().__init__(f"version {report.version} refused by {len(report.failures)} gate(s): {failed}")


class PromotionBlocked(RuntimeError):
    """The version was rolled back by the guard and is not promoted again unless forced."""

    def __init__(self, version: str, reason: str):
        self.version = version
        self.reason = reason
        super().__init__(f"version {version} is blocked from promotion: {reason}. It is not promoted "
                         f"again automatically; to promote it deliberately, use "
                         f'"learnscore promote --version {version} --force"')


def alias_uri(config: Config, alias: str) -> str:
    """``models:/<name>@<alias>``.

    >>> alias_uri(Config(), "staging")
    'models:/learnscore-diagnostic@staging'
    """
    return f"models:/{config.mlflow.model_name}@{alias}"


def production_model_uri(config: Config) -> str:
    return alias_uri(config, PRODUCTION)


def staging_model_uri(config: Config) -> str:
    return alias_uri(config, STAGING)


def version_uri(config: Config, version: str | int) -> str:
    """``models:/<name>/<version>``: one fixed version, whatever the aliases do.

    >>> version_uri(Config(), 3)
    'models:/learnscore-diagnostic/3'
    """
    return f"models:/{config.mlflow.model_name}/{version}"


def registry_client(config: Config):
    """An ``MlflowClient`` for the configured tracking server and registry."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=config.mlflow.tracking_uri, registry_uri=config.registry_uri)


def redact_uri(uri: str) -> str:
    """The URI without credentials, fit for logs and JSON answers.

    >>> redact_uri("https://user:token@mlflow.example.org/x")
    'https://***@mlflow.example.org/x'
    >>> redact_uri("sqlite:////srv/mlflow.db")
    'sqlite:////srv/mlflow.db'
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{path}"


def unreachable(config: Config, exc: BaseException) -> RegistryUnreachable:
    """The :class:`RegistryUnreachable` that says where the registry was asked and what failed."""
    code = getattr(exc, "error_code", None) or type(exc).__name__
    return RegistryUnreachable(f"the model registry at {redact_uri(config.registry_uri)} did not answer: "
                               f"{code}: {str(exc)[:300]}")


def alias_version(config: Config, alias: str, client=None) -> str | None:
    """The version ``alias`` points to now; ``None`` when the model or the alias does not exist.

    Raises :class:`RegistryUnreachable` for every other failure (a store that is down, a
    server that errs), so a caller never mistakes an outage for "no model".
    """
    from mlflow.exceptions import MlflowException

    try:
        found = (client or registry_client(config)).get_model_version_by_alias(config.mlflow.model_name, alias)
        return str(found.version)
    except MlflowException as exc:
        # No registered model of that name (RESOURCE_DOES_NOT_EXIST / NOT_FOUND) or no such
        # alias (INVALID_PARAMETER_VALUE "... alias production not found").
        missing_model = exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
        missing_alias = exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc)
        if missing_model or missing_alias:
            return None
        raise unreachable(config, exc) from None
    except Exception as exc:  # noqa: BLE001 - driver-level failures (sqlite, network) all mean: cannot ask
        raise unreachable(config, exc) from None


def production_version(config: Config, client=None) -> str | None:
    """The version ``production`` points to (see :func:`alias_version`)."""
    return alias_version(config, PRODUCTION, client)


def version_exists(config: Config, version: str, client=None) -> bool:
    """Whether ``version`` of the configured model is registered."""
    from mlflow.exceptions import MlflowException

    try:
        (client or registry_client(config)).get_model_version(config.mlflow.model_name, str(version))
        return True
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return False
        raise unreachable(config, exc) from None


def set_alias(config: Config, alias: str, version: str, client=None) -> None:
    """Point ``alias`` at ``version``."""
    (client or registry_client(config)).set_registered_model_alias(config.mlflow.model_name, alias, str(version))


def promotion_block(config: Config, version: str, client=None) -> str | None:
    """Why ``version`` may not be promoted again (its :data:`PROMOTION_BLOCKED_TAG`), or None.

    Raises :class:`RegistryUnreachable` when the registry does not answer.
    """
    try:
        tags = (client or registry_client(config)).get_model_version(config.mlflow.model_name, str(version)).tags
    except Exception as exc:  # noqa: BLE001 - every failure here means: cannot ask
        raise unreachable(config, exc) from None
    return tags.get(PROMOTION_BLOCKED_TAG) or None


def block_promotion(config: Config, version: str, reason: str, client=None) -> None:
    """Tag ``version`` so that it is never promoted again without ``--force``."""
    (client or registry_client(config)).set_model_version_tag(
        config.mlflow.model_name, str(version), PROMOTION_BLOCKED_TAG, reason[:5000])


def training_cutoff(config: Config, version: str) -> datetime | None:
    """When the training data of ``version`` ends (its :data:`TRAIN_UNTIL_TAG`), None if untold.

    Raises :class:`RegistryUnreachable` when the registry does not answer.
    """
    try:
        value = registry_client(config).get_model_version(config.mlflow.model_name, str(version)).tags.get(
            TRAIN_UNTIL_TAG)
    except Exception as exc:  # noqa: BLE001 - every failure here means: cannot ask
        raise unreachable(config, exc) from None
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
