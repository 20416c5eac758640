"""Feature build on a tiny raw data set written by hand: exact windows, strictly before the snapshot."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.errors import DataError
from features.build import build_feature_tables, raw_as_of
from features.definitions import VIEW_COLUMNS
from features.raw import RAW_TABLES


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _utc(values: list[str]) -> pd.Series:
    return pd.Series([ts(v) for v in values], dtype="datetime64[us, UTC]")


def _write_raw(
    raw_dir: Path, customers: list[tuple], events: list[tuple], transactions: list[tuple], cancellations: list[tuple]
) -> None:
    """The four raw tables, typed as the contract asks even when a table is empty."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "customer_id": pd.Series([c[0] for c in customers], dtype="int64"),
            "signup_at": _utc([c[1] for c in customers]),
            "plan": pd.Series([c[2] for c in customers], dtype="string"),
            "price_tier": "standard",
            "monthly_price": 19.99,
            "channel": "organic",
        }
    ).to_parquet(raw_dir / RAW_TABLES["customers"].file, index=False)
    _write_log(raw_dir, "events", ["customer_id", "event_time", "event_type", "value"], events)
    _write_log(raw_dir, "transactions", ["customer_id", "transaction_time", "kind", "amount"], transactions)
    rows = [(c[0], c[1], "voluntary") for c in cancellations]
    _write_log(raw_dir, "cancellations", ["customer_id", "cancelled_at", "reason"], rows)


_LOG_TYPES = {"customer_id": "int64", "value": "float64", "amount": "float64"}


def _write_log(raw_dir: Path, table: str, columns: list[str], rows: list[tuple]) -> None:
    """One raw log from tuples: ids int64, the time column UTC, numbers float64, the rest strings."""
    data = {}
    for i, name in enumerate(columns):
        values = [row[i] for row in rows]
        if name.endswith(("_time", "_at")):
            data[name] = _utc(values)
        else:
            data[name] = pd.Series(values, dtype=_LOG_TYPES.get(name, "string"))
    pd.DataFrame(data).to_parquet(raw_dir / RAW_TABLES[table].file, index=False)

# the latest event is 2025-03-01 10:00, so the data ends (and the last snapshot sits) at 2025-03-02 00:00
AS_OF = datetime(2025, 3, 2, tzinfo=timezone.utc)
SNAPSHOTS = [ts(d) for d in ("2025-02-02", "2025-02-09", "2025-02-16", "2025-02-23", "2025-03-02")]

CUSTOMERS = [
    (1, "2024-12-01 10:00", "monthly"),  # active throughout
    (2, "2025-02-05 10:00", "monthly"),  # signs up and cancels between snapshots
    (3, "2025-02-16 00:00", "annual"),  # signs up exactly at a snapshot
    (4, "2025-01-01 10:00", "annual"),  # cancels exactly at a snapshot
]
EVENTS = [
    (1, "2025-02-01 12:00", "activity", 1),  # the first event
    (1, "2025-02-03 09:00", "nps", 8),
    (1, "2025-02-05 09:00", "payment_failed", 19.99),
    (1, "2025-02-10 09:00", "activity", 2),
    (1, "2025-02-10 18:00", "activity", 3),  # same day: one active day
    (1, "2025-02-12 08:00", "activity", 4),
    (1, "2025-02-16 00:00", "complaint", 1),  # exactly at a snapshot
    (1, "2025-02-20 09:00", "nps", 3),
    (1, "2025-02-22 23:59:59", "activity", 5),  # last second before a snapshot
    (1, "2025-02-23 00:00", "activity", 6),  # exactly at a snapshot
    (1, "2025-03-01 10:00", "activity", 7),  # the latest event
    (2, "2025-02-06 10:00", "activity", 1),
    (2, "2025-02-07 10:00", "activity", 1),
    (3, "2025-02-16 05:00", "activity", 1),
    (4, "2025-02-14 10:00", "activity", 2),
]
TRANSACTIONS = [
    (1, "2025-02-01 00:00", "subscription", 9.99),
    (1, "2025-02-23 00:00", "addon", 5.0),  # exactly at a snapshot
    (1, "2025-03-01 00:00", "subscription", 9.99),
]
CANCELLATIONS = [(2, "2025-02-20 12:00"), (4, "2025-02-16 00:00")]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    _write_raw(root / "raw", CUSTOMERS, EVENTS, TRANSACTIONS, CANCELLATIONS)
    result = build_feature_tables(root / "raw", root / "tables")
    frames = [pd.read_parquet(path).set_index(["customer_id", "event_timestamp"]) for path in result.tables.values()]
    features = pd.concat(frames, axis=1).reset_index()
    return root, result, features


def _row(features: pd.DataFrame, customer_id: int, snapshot: str) -> pd.Series:
    rows = features[(features["customer_id"] == customer_id) & (features["event_timestamp"] == ts(snapshot))]
    assert len(rows) == 1, f"customer {customer_id} has {len(rows)} rows at {snapshot}"
    return rows.iloc[0]


def test_raw_as_of_is_midnight_after_the_latest_event(built):
    root, result, _ = built
    assert raw_as_of(root / "raw") == AS_OF
    assert result.as_of == AS_OF


def test_snapshots_are_weekly_and_the_last_is_the_as_of_date(built):
    _, result, features = built
    stamps = sorted(features["event_timestamp"].unique())
    assert stamps == SNAPSHOTS
    assert str(features["event_timestamp"].dt.tz) == "UTC"
    assert result.snapshots == 5
    assert result.first_snapshot == SNAPSHOTS[0]


def test_one_table_per_view_with_its_columns(built):
    _, result, features = built
    assert set(result.tables) == set(VIEW_COLUMNS)
    for view, path in result.tables.items():
        table = pd.read_parquet(path)
        assert list(table.columns) == ["customer_id", "event_timestamp", *VIEW_COLUMNS[view]]
        assert len(table) == result.rows
    assert not features.duplicated(["customer_id", "event_timestamp"]).any()


def test_rows_only_while_the_customer_is_active(built):
    _, _, features = built
    rows = features.groupby("customer_id")["event_timestamp"].apply(list).to_dict()
    assert rows[1] == SNAPSHOTS
    # signed up Feb 5, cancelled Feb 20
    assert rows[2] == [ts("2025-02-09"), ts("2025-02-16")]
    # signed up exactly at Feb 16: first row a week later
    assert rows[3] == [ts("2025-02-23"), ts("2025-03-02")]
    # cancelled exactly at Feb 16: still a customer at that instant, gone a week later
    assert rows[4] == SNAPSHOTS[:3]
    assert len(features) == 5 + 2 + 2 + 3


@pytest.mark.parametrize(
    ("snapshot", "days_7d", "days_28d", "sessions_7d", "sessions_28d"),
    [
        ("2025-02-02", 1, 1, 1, 1),  # Feb 1
        ("2025-02-09", 0, 1, 0, 1),  # nothing in [Feb 2, Feb 9)
        ("2025-02-16", 2, 3, 9, 10),  # Feb 10 (twice), Feb 12
        ("2025-02-23", 1, 4, 5, 15),  # Feb 22 23:59:59; the event at Feb 23 00:00 is not before Feb 23
        ("2025-03-02", 2, 5, 13, 27),  # Feb 23 00:00, Mar 1
    ],
)
def test_activity_windows_by_hand(built, snapshot, days_7d, days_28d, sessions_7d, sessions_28d):
    row = _row(built[2], 1, snapshot)
    assert (row["active_days_7d"], row["active_days_28d"]) == (days_7d, days_28d)
    assert (row["sessions_7d"], row["sessions_28d"]) == (sessions_7d, sessions_28d)
    assert row["activity_trend_7d_28d"] == pytest.approx((days_7d + 1) / (days_28d / 4 + 1))


def test_event_exactly_at_the_snapshot_is_counted_only_a_week_later(built):
    features = built[2]
    # the complaint at Feb 16 00:00
    assert _row(features, 1, "2025-02-16")["complaints_28d"] == 0
    assert _row(features, 1, "2025-02-23")["complaints_28d"] == 1
    # the add-on bought at Feb 23 00:00
    assert _row(features, 1, "2025-02-23")["addon_purchases_91d"] == 0
    assert _row(features, 1, "2025-02-23")["revenue_28d"] == pytest.approx(9.99)
    assert _row(features, 1, "2025-03-02")["addon_purchases_91d"] == 1
    assert _row(features, 1, "2025-03-02")["addon_revenue_91d"] == pytest.approx(5.0)
    # [Feb 2, Mar 2): the add-on and the Mar 1 payment; the Feb 1 payment is out of the window
    assert _row(features, 1, "2025-03-02")["revenue_28d"] == pytest.approx(14.99)
    assert _row(features, 1, "2025-03-02")["revenue_91d"] == pytest.approx(24.98)


def test_last_nps_is_the_latest_answer_before_the_snapshot(built):
    features = built[2]
    assert np.isnan(_row(features, 1, "2025-02-02")["last_nps"])
    assert _row(features, 1, "2025-02-09")["last_nps"] == 8
    assert _row(features, 1, "2025-02-16")["last_nps"] == 8
    assert _row(features, 1, "2025-02-23")["last_nps"] == 3
    assert _row(features, 1, "2025-03-02")["last_nps"] == 3


def test_payment_failures_windows(built):
    features = built[2]
    assert _row(features, 1, "2025-02-02")["payment_failures_28d"] == 0
    assert _row(features, 1, "2025-02-09")["payment_failures_28d"] == 1
    assert _row(features, 1, "2025-03-02")["payment_failures_28d"] == 1
    assert _row(features, 1, "2025-03-02")["payment_failures_91d"] == 1


def test_other_customers_windows(built):
    features = built[2]
    assert _row(features, 2, "2025-02-09")["active_days_7d"] == 2
    assert _row(features, 2, "2025-02-16")["active_days_7d"] == 0
    assert _row(features, 2, "2025-02-16")["active_days_28d"] == 2
    assert _row(features, 3, "2025-02-23")["active_days_7d"] == 1
    assert _row(features, 4, "2025-02-16")["active_days_7d"] == 1
    assert _row(features, 4, "2025-02-16")["sessions_7d"] == 2
    assert _row(features, 3, "2025-02-23")["plan"] == "annual"


@pytest.mark.parametrize(("column", "days"), [("active_days_7d", 7), ("active_days_28d", 28), ("active_days_91d", 91)])
def test_every_row_counts_only_activity_strictly_before_its_timestamp(built, column, days):
    """Recompute each row's window from the raw events: [s - days, s)."""
    root, _, features = built
    events = pd.read_parquet(root / "raw" / "events.parquet")
    activity = events[events["event_type"] == "activity"]
    for row in features.itertuples():
        s = row.event_timestamp
        window = activity[
            (activity["customer_id"] == row.customer_id)
            & (activity["event_time"] >= s - timedelta(days=days))
            & (activity["event_time"] < s)
        ]
        assert getattr(row, column) == window["event_time"].dt.normalize().nunique(), (row.customer_id, s)


def test_empty_events_table(tmp_path):
    _write_raw(tmp_path, CUSTOMERS, [], TRANSACTIONS, CANCELLATIONS)
    with pytest.raises(DataError, match=r"events\.parquet: table 'events' is empty; cannot tell the end of the data"):
        build_feature_tables(tmp_path, tmp_path / "tables")


def test_no_customer_active_at_any_snapshot(tmp_path):
    # the only customer leaves before the only snapshot (2025-01-29 00:00)
    _write_raw(
        tmp_path,
        [(1, "2025-01-27 10:00", "monthly")],
        [(1, "2025-01-28 10:00", "activity", 1)],
        [],
        [(1, "2025-01-28 12:00")],
    )
    with pytest.raises(DataError, match=r"no customer is active at any weekly snapshot; nothing to build features from"):
        build_feature_tables(tmp_path, tmp_path / "tables")
    assert not (tmp_path / "tables" / "behavioral.parquet").exists()


def test_invalid_raw_tables_stop_the_build_before_writing(tmp_path):
    _write_raw(tmp_path, CUSTOMERS, EVENTS, TRANSACTIONS, CANCELLATIONS)
    (tmp_path / "cancellations.parquet").unlink()
    with pytest.raises(DataError, match=r"table 'cancellations' is missing"):
        build_feature_tables(tmp_path, tmp_path / "tables")
    assert not (tmp_path / "tables").exists()
