"""Outcome files: read column by column, ids kept as text, bad values named with their column and row."""

from __future__ import annotations

import pandas as pd
import pytest

from churn.errors import DataError
from serving.outcomes import read_outcome_file


def _outcome_csv(tmp_path, **overrides):
    frame = pd.DataFrame(
        {
            "campaign": ["c1", "c1"],
            "customer_id": [1, 2],
            "churned": ["true", "0"],
            "revenue": [0.0, 19.99],
            "horizon_end": ["2025-04-01", "2025-04-01"],
        }
    )
    for column, value in overrides.items():
        if value is None:
            frame = frame.drop(columns=column)
        else:
            frame[column] = value
    path = tmp_path / "outcomes.csv"
    frame.to_csv(path, index=False)
    return path


def test_outcome_file_values(tmp_path):
    frame = read_outcome_file(_outcome_csv(tmp_path))
    assert frame["churned"].tolist() == [True, False]
    assert str(frame["horizon_end"].dt.tz) == "UTC"


def test_outcome_file_ids_are_text_as_written(tmp_path):
    """CSV ids stay as written ('007' is not 7); a Parquet integer column gives its decimal text."""
    frame = read_outcome_file(_outcome_csv(tmp_path, customer_id=["007", "7590-VHVEG"]))
    assert frame["customer_id"].tolist() == ["007", "7590-VHVEG"]
    parquet = tmp_path / "outcomes.parquet"
    pd.read_csv(_outcome_csv(tmp_path)).to_parquet(parquet)
    assert pd.read_parquet(parquet)["customer_id"].dtype == "int64"
    assert read_outcome_file(parquet)["customer_id"].tolist() == ["1", "2"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"revenue": None}, r"outcomes.csv lacks columns \['revenue'\]"),
        ({"churned": ["yes", "no"]}, r"column 'churned' in .*outcomes.csv has an invalid value 'yes' in row 1"),
        ({"revenue": [1.0, -5.0]}, r"column 'revenue' in .*outcomes.csv must be a finite number >= 0; got -5.0 in row 2"),
        ({"revenue": ["inf", 2.0]}, r"column 'revenue' in .*outcomes.csv must be a finite number >= 0; got inf in row 1"),
        ({"revenue": [1.0, "-inf"]}, r"column 'revenue' in .*outcomes.csv must be a finite number >= 0; got -inf in row 2"),
        ({"customer_id": [1, None]}, r"column 'customer_id' in .*outcomes.csv: the value nan in row 2 is missing or not an id"),
        ({"customer_id": ["x" * 129, 2]}, r"column 'customer_id' in .*outcomes.csv: the value 'x{129}' in row 1 has 129 characters"),
        ({"customer_id": [1, "a\x07b"]}, r"column 'customer_id' in .*outcomes.csv: the value 'a\\x07b' in row 2 holds a control"),
        ({"horizon_end": ["2025-04-01", "soon"]}, r"column 'horizon_end' in .*outcomes.csv has an invalid value 'soon' in row 2"),
    ],
)
def test_bad_outcome_file_names_the_column_and_row(tmp_path, overrides, message):
    with pytest.raises(DataError, match=message):
        read_outcome_file(_outcome_csv(tmp_path, **overrides))


def test_missing_outcome_file(tmp_path):
    with pytest.raises(DataError, match=r"outcome file .*nope.csv does not exist"):
        read_outcome_file(tmp_path / "nope.csv")
