"""Feature staleness is judged at the engine's clock: a batch run never decides on features past their TTL."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from churn import clock
from churn.errors import DataError
from features.definitions import FEATURE_TTL
from features.store import latest_snapshot
from serving.batch import run_interventions


def _first_snapshot(engine):
    """The earliest weekly snapshot of the engine's log views."""
    return min(pd.read_parquet(engine.features.tables[v], columns=["event_timestamp"])["event_timestamp"].min() for v in ("simulated_events", "simulated_payments"))


def test_the_latest_snapshot_at_the_clock(engine):
    end = engine.as_of  # the last weekly snapshot is the end of the data
    assert latest_snapshot(engine.settings, end) == end
    # between two snapshots: the one before; within the TTL after the data: the last one
    assert latest_snapshot(engine.settings, end - timedelta(days=3)) == end - timedelta(days=7)
    assert latest_snapshot(engine.settings, end + FEATURE_TTL) == end


def test_features_past_their_ttl_are_refused_with_what_to_do(engine):
    end = engine.as_of
    later = engine.settings.model_copy(update={"now": end + FEATURE_TTL + timedelta(days=1)})
    with pytest.raises(DataError, match=rf"the features are stale: the latest snapshot \({end:%Y-%m-%d}\) is 15 days before now .* \(CHURN_NOW={end:%Y-%m-%d}\)"):
        run_interventions(later)
    with pytest.raises(DataError, match=r"no feature snapshot at or before now"):
        latest_snapshot(engine.settings, _first_snapshot(engine) - timedelta(days=1))
    assert clock.now(later) == end + FEATURE_TTL + timedelta(days=1)
