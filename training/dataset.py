"""Labels and point-in-time training sets.

A training row is (customer, cutoff): a customer active at the cutoff, the features Feast
serves as of the cutoff, and what happened after it:
- churn label: cancelled within `horizon_days` after the cutoff;
- CLV target: revenue over `clv_horizon_days` after the cutoff (zero if they left).
Cutoffs sit on the weekly feature snapshots, the latest one a full horizon before the end
of the data, so that every label is fully observed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from churn.errors import DataError
from churn.settings import Settings
from features.raw import RAW_TABLES
from features.store import historical_features

# Features that may be legitimately absent, with the meaning of absence (the model is trained with it).
NULLABLE_FEATURES = {"last_nps": "the customer never answered an NPS survey"}


def cutoff_dates(as_of: datetime, horizon_days: int, n_cutoffs: int, spacing_days: int) -> list[datetime]:
    """`n_cutoffs` weekly-aligned dates, the latest at least `horizon_days` before `as_of`, oldest first."""
    latest = as_of - timedelta(days=7 * -(-horizon_days // 7))
    return [latest - timedelta(days=spacing_days * k) for k in reversed(range(n_cutoffs))]


def _raw(con: duckdb.DuckDBPyConnection, raw_dir: Path) -> None:
    for name, spec in RAW_TABLES.items():
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW raw_{name} AS SELECT * REPLACE "
            f"(CAST({spec.time_column} AS TIMESTAMPTZ) AS {spec.time_column}) "
            f"FROM read_parquet('{Path(raw_dir) / spec.file}')"
        )


def label_frame(raw_dir: Path, cutoffs: list[datetime], horizon_days: int, clv_horizon_days: int) -> pd.DataFrame:
    """One row per customer active at each cutoff, with both targets.

    A cutoff listed twice counts once (the churn and CLV cutoffs of a run overlap when the CLV
    horizon is short, e.g. 91 days: `train` asks for both lists at once).
    Returns columns: customer_id, event_timestamp (the cutoff), churned (0/1), future_revenue.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    _raw(con, raw_dir)
    con.register("cutoffs", pd.DataFrame({"cutoff": pd.to_datetime(cutoffs, utc=True).unique()}))
    frame = con.execute(
        f"""
        WITH gone AS (
            SELECT customer_id, min(cancelled_at) AS cancelled_at FROM raw_cancellations GROUP BY customer_id
        ),
        rows AS (
            SELECT c.customer_id, CAST(k.cutoff AS TIMESTAMPTZ) AS cutoff, g.cancelled_at
            FROM raw_customers c CROSS JOIN cutoffs k LEFT JOIN gone g USING (customer_id)
            WHERE c.signup_at < k.cutoff AND (g.cancelled_at IS NULL OR g.cancelled_at >= k.cutoff)
        ),
        revenue AS (
            SELECT r.customer_id, r.cutoff, sum(t.amount) AS future_revenue
            FROM rows r JOIN raw_transactions t
              ON t.customer_id = r.customer_id
             AND t.transaction_time >= r.cutoff
             AND t.transaction_time < r.cutoff + to_days({clv_horizon_days})
            GROUP BY ALL
        )
        SELECT r.customer_id, r.cutoff AS event_timestamp,
            CAST(coalesce(r.cancelled_at < r.cutoff + to_days({horizon_days}), false) AS INTEGER) AS churned,
            coalesce(v.future_revenue, 0.0) AS future_revenue
        FROM rows r LEFT JOIN revenue v USING (customer_id, cutoff)
        ORDER BY event_timestamp, customer_id
        """
    ).df()
    con.close()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def sampled_customers(labels: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The rows of `labels` whose customer is among `limit` customers drawn by a stable hash of the id.

    The same customers are kept at every cutoff and in every training set of one run (the
    churn and the value model's), and from run to run; `limit` None keeps every row.
    """
    ids = labels["customer_id"].astype(str)
    distinct = ids.drop_duplicates()
    if limit is None or len(distinct) <= limit:
        return labels
    hashes = pd.util.hash_pandas_object(distinct, index=False).to_numpy()
    kept = set(distinct.to_numpy()[np.argsort(hashes, kind="stable")[:limit]].tolist())
    return labels[ids.isin(kept).to_numpy()].reset_index(drop=True)


def training_set(settings: Settings, labels: pd.DataFrame, service: str) -> pd.DataFrame:
    """Join the FeatureService's features onto `labels` point-in-time correctly (through Feast)."""
    return historical_features(settings, labels, service)


def required_features(model) -> list[str]:
    """The features a registered model needs a value of: those it never saw missing in training.

    Models of ingested data record them (`extra["required"]`); the simulator's models need all
    but `NULLABLE_FEATURES`.
    """
    if "required" in model.extra:
        return list(model.extra["required"])
    return [f for f in model.feature_names if f not in NULLABLE_FEATURES]


def check_features(frame: pd.DataFrame, feature_names: list[str], where: str, required: list[str] | None = None) -> None:
    """Raise `DataError` if a feature that must be present is missing, naming customers and columns.

    `required`: the features that must have a value (default: all but `NULLABLE_FEATURES`).
    """
    absent = [f for f in feature_names if f not in frame.columns]
    if required is None:
        required = [f for f in feature_names if f not in NULLABLE_FEATURES]
    if absent:
        raise DataError(f"{where}: feature columns {absent} did not arrive from the feature store")
    holes = frame[required].isna()
    if holes.to_numpy().any():
        rows = holes.any(axis=1)
        sample = frame.loc[rows, "customer_id"].head(5).tolist()
        columns = holes.columns[holes.any(axis=0)].tolist()
        raise DataError(
            f"{where}: {int(rows.sum())} rows have no value for {columns} "
            f"(e.g. customer_id {sample}); the feature store has no fresh row for them"
        )


def to_matrix(frame: pd.DataFrame, feature_names: list[str], categories: dict[str, list[str]]) -> np.ndarray:
    """The model input: a float64 array in `feature_names` order, categoricals as their codes.

    `categories` holds the known values of each categorical feature (a feature is categorical
    exactly when it is a key of `categories`). A categorical value not seen in training is an
    error, not a silent code.
    """
    columns = []
    for name in feature_names:
        values = frame[name]
        if name in categories:
            known = categories[name]
            codes = pd.Categorical(values, categories=known).codes.astype(np.float64)
            unseen = (codes < 0) & values.notna().to_numpy()
            if unseen.any():
                bad = values[unseen].iloc[0]
                raise DataError(f"feature {name!r}: value {bad!r} was not seen in training; known {known}")
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            numeric = pd.to_numeric(values, errors="coerce")
            broken = numeric.isna().to_numpy() & values.notna().to_numpy()
            if broken.any():
                row = int(np.flatnonzero(broken)[0])
                who = f" (customer_id {frame['customer_id'].iloc[row]})" if "customer_id" in frame else ""
                raise DataError(
                    f"feature {name!r}: {int(broken.sum())} value(s) are not numbers, "
                    f"e.g. {values.iloc[row]!r} at row {row}{who}"
                )
            columns.append(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def fingerprint(frame: pd.DataFrame) -> str:
    """A short, order-sensitive hash of a training set, logged with the model."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]
