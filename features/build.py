"""Generic feature tables from ingested data, with no per-data-set code.

- The snapshot source becomes one view: its attributes as of its `as_of` date (numbers stay
  numbers, categories stay categories; a signup column, or a `tenure` column in its
  `tenure_unit`, becomes `tenure_days`).
- A customers source becomes one view of attributes fixed at signup, each row stamped at the
  customer's signup (known from then on).
- Every events/transactions source becomes one view of weekly snapshots (`features/weekly.py`,
  which scales like the simulator's builder): stamped at UTC midnight every 7 days back from
  the end of the data, a row stamped `s` summarizes only log rows strictly before `s` and
  exists while the customer was active within `churn.active_days` before `s`. Signals,
  prefixed with the source name: counts, distinct active days and sums of the amount/value
  columns over 7/28/91/364 days; trends (28 d vs 91 d, 91 d vs 364 d); recency, tenure (days
  since the first row), lifetime frequency (active days) and, for transactions, monetary
  value per active day (RFM); mean gap between active days; counts per value of the `kind`
  column (its 8 most frequent); the declared signals under the engine's own names.
- Lifecycle inputs under the engine's own names (the action catalog's stages read them on any
  data set): `tenure_days`, from the snapshot when it has one, else in the view of the first
  events source (else transactions source) as days since the customer's signup (a customers
  source) or first row there;
  `days_since_last_active`, from the `activity` signal when declared, else in that same view as
  days since the customer's latest row there. Snapshot-only data have no activity.

`features/definitions.py` turns the schema written next to the tables (`views.json`)
into Feast feature views.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from churn.errors import DataError
from features.contract import LOG_SHAPES, TABLE_SHAPES, ColumnType, Contract, Shape
from features.ingest import read_manifest
from features.weekly import PARTITION_CUSTOMERS, slug, weekly_log_features

_DAYS_PER = {"days": 1.0, "weeks": 7.0, "months": 30.44, "years": 365.25}  # a snapshot `tenure_unit` in days
VIEWS_FILE = "views.json"


@dataclass(frozen=True)
class FeatureTables:
    """What `build_features` wrote: per view, its table and its (column, kind, description) list."""

    tables: dict[str, Path]
    schema: dict[str, list[tuple[str, str, str]]]
    rows: dict[str, int]
    data_end: datetime


def _kind_of(dtype) -> str:
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    return "string"


def _snapshot_table(path: Path, contract: Contract, types: dict[str, str]) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    name, source = contract.snapshot
    frame = pd.read_parquet(path)
    as_of = pd.Timestamp(source.as_of, tz="UTC")
    out = pd.DataFrame({"customer_id": frame["customer_id"].astype(str), "event_timestamp": as_of})
    schema = []
    if "signup_at" in frame:
        out["tenure_days"] = (as_of - pd.to_datetime(frame["signup_at"], utc=True)).dt.days.astype("Int64")
        schema.append(("tenure_days", "int", f"Days from {source.signup} to the snapshot date."))
    elif source.tenure:
        if types.get(source.tenure) not in (ColumnType.INT.value, ColumnType.FLOAT.value):
            raise DataError(
                f"{path}: `tenure` {source.tenure!r} must be a numeric column (declare it int or float); "
                f"it was ingested as {types.get(source.tenure)}"
            )
        out["tenure_days"] = frame[source.tenure].astype("float64") * _DAYS_PER[source.tenure_unit]
        schema.append(("tenure_days", "float", f"{source.tenure} ({source.tenure_unit}) in days as of the snapshot date."))
    return out, schema + _attributes(frame, out, name, types, as_of, "the snapshot date")


def _attributes(
    frame: pd.DataFrame, out: pd.DataFrame, name: str, types: dict[str, str], since, since_text: str
) -> list[tuple[str, str, str]]:
    """Add the attribute columns of a one-row-per-customer table to `out`; returns their schema.

    Numbers stay numbers, categories stay categories; a timestamp column becomes the days from
    it to `since` (a date, or per customer), named `days_since_<column>`.
    """
    schema = []
    for column in frame.columns:
        if column in ("customer_id", "churned", "signup_at"):
            continue
        kind = types.get(column, "categorical")
        feature = f"{slug(column)}"
        if kind == ColumnType.TIMESTAMP.value:
            out[f"days_since_{feature}"] = (since - pd.to_datetime(frame[column], utc=True)).dt.days.astype("Int64")
            schema.append((f"days_since_{feature}", "int", f"Days from {column} to {since_text}."))
        elif kind == ColumnType.CATEGORICAL.value:
            out[feature] = frame[column].astype("string")
            schema.append((feature, "string", f"{column} (categorical) from source {name}."))
        else:
            out[feature] = frame[column].astype("float64")
            schema.append((feature, "float", f"{column} from source {name}."))
    return schema


def _customers_table(path: Path, contract: Contract, types: dict[str, str]) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """The customers source as one row per customer stamped at its signup: known from then on."""
    name, source = contract.customers
    frame = pd.read_parquet(path)
    signup = pd.to_datetime(frame["signup_at"], utc=True)
    out = pd.DataFrame({"customer_id": frame["customer_id"].astype(str), "event_timestamp": signup})
    return out, _attributes(frame, out, name, types, signup, f"{source.signup} (signup)")


def _lifecycle_columns(contract: Contract) -> dict[str, str]:
    """Generic lifecycle inputs a log source carries: column -> source name.

    `tenure_days` unless the snapshot gives it, `days_since_last_active` unless an `activity`
    signal gives it; both in the first events source (else transactions source).
    """
    logs = contract.of_shape(Shape.EVENTS) or contract.of_shape(Shape.TRANSACTIONS)
    if not logs:
        return {}
    first = next(iter(logs))
    snapshot = contract.snapshot
    out = {}
    if not (snapshot and (snapshot[1].signup or snapshot[1].tenure)):
        out["tenure_days"] = first  # from the customers source's signup when there is one
    if not any(s.signals.activity for s in contract.sources.values()):
        out["days_since_last_active"] = first
    return out


def _lifecycle_described(fields: list[tuple[str, str, str]], name: str, signups: Path | None) -> list[tuple[str, str, str]]:
    """The descriptions of the generic lifecycle inputs a log view carries."""
    text = {
        "tenure_days": "Days from the customer's signup to the snapshot (tenure)." if signups is not None
        else f"Days from the customer's first row of {name} to the snapshot (tenure).",
        "days_since_last_active": f"Days from the customer's latest row of {name} to the snapshot "
        "(no `activity` signal is declared: any row counts as activity).",
    }
    return [(c, k, text.get(c, d)) for c, k, d in fields]


def build_features(
    ingested_dir: Path, out_dir: Path, memory_limit: str = "4GB", partition_customers: int = PARTITION_CUSTOMERS,
    client=None, partitions: int | None = None, step: Callable[..., None] = lambda what, done=None, total=None: None,
) -> FeatureTables:
    """Write one feature table per source of the last ingest into `out_dir` (logs: `features/weekly.py`).

    `memory_limit` and `partition_customers`: DuckDB's memory limit and the customers per
    partition of the window step of every log (settings `build.*`).
    `client` (Dask mode, a `distributed.Client`): the log views' customer partitions (`partitions`
    of them; default as `weekly_log_features`) are built as Dask tasks; the tables are the same.
    `step(what, done=None, total=None)` as each view's build starts, and for a log view with
    its customer partitions done so far, as `training.train.train` reports its steps.
    """
    manifest = read_manifest(ingested_dir)
    contract = Contract.model_validate(manifest["contract"])
    end = datetime.fromisoformat(manifest["data_end"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables, schema, rows = {}, {}, {}
    for name, source in contract.sources.items():
        path = Path(ingested_dir) / f"{name}.parquet"
        if source.shape not in (*TABLE_SHAPES, *LOG_SHAPES):
            continue  # cancellations: no view of their own (they end customers' activity)
        view = f"{contract.name}_{name}"
        what = f"feature view {view}"
        step(what)
        if source.shape == Shape.SNAPSHOT:
            frame, fields = _snapshot_table(path, contract, manifest["types"][name])
        elif source.shape == Shape.CUSTOMERS:
            frame, fields = _customers_table(path, contract, manifest["types"][name])
        else:  # a log
            signups = Path(ingested_dir) / f"{contract.customers[0]}.parquet" if contract.customers else None
            lifecycle = tuple(c for c, n in _lifecycle_columns(contract).items() if n == name)
            target = out_dir / f"{view}.parquet"
            built = weekly_log_features(
                path, name, contract, end, manifest["types"][name], target, memory_limit=memory_limit,
                partition_customers=partition_customers, lifecycle=lifecycle, signups=signups, client=client,
                partitions=partitions, progress=lambda done, total: step(what, done, total),
            )
            tables[view], schema[view], rows[view] = target, _lifecycle_described(built.fields, name, signups), built.rows
            continue
        if frame.empty:
            raise DataError(f"{path}: no customer is active at any weekly snapshot; nothing to build features from")
        target = out_dir / f"{view}.parquet"
        tmp = target.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(target)
        tables[view], schema[view], rows[view] = target, fields, len(frame)
    (out_dir / VIEWS_FILE).write_text(json.dumps(
            {
                "contract": contract.name,
                "views": schema,
                # views of one row per customer: they never go stale (no TTL)
                "snapshot_views": [f"{contract.name}_{n}" for n in contract.of_shape(*TABLE_SHAPES)],
                "log_views": [f"{contract.name}_{n}" for n in contract.of_shape(*LOG_SHAPES)],
                "data_end": end.isoformat(),
            },
            indent=2,
        ))
    return FeatureTables(tables, schema, rows, end)


def read_views(tables_dir: Path) -> dict:
    """The schema `build_features` wrote (views, their fields, the end of the data)."""
    path = Path(tables_dir) / VIEWS_FILE
    if not path.exists():
        raise DataError(f"{path} is missing; run `churn features build` after `churn ingest`")
    return json.loads(path.read_text())
