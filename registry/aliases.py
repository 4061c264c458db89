"""Registry vocabulary (DESIGN §6): alias names and model URIs, in one place.

A new version gets ``staging``; after its gates pass it gets ``production``. Callers build URIs
here rather than by hand: ``production_model_uri(config)`` is what the stream and the endpoint load.
"""

from __future__ import annotations

from learnscore.config import Config

STAGING = "staging"
PRODUCTION = "production"
ALIASES = (STAGING, PRODUCTION)


def alias_uri(config: Config, alias: str) -> str:
    """``models:/<name>@<alias>``.

    >>> from learnscore.config import Config
    >>> alias_uri(Config(), "staging")
    'models:/learnscore-diagnostic@staging'
    """
    return f"models:/{config.mlflow.model_name}@{alias}"


def production_model_uri(config: Config) -> str:
    return alias_uri(config, PRODUCTION)


def staging_model_uri(config: Config) -> str:
    return alias_uri(config, STAGING)


def version_uri(config: Config, version: str | int) -> str:
    """``models:/<name>/<version>``: one fixed version, whatever the aliases do."""
    return f"models:/{config.mlflow.model_name}/{version}"


def current_version(config: Config, alias: str, client=None) -> str | None:
    """The version an alias points to now, or None when the alias (or the model) does not exist.

    ``client`` is an ``MlflowClient``; without one, the caller has pointed MLflow at the store
    (:func:`learnscore.tracking.use_mlflow`). Other registry failures propagate.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return str((client or MlflowClient()).get_model_version_by_alias(
            config.mlflow.model_name, alias).version)
    except MlflowException as exc:
        missing_model = exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
        missing_alias = exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message
        if missing_model or missing_alias:
            return None
        raise
