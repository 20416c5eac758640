"""The raw-data contract: every problem reported at once, naming file and column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn.errors import DataError
from features.raw import RAW_TABLES, validate_raw_dir

UTC = "UTC"


def _good_tables() -> dict[str, pd.DataFrame]:
    ts = pd.Timestamp("2025-01-01 10:00", tz=UTC)
    return {
        "customers": pd.DataFrame(
            {
                "customer_id": [1, 2],
                "signup_at": [ts, ts],
                "plan": ["monthly", "annual"],
                "price_tier": ["basic", "premium"],
                "monthly_price": [9.99, 39.99],
                "channel": ["organic", "referral"],
            }
        ),
        "events": pd.DataFrame(
            {"customer_id": [1], "event_time": [ts], "event_type": ["activity"], "value": [2.0]}
        ),
        "transactions": pd.DataFrame(
            {"customer_id": [1], "transaction_time": [ts], "kind": ["subscription"], "amount": [9.99]}
        ),
        "cancellations": pd.DataFrame({"customer_id": [2], "cancelled_at": [ts], "reason": ["voluntary"]}),
    }


def _write(raw_dir: Path, tables: dict[str, pd.DataFrame]) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(raw_dir / RAW_TABLES[name].file, index=False)


def test_good_tables_pass(tmp_path):
    _write(tmp_path, _good_tables())
    validate_raw_dir(tmp_path)


def test_extra_columns_and_other_int_and_string_types_are_accepted(tmp_path):
    tables = _good_tables()
    tables["customers"]["region"] = ["north", "south"]
    tables["customers"]["customer_id"] = tables["customers"]["customer_id"].astype("int32")
    tables["transactions"]["amount"] = [10]  # an integer amount is a number
    _write(tmp_path, tables)
    events = pa.Table.from_pandas(tables["events"], preserve_index=False)
    events = events.set_column(2, "event_type", events["event_type"].dictionary_encode())
    pq.write_table(events, tmp_path / "events.parquet")
    validate_raw_dir(tmp_path)


def test_missing_table(tmp_path):
    tables = _good_tables()
    del tables["cancellations"]
    _write(tmp_path, tables)
    with pytest.raises(DataError, match=r"cancellations\.parquet: table 'cancellations' is missing"):
        validate_raw_dir(tmp_path)


def test_empty_folder_lists_every_table(tmp_path):
    with pytest.raises(DataError) as info:
        validate_raw_dir(tmp_path)
    message = str(info.value)
    for name, spec in RAW_TABLES.items():
        assert f"{tmp_path / spec.file}: table '{name}' is missing" in message


def test_missing_column(tmp_path):
    tables = _good_tables()
    tables["customers"] = tables["customers"].drop(columns="plan")
    _write(tmp_path, tables)
    with pytest.raises(DataError, match=r"customers\.parquet: required column 'plan' \(string\) is missing; found \["):
        validate_raw_dir(tmp_path)


def test_wrong_type(tmp_path):
    tables = _good_tables()
    tables["transactions"]["amount"] = ["9.99"]
    _write(tmp_path, tables)
    with pytest.raises(DataError, match=r"transactions\.parquet: column 'amount' must be of kind float; got string"):
        validate_raw_dir(tmp_path)


def test_naive_timestamp(tmp_path):
    tables = _good_tables()
    tables["events"]["event_time"] = tables["events"]["event_time"].dt.tz_localize(None)
    _write(tmp_path, tables)
    with pytest.raises(
        DataError, match=r"events\.parquet: column 'event_time' must be a timestamp with a time zone \(UTC\); got timestamp"
    ):
        validate_raw_dir(tmp_path)


def test_timestamp_as_string_is_rejected(tmp_path):
    tables = _good_tables()
    tables["customers"]["signup_at"] = ["2025-01-01T10:00:00Z", "2025-01-01T10:00:00Z"]
    _write(tmp_path, tables)
    with pytest.raises(DataError, match=r"column 'signup_at' must be a timestamp with a time zone \(UTC\); got string"):
        validate_raw_dir(tmp_path)


def test_all_problems_are_listed_at_once(tmp_path):
    tables = _good_tables()
    del tables["cancellations"]  # missing table
    tables["customers"] = tables["customers"].drop(columns="channel")  # missing column
    tables["transactions"]["customer_id"] = ["1"]  # wrong type
    tables["events"]["event_time"] = tables["events"]["event_time"].dt.tz_localize(None)  # naive timestamp
    _write(tmp_path, tables)
    with pytest.raises(DataError, match=r"^raw data breaks the contract:\n") as info:
        validate_raw_dir(tmp_path)
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 4
    assert any(f"{tmp_path / 'cancellations.parquet'}: table 'cancellations' is missing" in line for line in lines)
    assert any(f"{tmp_path / 'customers.parquet'}: required column 'channel'" in line for line in lines)
    assert any(f"{tmp_path / 'transactions.parquet'}: column 'customer_id' must be of kind int" in line for line in lines)
    assert any(f"{tmp_path / 'events.parquet'}: column 'event_time' must be a timestamp" in line for line in lines)
