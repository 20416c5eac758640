"""Feast's point-in-time join agrees value for value with the hand-written DuckDB ASOF JOIN of features/pit.py."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.definitions import VIEW_COLUMNS
from features.pit import active_feature_batches, asof_features
from features.store import historical_features


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
    reference = asof_features(engine.settings.feature_tables_dir, entity)

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


def test_active_batches_are_the_point_in_time_rows_at_as_of(engine):
    """Batch scoring's chunked read equals Feast's join for every active customer, in bounded chunks."""
    settings, as_of = engine.settings, engine.features.as_of
    batches = list(active_feature_batches(settings.feature_tables_dir, as_of, batch_rows=500))
    assert len(batches) > 1 and max(len(b) for b in batches) <= 500
    streamed = pd.concat(batches, ignore_index=True)
    assert streamed["customer_id"].is_unique
    entity = pd.DataFrame({"customer_id": streamed["customer_id"], "event_timestamp": as_of})
    columns = [c for cols in VIEW_COLUMNS.values() for c in cols]
    feast_rows = historical_features(settings, entity, "churn_model_v1")
    pd.testing.assert_frame_equal(streamed[columns], feast_rows[columns], check_dtype=False)
    scored = pd.read_parquet(engine.interventions.scores_path, columns=["customer_id"])
    assert set(streamed["customer_id"]) == set(scored["customer_id"])  # the same population batch runs score
