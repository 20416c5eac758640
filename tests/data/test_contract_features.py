"""Generic log features: windows, RFM and point-in-time correctness on a log written by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from features.contract import Contract
from features.contract_features import build_contract_features, read_views
from features.ingest import ingest
from training.contract_eval import log_cutoffs

# customer A buys on three days, B once; the data ends at midnight after 2024-03-30
ORDERS = "cust,at,total\nA,2024-01-10 09:00,10\nA,2024-03-01 12:00,20\nA,2024-03-01 18:00,5\nA,2024-03-30 08:00,40\nB,2024-02-15 10:00,7\n"


@pytest.fixture()
def built(tmp_path):
    (tmp_path / "orders.csv").write_text(ORDERS)
    contract = Contract.model_validate(
        {
            "name": "shop",
            "sources": {"orders": {"shape": "transactions", "path": "orders.csv", "customer_id": "cust", "timestamp": "at", "amount": "total"}},
            "churn": {"definition": "inactivity", "horizon_days": 14, "active_days": 365},
            "evaluation": {"rolling_cutoffs": 2, "cutoff_spacing_days": 7, "train_cutoffs": 3, "train_spacing_days": 7},
        }
    )
    ingest(contract, tmp_path, tmp_path / "ingested")
    result = build_contract_features(tmp_path / "ingested", tmp_path / "tables")
    frame = pd.read_parquet(result.tables["shop_orders"]).set_index(["customer_id", "event_timestamp"])
    return contract, result, frame


def at(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def test_snapshots_are_weekly_back_from_the_end_of_the_data(built):
    _, result, frame = built
    assert result.data_end == at("2024-03-31")
    stamps = sorted(frame.index.get_level_values("event_timestamp").unique())
    assert stamps[-1] == at("2024-03-31")
    assert all((b - a) == pd.Timedelta(days=7) for a, b in zip(stamps, stamps[1:]))


def test_a_row_summarizes_only_what_happened_before_its_stamp(built):
    _, _, frame = built
    # 2024-03-03 sees 2024-01-10 and both rows of 2024-03-01, not 2024-03-30
    row = frame.loc[("A", at("2024-03-03"))]
    assert row["orders_count_all"] == 3
    assert row["orders_frequency"] == 2  # distinct days
    assert row["orders_total_all"] == 35
    assert row["orders_monetary"] == 17.5
    assert row["orders_count_7d"] == 2 and row["orders_days_7d"] == 1
    assert row["orders_total_90d"] == 35
    assert row["orders_recency_days"] == 2
    assert row["orders_tenure_days"] == 53
    assert row["orders_mean_gap_days"] == 51  # one gap of 51 days between 2024-01-10 and 2024-03-01
    latest = frame.loc[("A", at("2024-03-31"))]
    assert latest["orders_total_30d"] == 40 + 25 and latest["orders_recency_days"] == 1


def test_no_row_before_a_customers_first_purchase(built):
    _, _, frame = built
    first_b = frame.loc["B"].index.min()
    assert first_b == at("2024-02-18")  # the first weekly stamp after 2024-02-15
    assert pd.isna(frame.loc[("B", first_b)]["orders_mean_gap_days"])  # one purchase: no gap yet


def test_views_json_names_every_feature_with_a_description(built):
    _, result, frame = built
    views = read_views(result.tables["shop_orders"].parent)
    fields = views["views"]["shop_orders"]
    assert [c for c, _, _ in fields] == list(frame.columns)
    assert all(text for _, _, text in fields)
    assert views["log_views"] == ["shop_orders"] and views["snapshot_views"] == []


def test_rolling_cutoffs_leave_a_full_horizon_after_every_training_cutoff(built):
    contract, result, _ = built
    evaluation, training = log_cutoffs(contract, result.data_end)
    assert evaluation == [at("2024-03-10"), at("2024-03-17")]
    for e in evaluation:
        assert all(c + pd.Timedelta(days=14) <= e for c in training[e])
