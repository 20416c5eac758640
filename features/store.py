"""The Feast feature store of the engine: configure, apply, materialize, read.

The repository folder (`<data_dir>/feast`) gets a `feature_store.yaml` written from the
settings, so the `feast` CLI works on it too (`feast -c data/feast feature-views list`).
Offline store: DuckDB over the Parquet tables; online store: SQLite, or Redis when configured.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml
from feast import FeatureStore

from churn.errors import DataError
from churn.settings import Settings
from features.definitions import customer, feature_services, feature_views

PROJECT = "churn"


def _config(settings: Settings) -> dict:
    repo = settings.feature_repo_dir.resolve()
    if settings.online_store == "redis":
        online = {"type": "redis", "connection_string": settings.redis_url}
    else:
        online = {"type": "sqlite", "path": str(repo / "online_store.db")}
    return {
        "project": PROJECT,
        "provider": "local",
        "registry": {"path": str(repo / "registry.db"), "cache_ttl_seconds": 60},
        "offline_store": {"type": "duckdb"},
        "online_store": online,
        "entity_key_serialization_version": 3,
    }


def feature_store(settings: Settings) -> FeatureStore:
    """A FeatureStore on the repository folder, with its config written from the settings."""
    repo = settings.feature_repo_dir
    repo.mkdir(parents=True, exist_ok=True)
    config_path = repo / "feature_store.yaml"
    text = yaml.safe_dump(_config(settings), sort_keys=False)
    if not config_path.exists() or config_path.read_text() != text:
        config_path.write_text(text)
    return FeatureStore(repo_path=str(repo.resolve()))


def apply_definitions(settings: Settings) -> list[str]:
    """Register the entity, feature views and feature services (what `feast apply` does)."""
    tables = settings.feature_tables_dir
    missing = [v for v in ("behavioral", "lifecycle", "experience", "value") if not (tables / f"{v}.parquet").exists()]
    if missing:
        raise DataError(f"{tables}: feature tables {missing} are missing; run `churn features build` first")
    store = feature_store(settings)
    views = feature_views(tables)
    services = feature_services(views)
    store.apply([customer, *views, *services])
    return [v.name for v in views] + [s.name for s in services]


def materialize(settings: Settings, start: datetime, end: datetime) -> None:
    """Load the latest feature row per customer in [start, end] into the online store."""
    feature_store(settings).materialize(start_date=start, end_date=end)


def historical_features(settings: Settings, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
    """Point-in-time join of a FeatureService onto `entity_df`.

    `entity_df` columns:
    - customer_id: int
    - event_timestamp: tz-aware timestamp; each row gets the latest feature row at or before it
      (and not older than the views' TTL).

    Returns one row per entity row, in the same order, with extra columns kept.
    """
    store = feature_store(settings)
    frame = entity_df.reset_index(drop=True).assign(_row=lambda d: range(len(d)))
    job = store.get_historical_features(entity_df=frame, features=store.get_feature_service(service))
    out = job.to_df()
    if len(out) != len(frame):
        raise DataError(
            f"feature service {service!r}: point-in-time join returned {len(out)} rows for {len(frame)} entity rows"
        )
    return out.sort_values("_row").drop(columns="_row").reset_index(drop=True)
