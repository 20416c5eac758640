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
import pyarrow as pa
import pyarrow.compute as pc

from churn.errors import DataError
from features.contract import LOG_SHAPES, TABLE_SHAPES, ColumnType, Shape, Source


@dataclass(frozen=True)
class Problem:
    """One broken rule, with enough to find it in the file.

    `rows`: how many rows break it, when counted (shown after the example).
    """

    where: str
    column: str | None
    rule: str
    example: str = ""
    rows: int | None = None

    def __str__(self) -> str:
        column = f" column '{self.column}'" if self.column else ""
        counted = f" ({self.rows} row{'s' if self.rows > 1 else ''})" if self.rows is not None else ""
        example = f"; e.g. {self.example}{counted}" if self.example else ""
        return f"{self.where}:{column} {self.rule}{example}"


def merged(problems: list[Problem]) -> list[Problem]:
    """One problem per (file, column, rule) of a table checked in chunks: the first example, the rows summed."""
    out: dict[tuple, Problem] = {}
    for problem in problems:
        key = (problem.where, problem.column, problem.rule)
        first = out.get(key)
        if first is None:
            out[key] = problem
        elif first.rows is not None and problem.rows is not None:
            out[key] = Problem(first.where, first.column, first.rule, first.example, first.rows + problem.rows)
    return list(out.values())


class ContractViolation(DataError):
    """The tables break the contract; `problems` lists every broken rule."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(
            f"ingest refused, nothing was written; {len(problems)} problem(s):\n  " + "\n  ".join(map(str, problems))
        )


def _problem(where: str, column: str, rule: str, frame: pd.DataFrame, mask: np.ndarray, shown: str | None = None) -> Problem:
    """The problem of the rows in `mask`, e.g. "row 17: '2024-13-01' (3 rows)": the first (1-based) and how many.

    Rows are numbered by `frame`'s index (0-based: a chunk of a large table carries its
    place in the table), the value shown is `shown`'s (default `column`).
    """
    rows = np.flatnonzero(mask)
    first = int(rows[0])
    value = frame[shown or column].iloc[first]
    value = value.item() if isinstance(value, np.generic) else value  # -5.0, not np.float64(-5.0)
    return Problem(where, column, rule, f"row {int(frame.index[first]) + 1}: {value!r}", len(rows))


def _as_text(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip()


def infer_type(values: pd.Series) -> ColumnType:
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


def _ids(values: pd.Series) -> pd.Series:
    """Customer ids as text (stripped, empty as missing).

    Integer ids are converted by Arrow: the same text, about 5x faster than Python's `str`
    per value, which matters on a log of a hundred million rows; they have nothing to strip.
    """
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iu":
        text = pa.array(values.to_numpy()).cast(pa.string()).to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)
        return pd.Series(text.array, index=values.index, name=values.name)
    return values.astype("string").str.strip().replace("", pd.NA)


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
            typed[column] = _ids(values)
            types[column] = ColumnType.CATEGORICAL
            continue
        kind = source.columns.get(column) or (ColumnType.TIMESTAMP if column in time_columns else infer_type(values))
        present = values.notna().to_numpy()
        if kind == ColumnType.TIMESTAMP:
            converted = _to_timestamp(values, source.timestamp_format if column == source.timestamp else None)
            bad = present & converted.isna().to_numpy()
            if bad.any():
                fmt = f" in format {source.timestamp_format!r}" if source.timestamp_format else ""
                problems.append(_problem(where, column, f"has unparseable timestamps{fmt}", frame, bad))
        elif kind in (ColumnType.INT, ColumnType.FLOAT):
            converted = pd.to_numeric(values if values.dtype.kind in "iuf" else _as_text(values), errors="coerce")
            bad = present & converted.isna().to_numpy()
            if bad.any():
                problems.append(_problem(where, column, f"must be of type {kind.value}", frame, bad))
            elif kind == ColumnType.INT and (converted.dropna() % 1 != 0).any():
                fraction = (converted % 1 != 0).fillna(False).to_numpy()
                problems.append(_problem(where, column, "must be of type int (whole numbers)", frame, fraction))
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
        problems.append(_problem(where, source.customer_id, "must hold a customer id on every row", frame, missing))
    if source.shape in TABLE_SHAPES:
        dup = ids.duplicated(keep=False).to_numpy() & ~missing
        if dup.any():
            table = "snapshot" if source.shape == Shape.SNAPSHOT else "customers table"
            problems.append(_problem(where, source.customer_id, f"must be unique in a {table} (one row per customer)", frame, dup))
    for column in source.numeric_columns():
        if column not in frame:
            continue
        if types.get(column) not in (ColumnType.INT, ColumnType.FLOAT):
            problems.append(Problem(where, column, f"must be numeric; got {types.get(column, ColumnType.CATEGORICAL).value} values", f"{frame[column].iloc[0]!r}"))
            continue
        negative = (frame[column] < 0).fillna(False).to_numpy()
        if column not in source.allow_negative and negative.any():
            problems.append(_problem(where, column, "must not be negative (list it in `allow_negative` if it may be)", frame, negative))
    if source.label and source.label in frame:
        problems += _check_label(frame, source, where)
    return problems


def _check_label(frame: pd.DataFrame, source: Source, where: str) -> list[Problem]:
    labels = _as_text(frame[source.label])
    missing = labels.isna().to_numpy()
    if missing.any():
        return [_problem(where, source.label, "must hold a label on every row", frame, missing)]
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
    """No event or transaction before the customer's signup (a wrong join key or time zone shows up here).

    Each log row is looked up in the snapshot by Arrow's hash lookup (`index_in`), several
    times faster than a pandas merge on text ids, which a log of a hundred million rows feels.
    """
    if log_source.shape not in LOG_SHAPES and log_source.shape != Shape.CANCELLATIONS:
        return []
    ids = pa.array(log[log_source.customer_id], pa.string())
    known = pa.array(signups[snapshot.customer_id], pa.string())
    at = pc.index_in(ids, value_set=known).to_numpy(zero_copy_only=False)  # NaN: not in the snapshot
    found = ~np.isnan(at)
    signup = pd.Series(pd.NaT, index=log.index, dtype=signups[snapshot.signup].dtype)
    signup[found] = signups[snapshot.signup].to_numpy()[at[found].astype(np.int64)]
    early = (log[log_source.timestamp] < signup).fillna(False).to_numpy()
    if not early.any():
        return []
    row = int(np.flatnonzero(early)[0])
    return [
        Problem(
            where,
            log_source.timestamp,
            f"must not be before the customer's signup ({snapshot.signup} in the snapshot)",
            f"row {int(log.index[row]) + 1}: customer {log[log_source.customer_id].iloc[row]!r} at "
            f"{log[log_source.timestamp].iloc[row]} < signup {signup.iloc[row]}",
            int(early.sum()),
        )
    ]
