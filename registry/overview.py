"""What ``learnscore models`` shows: versions, aliases, key metrics and the alias history."""

from __future__ import annotations

from typing import Any

from learnscore.core.config import Config
from learnscore.registry.access import registry_client
from learnscore.registry.history import model_events

KEY_METRICS = ("holdout_mae", "holdout_r2", "holdout_macro_f1", "holdout_qwk", "r2_share_of_oracle")


def model_overview(config: Config) -> dict[str, Any]:
    """``{"versions": [...], "history": [...]}`` for ``mlflow.model_name``, newest version first."""
    from mlflow.exceptions import MlflowException

    client = registry_client(config)
    name = config.mlflow.model_name
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return {"model_name": name, "versions": [], "history": []}
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    versions = []
    for version in sorted(client.search_model_versions(f"name = '{name}'"),
                          key=lambda v: int(v.version), reverse=True):
        metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        versions.append({
            "version": str(version.version),
            "aliases": sorted(aliases.get(str(version.version), [])),
            "created": version.creation_timestamp,
            "trigger": version.tags.get("trigger", ""),
            "code_version": version.tags.get("code_version", ""),
            "metrics": {key: metrics[key] for key in KEY_METRICS if key in metrics},
        })
    events = model_events(config)
    history = [{"at": row.occurred_at, "event": row.event_type, "version": row.version,
                "alias": row.alias, "previous_version": row.previous_version, "actor": row.actor,
                "reason": row.reason} for row in events.itertuples()]
    return {"model_name": name, "versions": versions, "history": history}
