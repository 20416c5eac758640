"""Labels and the pieces of a training set, on a tiny raw data set written by hand."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.errors import DataError
from features.raw import RAW_TABLES, validate_raw_dir
from training.dataset import check_features, cutoff_dates, label_frame, to_matrix


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _write_raw(raw_dir: Path, customers: list[tuple], transactions: list[tuple], cancellations: list[tuple]) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "customer_id": pd.Series([c[0] for c in customers], dtype="int64"),
            "signup_at": pd.Series([ts(c[1]) for c in customers], dtype="datetime64[us, UTC]"),
            "plan": "monthly",
            "price_tier": "basic",
            "monthly_price": 9.99,
            "channel": "organic",
        }
    ).to_parquet(raw_dir / RAW_TABLES["customers"].file, index=False)
    pd.DataFrame(
        {
            "customer_id": pd.Series([1], dtype="int64"),
            "event_time": pd.Series([ts("2025-01-20 12:00")], dtype="datetime64[us, UTC]"),
            "event_type": ["activity"],
            "value": [1.0],
        }
    ).to_parquet(raw_dir / RAW_TABLES["events"].file, index=False)
    pd.DataFrame(
        {
            "customer_id": pd.Series([t[0] for t in transactions], dtype="int64"),
            "transaction_time": pd.Series([ts(t[1]) for t in transactions], dtype="datetime64[us, UTC]"),
            "kind": "subscription",
            "amount": pd.Series([t[2] for t in transactions], dtype="float64"),
        }
    ).to_parquet(raw_dir / RAW_TABLES["transactions"].file, index=False)
    pd.DataFrame(
        {
            "customer_id": pd.Series([c[0] for c in cancellations], dtype="int64"),
            "cancelled_at": pd.Series([ts(c[1]) for c in cancellations], dtype="datetime64[us, UTC]"),
            "reason": "voluntary",
        }
    ).to_parquet(raw_dir / RAW_TABLES["cancellations"].file, index=False)
    validate_raw_dir(raw_dir)


CUTOFF = datetime(2025, 2, 1, tzinfo=timezone.utc)
LATER = datetime(2025, 3, 1, tzinfo=timezone.utc)
HORIZON, CLV_HORIZON = 30, 60  # CUTOFF + 30 days = 2025-03-03; CUTOFF + 60 days = 2025-04-02


@pytest.fixture()
def raw_dir(tmp_path) -> Path:
    raw = tmp_path / "raw"
    _write_raw(
        raw,
        customers=[
            (1, "2025-01-01 10:00"),  # stays
            (2, "2025-01-05 10:00"),  # cancels 14 days after the cutoff
            (3, "2025-01-10 10:00"),  # cancels exactly at cutoff + horizon
            (4, "2025-01-02 10:00"),  # cancelled before the cutoff
            (5, "2025-02-01 00:00"),  # signs up exactly at the cutoff
            (6, "2025-02-10 10:00"),  # signs up after the cutoff
            (7, "2025-01-03 10:00"),  # cancels exactly at the cutoff
        ],
        transactions=[
            (1, "2025-01-15 10:00", 10.0),  # before the cutoff: not future revenue
            (1, "2025-02-01 00:00", 20.0),  # at the cutoff: counted
            (1, "2025-04-01 23:59", 5.0),  # last minute of the CLV horizon: counted
            (1, "2025-04-02 00:00", 100.0),  # at cutoff + clv horizon: not counted
            (3, "2025-02-10 10:00", 7.5),
            (3, "2025-02-20 10:00", 7.5),
            (6, "2025-03-10 10:00", 9.0),  # not active at CUTOFF; counted at LATER
        ],
        cancellations=[
            (2, "2025-02-15 12:00"),
            (3, "2025-03-03 00:00"),
            (4, "2025-01-20 12:00"),
            (7, "2025-02-01 00:00"),
        ],
    )
    return raw


def test_labels_at_one_cutoff(raw_dir):
    labels = label_frame(raw_dir, [CUTOFF], HORIZON, CLV_HORIZON)
    assert list(labels.columns) == ["customer_id", "event_timestamp", "churned", "future_revenue"]
    # active at the cutoff: signed up strictly before it and not cancelled before it
    assert labels["customer_id"].tolist() == [1, 2, 3, 7]
    assert (labels["event_timestamp"] == pd.Timestamp(CUTOFF)).all()
    by_id = labels.set_index("customer_id")
    # churned iff cancelled in [cutoff, cutoff + horizon)
    assert by_id["churned"].to_dict() == {1: 0, 2: 1, 3: 0, 7: 1}
    # revenue in [cutoff, cutoff + clv horizon); none is zero, not missing
    assert by_id["future_revenue"].to_dict() == {1: 25.0, 2: 0.0, 3: 15.0, 7: 0.0}


def test_labels_at_several_cutoffs(raw_dir):
    labels = label_frame(raw_dir, [CUTOFF, LATER], HORIZON, CLV_HORIZON)
    assert str(labels["event_timestamp"].dt.tz) == "UTC"
    later = labels[labels["event_timestamp"] == pd.Timestamp(LATER)].set_index("customer_id")
    # ordered by cutoff then customer
    assert labels["event_timestamp"].is_monotonic_increasing
    assert later.index.tolist() == [1, 3, 5, 6]
    assert later["churned"].to_dict() == {1: 0, 3: 1, 5: 0, 6: 0}
    # customer 1 at LATER: only the 5.0 (the 100.0 falls on 2025-04-02, inside [Mar 1, Apr 30))
    assert later["future_revenue"].to_dict() == {1: 105.0, 3: 0.0, 5: 0.0, 6: 9.0}
    assert len(labels) == 8


def test_a_cutoff_listed_twice_counts_once(raw_dir):
    """`train` asks for the churn and the CLV cutoffs at once; with a short CLV horizon they overlap."""
    once = label_frame(raw_dir, [CUTOFF, LATER], HORIZON, CLV_HORIZON)
    twice = label_frame(raw_dir, [CUTOFF, LATER, CUTOFF], HORIZON, CLV_HORIZON)
    pd.testing.assert_frame_equal(twice, once)
    assert not twice.duplicated(["customer_id", "event_timestamp"]).any()


def test_labels_have_integer_churn_and_float_revenue(raw_dir):
    labels = label_frame(raw_dir, [CUTOFF], HORIZON, CLV_HORIZON)
    assert set(labels["churned"].unique()) <= {0, 1}
    assert np.issubdtype(labels["churned"].dtype, np.integer)
    assert np.issubdtype(labels["future_revenue"].dtype, np.floating)


# --- cutoff dates -----------------------------------------------------------------------------

AS_OF = datetime(2025, 12, 6, tzinfo=timezone.utc)


def test_cutoff_dates_by_hand():
    # a 30-day horizon rounds up to 5 weeks: the latest cutoff is 35 days before as_of
    assert cutoff_dates(AS_OF, 30, 3, 28) == [AS_OF - timedelta(days=d) for d in (91, 63, 35)]
    # a horizon of whole weeks is kept as is
    assert cutoff_dates(AS_OF, 28, 2, 14) == [AS_OF - timedelta(days=42), AS_OF - timedelta(days=28)]


@pytest.mark.parametrize("horizon", [1, 6, 7, 8, 30, 90])
@pytest.mark.parametrize(("n", "spacing"), [(2, 7), (6, 28)])
def test_cutoff_dates_are_weekly_aligned_and_leave_a_full_horizon(horizon, n, spacing):
    cutoffs = cutoff_dates(AS_OF, horizon, n, spacing)
    assert len(cutoffs) == n
    assert cutoffs == sorted(cutoffs)
    assert all((AS_OF - c) % timedelta(days=7) == timedelta(0) for c in cutoffs)
    assert AS_OF - cutoffs[-1] >= timedelta(days=horizon)
    assert AS_OF - cutoffs[-1] < timedelta(days=horizon + 7)  # not more than a week wasted
    assert all(b - a == timedelta(days=spacing) for a, b in zip(cutoffs, cutoffs[1:]))


# --- to_matrix ----------------------------------------------------------------------------------

CATEGORIES = {"plan": ["annual", "monthly"], "channel": ["organic", "paid_search"]}


def test_to_matrix_codes_categoricals_and_keeps_feature_order():
    frame = pd.DataFrame(
        {
            "customer_id": [1, 2, 3],
            "tenure_days": [10, 20, 30],
            "plan": ["monthly", "annual", None],
            "channel": ["paid_search", "organic", "organic"],
            "last_nps": [9.0, np.nan, 3.0],
        }
    )
    matrix = to_matrix(frame, ["plan", "tenure_days", "channel", "last_nps"], CATEGORIES)
    assert matrix.dtype == np.float64
    expected = np.array([[1, 10, 1, 9], [0, 20, 0, np.nan], [np.nan, 30, 0, 3]], dtype=float)
    np.testing.assert_array_equal(matrix, expected)


def test_to_matrix_converts_numbers_in_other_types():
    frame = pd.DataFrame(
        {
            "tenure_days": pd.array([1, None, 3], dtype="Int64"),
            "revenue_28d": ["1.5", "2", "3.25"],
            "complaints_28d": [True, False, True],
        }
    )
    matrix = to_matrix(frame, ["tenure_days", "revenue_28d", "complaints_28d"], {})
    np.testing.assert_array_equal(matrix, np.array([[1, 1.5, 1], [np.nan, 2, 0], [3, 3.25, 1]], dtype=float))


def test_to_matrix_without_features():
    assert to_matrix(pd.DataFrame({"x": [1, 2]}), [], {}).shape == (2, 0)


def test_to_matrix_rejects_an_unseen_category():
    frame = pd.DataFrame({"plan": ["monthly", "weekly"], "tenure_days": [1, 2]})
    with pytest.raises(
        DataError, match=r"feature 'plan': value 'weekly' was not seen in training; known \['annual', 'monthly'\]"
    ):
        to_matrix(frame, ["tenure_days", "plan"], CATEGORIES)


# --- check_features -----------------------------------------------------------------------------

FEATURES = ["tenure_days", "complaints_28d", "last_nps"]


def test_check_features_accepts_complete_rows_and_missing_nps():
    frame = pd.DataFrame(
        {"customer_id": [1, 2], "tenure_days": [10, 20], "complaints_28d": [0, 1], "last_nps": [np.nan, np.nan]}
    )
    check_features(frame, FEATURES, "train")


def test_check_features_missing_column():
    frame = pd.DataFrame({"customer_id": [1], "tenure_days": [10], "last_nps": [7.0]})
    with pytest.raises(
        DataError, match=r"^validation: feature columns \['complaints_28d'\] did not arrive from the feature store"
    ):
        check_features(frame, FEATURES, "validation")


def test_check_features_nan_names_rows_customers_and_columns():
    frame = pd.DataFrame(
        {
            "customer_id": [11, 12, 13, 14],
            "tenure_days": [10, np.nan, 30, np.nan],
            "complaints_28d": [0, 1, np.nan, 0],
            "last_nps": [np.nan, 5.0, 6.0, 7.0],
        }
    )
    with pytest.raises(
        DataError,
        match=r"^scoring: 3 rows have no value for \['tenure_days', 'complaints_28d'\] \(e\.g\. customer_id \[12, 13, 14\]\)",
    ):
        check_features(frame, FEATURES, "scoring")
