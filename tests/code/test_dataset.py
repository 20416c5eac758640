"""to_matrix: the model input, and the errors it gives on bad feature values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.errors import DataError
from training.dataset import to_matrix

CATEGORICAL = "plan"  # any categorical feature


def test_numeric_and_categorical_columns_in_feature_order():
    frame = pd.DataFrame({"customer_id": [1, 2, 3], "a": [1.5, None, 3], CATEGORICAL: ["y", "x", None]})
    matrix = to_matrix(frame, [CATEGORICAL, "a"], {CATEGORICAL: ["x", "y"]})
    np.testing.assert_array_equal(matrix[:, 0], [1.0, 0.0, np.nan])
    np.testing.assert_array_equal(matrix[:, 1], [1.5, np.nan, 3.0])


def test_text_in_a_numeric_feature_names_feature_value_and_customer():
    frame = pd.DataFrame({"customer_id": [7, 8, 9], "a": ["1.0", "n/a", "2"]})
    with pytest.raises(DataError, match=r"feature 'a': 1 value\(s\) are not numbers, e.g. 'n/a' at row 1 \(customer_id 8\)"):
        to_matrix(frame, ["a"], {})


def test_sampled_customers_keeps_whole_customers_the_same_at_every_cutoff():
    from training.dataset import sampled_customers

    stamps = pd.to_datetime(["2025-01-05", "2025-01-12", "2025-01-19"], utc=True)
    labels = pd.DataFrame(
        {"customer_id": [f"c{i}" for i in range(500)] * 3, "event_timestamp": stamps.repeat(500), "churned": 0}
    ).sample(frac=1.0, random_state=0)  # any row order
    kept = sampled_customers(labels, 40)
    assert kept["customer_id"].nunique() == 40
    assert (kept.groupby("customer_id").size() == 3).all()  # every cutoff of each kept customer
    # by a stable hash of the id, not a draw: the same customers from any row order, and a customer kept
    # from a population is kept from any part of it (the value model's cutoffs see part of the churn model's)
    assert set(sampled_customers(labels.sort_values("customer_id"), 40)["customer_id"]) == set(kept["customer_id"])
    part = labels[labels["customer_id"].str[1:].astype(int) < 250]
    assert set(kept["customer_id"]) & set(part["customer_id"]) <= set(sampled_customers(part, 40)["customer_id"])
    assert sampled_customers(labels, None) is labels and sampled_customers(labels, 500) is labels


def test_screen_features_leaves_out_constant_id_like_and_free_text_columns_and_says_why():
    from training.dataset import screen_features

    rng = np.random.default_rng(0)
    n = 400
    stamps = pd.to_datetime(["2025-01-05", "2025-01-12"], utc=True).repeat(n // 2)
    frame = pd.DataFrame(
        {
            "event_timestamp": stamps,
            "plan": rng.choice(["a", "b", "c"], n),  # a category: kept
            "area": [f"area {i % 60}" for i in range(n)],  # many values, each on several customers: kept
            "account": [f"ACC-{i % 200:05d}" for i in range(n)],  # one value per customer: id-like
            "note": [f"customer {i} called about the bill on day {i % 31}" for i in range(n)],  # free text
            "country": ["DE"] * n,  # constant
            "empty": [None] * n,  # constant: no value at all
            "charges": rng.normal(50, 10, n),  # distinct numbers: kept
            "row_number": np.tile(rng.permutation(200) + 1, 2),  # 1..200 once per customer: a counter
            "ages": np.tile(np.arange(200) * 2, 2),  # distinct whole numbers with gaps: kept
        }
    )
    names = ["plan", "area", "account", "note", "country", "empty", "charges", "row_number", "ages"]
    left_out = screen_features(frame, names, ["plan", "area", "account", "note", "country", "empty"])
    assert set(left_out) == {"account", "note", "country", "empty", "row_number"}
    assert left_out["row_number"] == "id-like: consecutive whole numbers, one per customer (200 rows): a row number or counter"
    assert left_out["account"] == "id-like: 200 distinct values in 200 customers' rows"
    assert left_out["note"].startswith("free text: 200 distinct values of median length")
    assert left_out["country"] == "constant: the value 'DE' on every row"
    assert left_out["empty"] == "constant: no value on every row"


def test_matrix_rows_bins_as_the_matrix_does():
    """A LightGBM Dataset made batch by batch from a frame (`MatrixRows`) trains the model the whole matrix trains.

    Bit for bit with LightGBM's default parameters up to its 200,000 sampled rows; `rows` picks
    rows without copying them. `model_input` makes the matrix unless it is large.
    """
    import lightgbm as lgb

    from training.dataset import MatrixRows, model_input

    rng = np.random.default_rng(0)
    n = 150_000
    frame = pd.DataFrame(
        {
            "a": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)).astype(np.float32),  # a lean frame's column
            "b": rng.normal(size=n),
            CATEGORICAL: rng.choice(["x", "y", "z", None], n),
        }
    )
    y = ((frame["a"].fillna(0) + frame["b"] + rng.normal(size=n)) > 0).astype(int).to_numpy()
    names, categories = ["a", "b", CATEGORICAL], {CATEGORICAL: ["x", "y"]}  # "z" is the other category
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "deterministic": True, "seed": 0}

    def model(data, labels):
        return lgb.train(params, lgb.Dataset(data, label=labels, categorical_feature=[2]), 20).model_to_string()

    assert model(MatrixRows(frame, names, categories), y) == model(to_matrix(frame, names, categories), y)
    rows = np.flatnonzero(rng.random(n) < 0.6)
    assert model(MatrixRows(frame, names, categories, rows), y[rows]) == model(to_matrix(frame.iloc[rows], names, categories), y[rows])
    single = MatrixRows(frame, names, categories, rows)
    np.testing.assert_array_equal(single[5], to_matrix(frame.iloc[[rows[5]]], names, categories)[0])
    assert isinstance(model_input(frame, names, categories, rows), np.ndarray)  # 90,000 x 3 floats: small
    assert isinstance(model_input(frame, names, categories, rows, limit_bytes=1_000_000), MatrixRows)
