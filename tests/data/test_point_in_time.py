"""Point-in-time correctness: nothing stamped after a cutoff reaches that cutoff's training row."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pandas as pd

from features.contract import load_contract
from features.build import build_features
from features.ingest import ingest
from features.simulate import CONFIG_FILE
from features.store import apply_definitions, historical_features

from tests.conftest import make_settings

EVENTS = "simulated_events"  # the feature view of the simulator's events source


def _inject_complaints(raw_events: pd.DataFrame, customer_id: int, when: pd.Timestamp, n: int) -> pd.DataFrame:
    burst = pd.DataFrame(
        {
            "customer_id": customer_id,
            "event_time": [when + timedelta(minutes=i) for i in range(n)],
            "event_type": "complaint",
            "value": 1.0,
        }
    ).astype(raw_events.dtypes.to_dict())
    return pd.concat([raw_events, burst], ignore_index=True).sort_values("event_time", kind="stable")


def test_future_events_do_not_reach_a_training_row(engine, tmp_path):
    """Add 40 complaints just after a cutoff; the cutoff's row must not see them, the next week's must."""
    src = engine.settings
    settings = make_settings(tmp_path)
    for table in src.raw_dir.iterdir():
        shutil.copy(table, settings.raw_dir / table.name)
    events = pd.read_parquet(src.raw_dir / "events.parquet")
    cutoff = pd.Timestamp(engine.as_of) - timedelta(days=28)  # a weekly snapshot
    view = pd.read_parquet(engine.features.tables[EVENTS], columns=["customer_id", "event_timestamp"])
    customer = view.loc[view["event_timestamp"] == cutoff, "customer_id"].iloc[0]  # active at the cutoff (text id)

    # the complaints land at the cutoff itself and just after it, but before the next snapshot
    poisoned = _inject_complaints(events, int(customer), cutoff, 20)
    poisoned = _inject_complaints(poisoned, int(customer), cutoff + timedelta(hours=30), 20)
    poisoned.to_parquet(settings.raw_dir / "events.parquet", index=False)
    contract, root = load_contract(settings.raw_dir / CONFIG_FILE)
    ingest(contract, root, settings.ingested_dir)
    build_features(settings.ingested_dir, settings.feature_tables_dir)
    apply_definitions(settings)

    entity = pd.DataFrame({"customer_id": [customer, customer], "event_timestamp": [cutoff, cutoff + timedelta(days=7)]})
    poisoned_rows = historical_features(settings, entity, engine.service)
    clean_rows = historical_features(src, entity, engine.service)

    # at the cutoff: identical to the data without the burst
    for name in ("complaints_28d", "events_event_type_complaint_28d", "events_count_28d"):
        assert poisoned_rows.loc[0, name] == clean_rows.loc[0, name], name
    # a week later the burst is visible: the case really would leak without point-in-time care
    assert poisoned_rows.loc[1, "complaints_28d"] == clean_rows.loc[1, "complaints_28d"] + 40
    assert poisoned_rows.loc[1, "events_count_28d"] == clean_rows.loc[1, "events_count_28d"] + 40


def test_feature_rows_are_stamped_after_what_they_summarize(engine):
    """Every feature row's window ends at its timestamp: activity counted at s happened before s."""
    events = pd.read_parquet(engine.settings.raw_dir / "events.parquet")
    table = pd.read_parquet(engine.features.tables[EVENTS])
    sample = table[table["active_days_7d"] > 0].sample(200, random_state=0)
    activity = events[events["event_type"] == "activity"]
    for row in sample.itertuples():
        window = activity[
            (activity["customer_id"] == int(row.customer_id))
            & (activity["event_time"] >= row.event_timestamp - timedelta(days=7))
            & (activity["event_time"] < row.event_timestamp)
        ]
        assert window["event_time"].dt.date.nunique() == row.active_days_7d


def test_join_takes_the_latest_row_at_or_before_the_timestamp(engine):
    """An entity row between two snapshots gets the earlier one, never the later (future) one."""
    table = pd.read_parquet(engine.features.tables[EVENTS])
    stamps = sorted(table["event_timestamp"].unique())
    early, late = stamps[-3], stamps[-2]
    both = set(table.loc[table["event_timestamp"] == early, "customer_id"]) & set(
        table.loc[table["event_timestamp"] == late, "customer_id"]
    )
    rows = table[table["customer_id"].isin(both)]
    pivot = rows.pivot_table(index="customer_id", columns="event_timestamp", values="sessions_91d")
    changed = pivot[pivot[early] != pivot[late]].index[:20]
    entity = pd.DataFrame({"customer_id": changed, "event_timestamp": early + timedelta(days=3, hours=12)})
    got = historical_features(engine.settings, entity, engine.service)
    assert len(changed) > 0
    assert (got["sessions_91d"].to_numpy() == pivot.loc[changed, early].to_numpy()).all()
