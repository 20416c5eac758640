"""Feast's point-in-time join agrees value for value with a hand-written DuckDB ASOF JOIN."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from features.definitions import FEATURE_TTL, VIEW_COLUMNS
from features.store import historical_features


def _asof_join(tables_dir, entity: pd.DataFrame) -> pd.DataFrame:
    """The reference: for each entity row, the latest feature row at or before it, within the TTL."""
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.register("entity", entity)
    select, joins = [], []
    for view, columns in VIEW_COLUMNS.items():
        path = tables_dir / f"{view}.parquet"
        alias = f"v_{view}"
        joins.append(
            f"ASOF LEFT JOIN read_parquet('{path}') {alias} "
            f"ON e.customer_id = {alias}.customer_id AND e.event_timestamp >= {alias}.event_timestamp"
        )
        ttl = int(FEATURE_TTL.total_seconds())
        select += [
            f"CASE WHEN e.event_timestamp - {alias}.event_timestamp <= to_seconds({ttl}) "
            f"THEN {alias}.{c} END AS {c}"
            for c in columns
        ]
    query = f"SELECT e.row_id, e.customer_id, e.event_timestamp, {', '.join(select)} FROM entity e {' '.join(joins)} ORDER BY e.row_id"
    return con.execute(query).df()


def test_feast_join_matches_asof_join(engine):
    rng = np.random.default_rng(3)
    behavioral = pd.read_parquet(engine.settings.feature_tables_dir / "behavioral.parquet", columns=["customer_id", "event_timestamp"])
    # entity rows at arbitrary times (not on snapshots), some long after a customer's last row (stale), some unknown
    picks = behavioral.sample(3_000, random_state=1, replace=False).reset_index(drop=True)
    offsets = pd.to_timedelta(rng.integers(0, 30 * 86_400, len(picks)), unit="s")
    entity = pd.DataFrame(
        {"customer_id": picks["customer_id"].to_numpy(), "event_timestamp": picks["event_timestamp"] + offsets}
    )
    entity.loc[:49, "customer_id"] = 10_000_000 + np.arange(50)  # unknown customers
    entity = pd.concat([entity, entity.iloc[:100]], ignore_index=True)  # repeated entity rows stay repeated
    entity["row_id"] = np.arange(len(entity))

    feast_rows = historical_features(engine.settings, entity, "churn_model_v1")
    reference = _asof_join(engine.settings.feature_tables_dir, entity)

    assert len(feast_rows) == len(entity)  # exactly one row per entity row
    assert (feast_rows["row_id"].to_numpy() == entity["row_id"].to_numpy()).all()
    columns = [c for cols in VIEW_COLUMNS.values() for c in cols]
    stale = reference[columns].isna().all(axis=1)
    assert stale.sum() >= 50  # the case includes rows that must get nothing
    pd.testing.assert_frame_equal(
        feast_rows[columns].reset_index(drop=True),
        reference[columns].reset_index(drop=True),
        check_dtype=False,
    )
