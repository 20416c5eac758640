"""The simulator's tables: which tables, which columns, which types.

`docs/raw-data-contract.md` is the reader's version of this module. The engine reads them
as any data set, through `churn ingest` and the config `features/simulate.py` writes beside
them; `validate_raw_dir` checks what the simulator wrote (tests/data/test_simulator.py), and
the simulator's truth and outcomes (`features/truth.py`) read them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from churn.errors import DataError


@dataclass(frozen=True)
class RawTable:
    """One raw table: its file name and its required columns with their kinds."""

    file: str
    columns: dict[str, str]  # column -> one of "int", "float", "string", "timestamp"
    time_column: str | None = None


RAW_TABLES: dict[str, RawTable] = {
    "customers": RawTable(
        "customers.parquet",
        {
            "customer_id": "int",
            "signup_at": "timestamp",
            "plan": "string",
            "price_tier": "string",
            "monthly_price": "float",
            "channel": "string",
        },
        time_column="signup_at",
    ),
    "events": RawTable(
        "events.parquet",
        {"customer_id": "int", "event_time": "timestamp", "event_type": "string", "value": "float"},
        time_column="event_time",
    ),
    "transactions": RawTable(
        "transactions.parquet",
        {"customer_id": "int", "transaction_time": "timestamp", "kind": "string", "amount": "float"},
        time_column="transaction_time",
    ),
    "cancellations": RawTable(
        "cancellations.parquet",
        {"customer_id": "int", "cancelled_at": "timestamp", "reason": "string"},
        time_column="cancelled_at",
    ),
}

_KIND_CHECKS = {
    "int": pa.types.is_integer,
    "float": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t),
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t),
    "timestamp": lambda t: pa.types.is_timestamp(t) and t.tz is not None,
}


def validate_raw_dir(raw_dir: Path) -> None:
    """Check that every raw table exists and has its required columns with the right types.

    Raises `DataError` listing every problem found (not only the first).
    """
    raw_dir = Path(raw_dir)
    problems = []
    for name, spec in RAW_TABLES.items():
        path = raw_dir / spec.file
        if not path.exists():
            problems.append(f"{path}: table '{name}' is missing (run `churn simulate` or put the file there)")
            continue
        schema = pq.read_schema(path)
        for column, kind in spec.columns.items():
            if column not in schema.names:
                problems.append(f"{path}: required column '{column}' ({kind}) is missing; found {schema.names}")
                continue
            dtype = schema.field(column).type
            if not _KIND_CHECKS[kind](dtype):
                rule = "a timestamp with a time zone (UTC)" if kind == "timestamp" else f"of kind {kind}"
                problems.append(f"{path}: column '{column}' must be {rule}; got {dtype}")
    if problems:
        raise DataError("raw data breaks the contract:\n  " + "\n  ".join(problems))


def raw_as_of(raw_dir: Path) -> datetime:
    """The end of the simulated data: midnight UTC after the latest event."""
    path = Path(raw_dir) / RAW_TABLES["events"].file
    con = duckdb.connect()
    try:
        latest = con.execute(f"SELECT max(event_time) FROM read_parquet('{path}')").fetchone()[0]
    finally:
        con.close()
    if latest is None:
        raise DataError(f"{path}: table 'events' is empty; cannot tell the end of the data")
    latest = latest.astimezone(timezone.utc)
    return datetime(latest.year, latest.month, latest.day, tzinfo=timezone.utc) + timedelta(days=1)
