"""Point-in-time correctness: nothing stamped after a cutoff reaches that cutoff's training row."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.build import build_feature_tables
from features.store import apply_definitions, historical_features
from training.dataset import cutoff_dates, label_frame

from tests.conftest import make_settings


def _inject_complaints(raw_events: pd.DataFrame, customer_id: int, when: pd.Timestamp, n: int) -> pd.DataFrame:
    burst = pd.DataFrame(
        {
            "customer_id": customer_id,
            "event_time": [when + timedelta(minutes=i) for i in range(n)],
            "event_type": "complaint",
            "value": 1.0,
        }
    )
    return pd.concat([raw_events, burst], ignore_index=True).sort_values("event_time", kind="stable")


def test_future_events_do_not_reach_a_training_row(engine, tmp_path):
    """Add 40 complaints just after a cutoff; the cutoff's row must not see them, the next week's must."""
    src = engine.settings
    settings = make_settings(tmp_path)
    for table in ("customers", "transactions", "cancellations"):
        pq.write_table(pq.read_table(src.raw_dir / f"{table}.parquet"), settings.raw_dir / f"{table}.parquet")
    events = pd.read_parquet(src.raw_dir / "events.parquet")

    as_of = engine.features.as_of
    cutoffs = cutoff_dates(as_of, 30, 2, 28)
    cutoff = pd.Timestamp(cutoffs[-1])
    labels = label_frame(src.raw_dir, [cutoff.to_pydatetime()], 30, 365)
    customer = int(labels["customer_id"].iloc[0])

    # the complaints land at the cutoff itself and just after it, but before the next snapshot
    poisoned = _inject_complaints(events, customer, cutoff, 20)
    poisoned = _inject_complaints(poisoned, customer, cutoff + timedelta(hours=30), 20)
    pq.write_table(
        pa.Table.from_pandas(poisoned, schema=pq.read_schema(src.raw_dir / "events.parquet"), preserve_index=False),
        settings.raw_dir / "events.parquet",
    )
    build_feature_tables(settings.raw_dir, settings.feature_tables_dir)
    apply_definitions(settings)

    entity = pd.DataFrame(
        {
            "customer_id": [customer, customer],
            "event_timestamp": [cutoff, cutoff + timedelta(days=7)],
        }
    )
    poisoned_rows = historical_features(settings, entity, "churn_model_v1")
    clean_rows = historical_features(src, entity, "churn_model_v1")

    # at the cutoff: identical to the data without the burst
    assert poisoned_rows.loc[0, "complaints_28d"] == clean_rows.loc[0, "complaints_28d"]
    # a week later the burst is visible: the case really would leak without point-in-time care
    assert poisoned_rows.loc[1, "complaints_28d"] == clean_rows.loc[1, "complaints_28d"] + 40


def test_feature_rows_are_stamped_after_what_they_summarize(engine):
    """Every feature row's window ends at its timestamp: activity counted at s happened before s."""
    events = pd.read_parquet(engine.settings.raw_dir / "events.parquet")
    behavioral = pd.read_parquet(engine.settings.feature_tables_dir / "behavioral.parquet")
    sample = behavioral[behavioral["active_days_7d"] > 0].sample(200, random_state=0)
    activity = events[events["event_type"] == "activity"]
    for row in sample.itertuples():
        window = activity[
            (activity["customer_id"] == row.customer_id)
            & (activity["event_time"] >= row.event_timestamp - timedelta(days=7))
            & (activity["event_time"] < row.event_timestamp)
        ]
        assert window["event_time"].dt.date.nunique() == row.active_days_7d


def test_join_takes_the_latest_row_at_or_before_the_timestamp(engine):
    """An entity row between two snapshots gets the earlier one, never the later (future) one."""
    behavioral = pd.read_parquet(engine.settings.feature_tables_dir / "behavioral.parquet")
    stamps = sorted(behavioral["event_timestamp"].unique())
    early, late = stamps[-3], stamps[-2]
    both = set(behavioral.loc[behavioral["event_timestamp"] == early, "customer_id"]) & set(
        behavioral.loc[behavioral["event_timestamp"] == late, "customer_id"]
    )
    rows = behavioral[behavioral["customer_id"].isin(both)]
    pivot = rows.pivot_table(index="customer_id", columns="event_timestamp", values="sessions_91d")
    changed = pivot[pivot[early] != pivot[late]].index[:20]
    entity = pd.DataFrame({"customer_id": changed, "event_timestamp": early + timedelta(days=3, hours=12)})
    got = historical_features(engine.settings, entity, "churn_model_v1")
    assert len(changed) > 0
    assert (got["sessions_91d"].to_numpy() == pivot.loc[changed, early].to_numpy()).all()
