"""The model input (`to_matrix`) and the checks on the features a model needs (`check_features`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.errors import DataError
from training.dataset import category_levels, check_features, to_matrix


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


def test_to_matrix_gives_a_value_unseen_in_training_the_other_code():
    frame = pd.DataFrame({"plan": ["monthly", "weekly", None], "tenure_days": [1, 2, 3]})
    matrix = to_matrix(frame, ["tenure_days", "plan"], CATEGORIES)
    # levels 0 and 1 are known; "weekly" shares code 2 with the values rare in training; None stays missing
    np.testing.assert_array_equal(matrix[:, 1], [1, 2, np.nan])


def test_category_levels_pool_rare_values_and_keep_the_most_frequent():
    values = pd.Series(["a"] * 30 + ["b"] * 25 + ["c"] * 19 + ["d"] * 40 + [None] * 5)
    assert category_levels(values, min_rows=20) == ["a", "b", "d"]  # "c" (19 rows) is rare
    assert category_levels(values, min_rows=20, max_levels=2) == ["a", "d"]  # the two most frequent
    assert category_levels(values.sample(frac=1.0, random_state=1), min_rows=20) == ["a", "b", "d"]  # any row order


# --- check_features -----------------------------------------------------------------------------

FEATURES = ["tenure_days", "complaints_28d", "last_nps"]


REQUIRED = ["tenure_days", "complaints_28d"]  # what a model never saw missing (its spec's `required`)


def test_check_features_accepts_complete_rows_and_what_may_be_missing():
    frame = pd.DataFrame(
        {"customer_id": [1, 2], "tenure_days": [10, 20], "complaints_28d": [0, 1], "last_nps": [np.nan, np.nan]}
    )
    check_features(frame, FEATURES, "train", REQUIRED)
    with pytest.raises(DataError, match=r"^train: 2 rows have no value for \['last_nps'\]"):
        check_features(frame, FEATURES, "train")  # without a record of what may be missing, nothing may


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
        check_features(frame, FEATURES, "scoring", REQUIRED)
