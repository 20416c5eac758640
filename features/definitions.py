"""Feast objects of a data set: the `customer` entity, one feature view per table, one service.

`features/build.py` writes the tables and their schema (`views.json`: each column, its kind
and a description); the views are made from that schema, so every data set gets the views of
its own sources. They are built by a function because their sources are files under the data
folder chosen in settings (Feast's DuckDB offline store reads a FileSource path as given).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

# The one entity: everything is keyed by the customer, whose ids are text (e.g. '7590-VHVEG';
# a data set's integer ids become their decimal text at ingest).
customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A customer of the data set, identified by its customer id column (as text).",
)

# Snapshots are weekly; a row older than two weeks is stale and must not be served.
FEATURE_TTL = timedelta(days=14)

_DTYPES = {"int": Int64, "float": Float64, "string": String}
# Weekly log snapshots go stale after two weeks; a snapshot source describes one date and never expires.
_LOG_TTL, _SNAPSHOT_TTL = FEATURE_TTL, timedelta(0)


def service_name(contract: str) -> str:
    """The FeatureService of a data set's models, version 1."""
    return f"{contract}_churn_v1"


def feature_views(tables_dir: Path, schema: dict[str, list[list[str]]], snapshot_views: set[str]) -> list[FeatureView]:
    """One view per table `features/build.py` wrote; `schema` is its views.json."""
    tables_dir = Path(tables_dir).resolve()
    views = []
    for name, fields in schema.items():
        source = FileSource(
            name=f"{name}_source",
            path=str(tables_dir / f"{name}.parquet"),
            timestamp_field="event_timestamp",
            description=f"Features of {name} written by features/build.py.",
        )
        views.append(
            FeatureView(
                name=name,
                entities=[customer],
                ttl=_SNAPSHOT_TTL if name in snapshot_views else _LOG_TTL,
                schema=[Field(name=c, dtype=_DTYPES[kind], description=text) for c, kind, text in fields],
                source=source,
                online=True,
                description=f"Signals of source {name}.",
            )
        )
    return views


def feature_service(contract: str, views: list[FeatureView]) -> FeatureService:
    """All views of a data set, for its churn and value models."""
    return FeatureService(
        name=service_name(contract),
        features=views,
        description=f"Features of the models of data set {contract}.",
    )
