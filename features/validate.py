"""Validation of a company's tables against its config, before anything is written.

Each check adds `Problem`s instead of stopping at the first, so one ingest run tells the
user everything that is wrong. A problem names the file, the column, the rule it broke and
an example row and value.

Rules: required columns present; values of the declared (or inferred) type; parseable
timestamps; non-empty tables; a customer id on every row; unique customer ids in a
snapshot; binary labels; no negative amounts unless allowed; no log row before the
customer's signup.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn.errors import DataError
from features.contract import LOG_SHAPES, TABLE_SHAPES, ColumnType, Shape, Source


@dataclass(frozen=True)
class Problem:
    """One broken rule, with enough to find it in the file."""

    where: str
    column: str | None
    rule: str
    example: str = ""

    def __str__(self) -> str:
        column = f" column '{self.column}'" if self.column else ""
        example = f"; e.g. {self.example}" if self.example else ""
        return f"{self.where}:{column} {self.rule}{example}"


class ContractViolation(DataError):
    """The tables break the contract; `problems` lists every broken rule."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(
            f"ingest refused, nothing was written; {len(problems)} problem(s):\n  " + "\n  ".join(map(str, problems))
        )


def _example(frame: pd.DataFrame, mask: np.ndarray, column: str) -> str:
    """'row 17: '2024-13-01' (3 rows)': the first offending row (1-based) and how many there are."""
    rows = np.flatnonzero(mask)
    first = int(rows[0])
    value = frame[column].iloc[first]
    value = value.item() if isinstance(value, np.generic) else value  # -5.0, not np.float64(-5.0)
    return f"row {first + 1}: {value!r} ({len(rows)} row{'s' if len(rows) > 1 else ''})"


def _as_text(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip()


def _infer(values: pd.Series) -> ColumnType:
    """Numbers stay numbers (int when every value is whole), anything else is categorical."""
    if pd.api.types.is_bool_dtype(values):
        return ColumnType.CATEGORICAL
    if pd.api.types.is_integer_dtype(values):
        return ColumnType.INT
    if pd.api.types.is_float_dtype(values):
        return ColumnType.FLOAT
    if pd.api.types.is_datetime64_any_dtype(values):
        return ColumnType.TIMESTAMP
    present = values.dropna()
    numbers = pd.to_numeric(_as_text(present), errors="coerce")
    if len(present) and numbers.notna().all():
        return ColumnType.INT if (numbers % 1 == 0).all() else ColumnType.FLOAT
    return ColumnType.CATEGORICAL


def _to_timestamp(values: pd.Series, fmt: str | None) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
    return pd.to_datetime(_as_text(values), format=fmt or "mixed", utc=True, errors="coerce")


def type_columns(frame: pd.DataFrame, source: Source, where: str) -> tuple[pd.DataFrame, dict[str, ColumnType], list[Problem]]:
    """Convert every column to its declared or inferred type; values that do not convert are problems.

    The customer id becomes a string; the timestamp and signup columns become UTC timestamps
    (naive times are read as UTC).
    """
    problems: list[Problem] = []
    typed: dict[str, pd.Series] = {}
    types: dict[str, ColumnType] = {}
    time_columns = {c for c in (source.timestamp, source.signup) if c}
    for column in frame.columns:
        values = frame[column]
        if column == source.customer_id:
            typed[column] = values.astype("string").str.strip().replace("", pd.NA)
            types[column] = ColumnType.CATEGORICAL
            continue
        kind = source.columns.get(column) or (ColumnType.TIMESTAMP if column in time_columns else _infer(values))
        present = values.notna().to_numpy()
        if kind == ColumnType.TIMESTAMP:
            converted = _to_timestamp(values, source.timestamp_format if column == source.timestamp else None)
            bad = present & converted.isna().to_numpy()
            if bad.any():
                fmt = f" in format {source.timestamp_format!r}" if source.timestamp_format else ""
                problems.append(Problem(where, column, f"has unparseable timestamps{fmt}", _example(frame, bad, column)))
        elif kind in (ColumnType.INT, ColumnType.FLOAT):
            converted = pd.to_numeric(values if values.dtype.kind in "iuf" else _as_text(values), errors="coerce")
            bad = present & converted.isna().to_numpy()
            if bad.any():
                problems.append(Problem(where, column, f"must be of type {kind.value}", _example(frame, bad, column)))
            elif kind == ColumnType.INT and (converted.dropna() % 1 != 0).any():
                fraction = (converted % 1 != 0).fillna(False).to_numpy()
                problems.append(Problem(where, column, "must be of type int (whole numbers)", _example(frame, fraction, column)))
            converted = converted.astype("Int64" if kind == ColumnType.INT and not bad.any() else "float64")
        else:
            converted = values.astype("string")
        typed[column] = converted
        types[column] = kind
    return pd.DataFrame(typed, index=frame.index), types, problems


def check_required(columns: list[str], source: Source, where: str) -> list[Problem]:
    """Every column the config names must be in the table (or derived)."""
    available = set(columns) | set(source.derive)
    named = [*source.required_columns(), *source.columns]
    return [
        Problem(where, c, f"is required by the config but missing; the table has {sorted(columns)}")
        for c in dict.fromkeys(named)
        if c not in available
    ]


def check_rows(frame: pd.DataFrame, types: dict[str, ColumnType], source: Source, where: str) -> list[Problem]:
    """Rules on the typed, filtered table."""
    if frame.empty:
        return [Problem(where, None, "is empty (no rows after reading and the config's `where` filter)")]
    problems = []
    ids = frame[source.customer_id]
    missing = ids.isna().to_numpy()
    if missing.any():
        problems.append(Problem(where, source.customer_id, "must hold a customer id on every row", _example(frame, missing, source.customer_id)))
    if source.shape in TABLE_SHAPES:
        dup = ids.duplicated(keep=False).to_numpy() & ~missing
        if dup.any():
            problems.append(
                Problem(where, source.customer_id, f"must be unique in a {'snapshot' if source.shape == Shape.SNAPSHOT else 'customers table'} (one row per customer)", _example(frame, dup, source.customer_id))
            )
    for column in source.numeric_columns():
        if column not in frame:
            continue
        if types.get(column) not in (ColumnType.INT, ColumnType.FLOAT):
            problems.append(Problem(where, column, f"must be numeric; got {types.get(column, ColumnType.CATEGORICAL).value} values", f"{frame[column].iloc[0]!r}"))
            continue
        negative = (frame[column] < 0).fillna(False).to_numpy()
        if column not in source.allow_negative and negative.any():
            problems.append(
                Problem(where, column, "must not be negative (list it in `allow_negative` if it may be)", _example(frame, negative, column))
            )
    if source.label and source.label in frame:
        problems += _check_label(frame, source, where)
    return problems


def _check_label(frame: pd.DataFrame, source: Source, where: str) -> list[Problem]:
    labels = _as_text(frame[source.label])
    missing = labels.isna().to_numpy()
    if missing.any():
        return [Problem(where, source.label, "must hold a label on every row", _example(frame, missing, source.label))]
    distinct = sorted(labels.unique().tolist())
    positive = [v for v in distinct if v in source.positive]
    if len(distinct) != 2 or len(positive) != 1:
        return [
            Problem(
                where,
                source.label,
                f"must be binary: two distinct values, one of them in `positive` {source.positive}",
                f"got values {distinct[:10]}",
            )
        ]
    return []


def check_after_signup(
    log: pd.DataFrame, log_source: Source, where: str, signups: pd.DataFrame, snapshot: Source
) -> list[Problem]:
    """No event or transaction before the customer's signup (a wrong join key or time zone shows up here)."""
    if log_source.shape not in LOG_SHAPES and log_source.shape != Shape.CANCELLATIONS:
        return []
    joined = log[[log_source.customer_id, log_source.timestamp]].merge(
        signups[[snapshot.customer_id, snapshot.signup]],
        left_on=log_source.customer_id,
        right_on=snapshot.customer_id,
        how="left",
        suffixes=("", "_signup"),
    )
    signup_column = snapshot.signup if snapshot.signup != log_source.timestamp else f"{snapshot.signup}_signup"
    early = (joined[log_source.timestamp] < joined[signup_column]).fillna(False).to_numpy()
    if not early.any():
        return []
    row = int(np.flatnonzero(early)[0])
    return [
        Problem(
            where,
            log_source.timestamp,
            f"must not be before the customer's signup ({snapshot.signup} in the snapshot)",
            f"row {row + 1}: customer {joined[log_source.customer_id].iloc[row]!r} at "
            f"{joined[log_source.timestamp].iloc[row]} < signup {joined[signup_column].iloc[row]} ({int(early.sum())} rows)",
        )
    ]
