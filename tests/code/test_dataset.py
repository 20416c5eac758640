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


def test_unseen_category_is_an_error_not_a_code():
    frame = pd.DataFrame({"customer_id": [1], CATEGORICAL: ["z"]})
    with pytest.raises(DataError, match=f"feature '{CATEGORICAL}': value 'z' was not seen in training"):
        to_matrix(frame, [CATEGORICAL], {CATEGORICAL: ["x", "y"]})
