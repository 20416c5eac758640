"""Feast objects: the `customer` entity, four feature views and one service per model version.

The field lists are declared here once; `features/build.py` writes tables with exactly
these columns and the models are trained on exactly the fields of their FeatureService.
The views are built by a function because their sources are files under the data folder
chosen in settings (Feast's DuckDB offline store reads a FileSource path as given).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

from churn.errors import ConfigError

# The one entity: everything is keyed by the customer.
customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A subscriber, identified by the customer_id of the raw tables.",
)

# Snapshots are weekly; a row older than two weeks is stale and must not be served.
FEATURE_TTL = timedelta(days=14)

# Activity, usage and recency.
BEHAVIORAL = [
    Field(name="active_days_7d", dtype=Int64, description="Days with activity in the 7 days before the snapshot."),
    Field(name="active_days_28d", dtype=Int64, description="Days with activity in the 28 days before the snapshot."),
    Field(name="active_days_91d", dtype=Int64, description="Days with activity in the 91 days before the snapshot."),
    Field(name="sessions_7d", dtype=Float64, description="Sessions in the 7 days before the snapshot."),
    Field(name="sessions_28d", dtype=Float64, description="Sessions in the 28 days before the snapshot."),
    Field(name="sessions_91d", dtype=Float64, description="Sessions in the 91 days before the snapshot."),
    Field(
        name="activity_trend_7d_28d",
        dtype=Float64,
        description="(active_days_7d + 1) / (active_days_28d / 4 + 1): below 1 means activity is falling.",
    ),
    Field(
        name="activity_trend_28d_91d",
        dtype=Float64,
        description="(active_days_28d + 1) / (active_days_91d * 4 / 13 + 1): below 1 means activity is falling.",
    ),
    Field(
        name="days_since_last_activity",
        dtype=Int64,
        description="Days from the last activity (or from signup, if none) to the snapshot.",
    ),
]

# Where the customer is in the subscription: tenure, plan, price, renewal, payments.
LIFECYCLE = [
    Field(name="tenure_days", dtype=Int64, description="Days from signup to the snapshot."),
    Field(name="plan", dtype=String, description="Billing plan: 'monthly' or 'annual'."),
    Field(name="price_tier", dtype=String, description="Price tier at signup: 'basic', 'standard' or 'premium'."),
    Field(name="channel", dtype=String, description="Acquisition channel at signup."),
    Field(name="monthly_price", dtype=Float64, description="Current monthly list price, after any downgrade."),
    Field(
        name="days_to_renewal",
        dtype=Int64,
        description="Days to the next renewal: 365-day cycles for annual plans, 30-day cycles for monthly.",
    ),
    Field(name="payment_failures_28d", dtype=Int64, description="Failed payments in the 28 days before the snapshot."),
    Field(name="payment_failures_91d", dtype=Int64, description="Failed payments in the 91 days before the snapshot."),
    Field(name="downgrades_91d", dtype=Int64, description="Plan downgrades in the 91 days before the snapshot."),
]

# Support, complaints and satisfaction.
EXPERIENCE = [
    Field(name="tickets_28d", dtype=Int64, description="Support tickets in the 28 days before the snapshot."),
    Field(name="tickets_91d", dtype=Int64, description="Support tickets in the 91 days before the snapshot."),
    Field(name="complaints_28d", dtype=Int64, description="Complaints in the 28 days before the snapshot."),
    Field(name="complaints_91d", dtype=Int64, description="Complaints in the 91 days before the snapshot."),
    Field(
        name="last_nps",
        dtype=Float64,
        description="Latest NPS answer (0-10) before the snapshot; null if the customer never answered.",
    ),
]

# Money: what the customer has paid.
VALUE = [
    Field(name="revenue_28d", dtype=Float64, description="Revenue (charges and add-ons) in the 28 days before."),
    Field(name="revenue_91d", dtype=Float64, description="Revenue in the 91 days before the snapshot."),
    Field(name="revenue_364d", dtype=Float64, description="Revenue in the 364 days before the snapshot."),
    Field(name="addon_revenue_91d", dtype=Float64, description="Add-on revenue in the 91 days before the snapshot."),
    Field(name="addon_purchases_91d", dtype=Int64, description="Add-on purchases in the 91 days before the snapshot."),
]

SCHEMAS: dict[str, list[Field]] = {
    "behavioral": BEHAVIORAL,
    "lifecycle": LIFECYCLE,
    "experience": EXPERIENCE,
    "value": VALUE,
}
VIEW_COLUMNS: dict[str, list[str]] = {view: [f.name for f in fields] for view, fields in SCHEMAS.items()}
CATEGORICAL_FEATURES = tuple(f.name for fields in SCHEMAS.values() for f in fields if f.dtype == String)

# One FeatureService per model version: a registered model names the service it was trained on.
FEATURE_SERVICE_VIEWS: dict[str, tuple[str, ...]] = {
    "churn_model_v1": ("behavioral", "lifecycle", "experience", "value"),
    "clv_model_v1": ("behavioral", "lifecycle", "experience", "value"),
}


def feature_views(tables_dir: Path) -> list[FeatureView]:
    """The four feature views, reading the tables `features/build.py` wrote into `tables_dir`."""
    tables_dir = Path(tables_dir).resolve()
    views = []
    for name, schema in SCHEMAS.items():
        source = FileSource(
            name=f"{name}_source",
            path=str(tables_dir / f"{name}.parquet"),
            timestamp_field="event_timestamp",
            description=f"Weekly {name} snapshots written by features/build.py.",
        )
        views.append(
            FeatureView(
                name=name,
                entities=[customer],
                ttl=FEATURE_TTL,
                schema=schema,
                source=source,
                online=True,
                description=f"{name.capitalize()} signals per customer, one row per weekly snapshot.",
            )
        )
    return views


def feature_services(views: list[FeatureView]) -> list[FeatureService]:
    """One service per model version, each naming the views its model reads."""
    by_name = {v.name: v for v in views}
    return [
        FeatureService(
            name=service,
            features=[by_name[v] for v in view_names],
            description=f"Features of model version {service}.",
        )
        for service, view_names in FEATURE_SERVICE_VIEWS.items()
    ]


def feature_names(service: str) -> list[str]:
    """The model input columns of a FeatureService, in a fixed order."""
    if service not in FEATURE_SERVICE_VIEWS:
        raise ConfigError(f"unknown feature service {service!r}; known: {sorted(FEATURE_SERVICE_VIEWS)}")
    return [column for view in FEATURE_SERVICE_VIEWS[service] for column in VIEW_COLUMNS[view]]


# ---------------------------------------------------------------- ingested data (bring your own)
# Customers of an ingested data set: ids are text (e.g. '7590-VHVEG'), so a separate entity.
contract_customer = Entity(
    name="contract_customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A customer of an ingested data set, identified by its customer id column (as text).",
)

_DTYPES = {"int": Int64, "float": Float64, "string": String}
# Weekly log snapshots go stale after two weeks; a snapshot source describes one date and never expires.
_LOG_TTL, _SNAPSHOT_TTL = FEATURE_TTL, timedelta(0)


def contract_service_name(contract: str) -> str:
    """The FeatureService of an ingested data set's churn model, version 1."""
    return f"{contract}_churn_v1"


def contract_feature_views(tables_dir: Path, schema: dict[str, list[list[str]]], snapshot_views: set[str]) -> list[FeatureView]:
    """One view per table `features/contract_features.py` wrote; `schema` is its views.json."""
    tables_dir = Path(tables_dir).resolve()
    views = []
    for name, fields in schema.items():
        source = FileSource(
            name=f"{name}_source",
            path=str(tables_dir / f"{name}.parquet"),
            timestamp_field="event_timestamp",
            description=f"Generic features of {name} written by features/contract_features.py.",
        )
        views.append(
            FeatureView(
                name=name,
                entities=[contract_customer],
                ttl=_SNAPSHOT_TTL if name in snapshot_views else _LOG_TTL,
                schema=[Field(name=c, dtype=_DTYPES[kind], description=text) for c, kind, text in fields],
                source=source,
                online=True,
                description=f"Signals of ingested source {name}.",
            )
        )
    return views


def contract_feature_service(contract: str, views: list[FeatureView]) -> FeatureService:
    """All views of an ingested data set, for its churn model."""
    return FeatureService(
        name=contract_service_name(contract),
        features=views,
        description=f"Features of the churn model of ingested data set {contract}.",
    )
