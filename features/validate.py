"""Validation of a company's tables against its config, before anything is written.

Each check adds `Problem`s instead of stopping at the first, so one ingest run tells the
user everything that is wrong. A problem names the file, the column, the rule it broke and
an example row and value.

Rules: required columns present; values of the declared (or inferred) type; an undeclared
column that is numbers but for a few distinct tokens (`NA`, `n/a`, `-`, `abc`: missing-value
markers or corruption) is a problem, not silently text; parseable timestamps; non-empty
tables; a customer id on every row; unique customer ids in a snapshot; binary labels; no
negative amounts unless allowed; no log row before the customer's signup.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churn.errors import DataError
from features.contract import LOG_SHAPES, TABLE_SHAPES, ColumnType, Shape, Source, label_text

# An undeclared column whose values are numbers but for at most this many distinct tokens is a problem (see `TextTally`).
MAX_TOKENS = 5


@dataclass(frozen=True)
class Place:
    """Where a source's rows come from, for messages: one file, or several read in order as one table (a glob).

    `text` names the source (file, glob pattern, database table); `files` holds, for a source of
    several files, each file's name and the row of the whole table it starts at.
    """

    text: str
    files: tuple[tuple[str, int], ...] = ()

    def __str__(self) -> str:
        return self.text

    def row(self, index: int) -> str:
        """Row `index` (0-based in the whole table) as a reader finds it: "row 3", or "part-2.csv row 3"."""
        if len(self.files) < 2:
            return f"row {index + 1}"
        name, start = self.files[bisect_right([start for _, start in self.files], index) - 1]
        return f"{name} row {index - start + 1}"


def _row(where: str | Place, index: int) -> str:
    return where.row(index) if isinstance(where, Place) else f"row {index + 1}"


@dataclass(frozen=True)
class Problem:
    """One broken rule, with enough to find it in the file.

    `rows`: how many rows break it, when counted (shown after the example); `hint`: what may fix it.
    """

    where: str | Place
    column: str | None
    rule: str
    example: str = ""
    rows: int | None = None
    hint: str = ""

    def __str__(self) -> str:
        column = f" column '{self.column}'" if self.column else ""
        counted = f" ({self.rows} row{'s' if self.rows > 1 else ''})" if self.rows is not None else ""
        example = f"; e.g. {self.example}{counted}" if self.example else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{self.where}:{column} {self.rule}{example}{hint}"


def merged(problems: list[Problem]) -> list[Problem]:
    """One problem per (file, column, rule) of a table checked in chunks: the first example, the rows summed."""
    out: dict[tuple, Problem] = {}
    for problem in problems:
        key = (problem.where, problem.column, problem.rule)
        first = out.get(key)
        if first is None:
            out[key] = problem
        elif first.rows is not None and problem.rows is not None:
            out[key] = replace(first, rows=first.rows + problem.rows)
    return list(out.values())


class ContractViolation(DataError):
    """The tables break the contract; `problems` lists every broken rule."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(
            f"ingest refused, nothing was written; {len(problems)} problem(s):\n  " + "\n  ".join(map(str, problems))
        )


def _problem(
    where: str | Place, column: str, rule: str, frame: pd.DataFrame, mask: np.ndarray, shown: str | None = None, hint: str = ""
) -> Problem:
    """The problem of the rows in `mask`, e.g. "row 17: '2024-13-01' (3 rows)": the first (1-based) and how many.

    Rows are numbered by `frame`'s index (0-based: a chunk of a large table, or the rows left
    by a `where` filter, carry their place in the table), the value shown is `shown`'s (default `column`).
    """
    rows = np.flatnonzero(mask)
    first = int(rows[0])
    value = frame[shown or column].iloc[first]
    value = value.item() if isinstance(value, np.generic) else value  # -5.0, not np.float64(-5.0)
    return Problem(where, column, rule, f"{_row(where, int(frame.index[first]))}: {value!r}", len(rows), hint)


def _as_text(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip()


class TextTally:
    """What an undeclared text column holds, over a whole table or its chunks: numbers, and the values that are not.

    The rule (docs/data-contract.md, "What inference does with tokens"): a column whose values
    are all numbers is numeric; one whose non-numbers ("tokens") take more than `MAX_TOKENS`
    distinct values is text (categorical); in between, numbers but for at most `MAX_TOKENS`
    distinct tokens, the column is numeric with missing-value markers (`NA`, `n/a`, `-`) or
    corrupt values (`abc`) when the numbers outweigh the tokens (more rows, or at least as
    many distinct values: a sparse column mostly `NA`), and that is a problem to tell, not a
    guess to make; else (`Yes`/`No` with a stray `0`) it is text. A value is compared as stored (`' NA'` is not `'NA'`): the
    suggested `na_values` then match it.
    """

    def __init__(self) -> None:
        self.number_rows = 0
        self.numbers: set[float] = set()  # distinct numbers, kept up to MAX_TOKENS + 1: only compared with the tokens
        self.whole = True
        self.tokens: dict[str, list[int]] = {}  # token -> [first row (0-based index), rows]

    @property
    def is_text(self) -> bool:
        """Settled: too many distinct tokens for markers, whatever the rest holds."""
        return len(self.tokens) > MAX_TOKENS

    def add(self, values: pd.Series) -> None:
        """Count a column's (or a chunk's) values; the index numbers their rows.

        Each distinct value is parsed once (a text column of a few categories in a log of
        millions of rows costs one hash of the column, not millions of parses).
        """
        text = values.dropna().astype("string")
        if text.empty:
            return
        counts = text.value_counts(sort=False)
        numbers = pd.to_numeric(counts.index.to_series().str.strip(), errors="coerce").to_numpy()
        parsed = ~np.isnan(numbers)
        found = numbers[parsed]
        self.number_rows += int(counts.to_numpy()[parsed].sum())
        self.whole = self.whole and bool((found % 1 == 0).all())
        if len(self.numbers) <= MAX_TOKENS:
            self.numbers.update(found[: MAX_TOKENS + 1].tolist())
        tokens = counts[~parsed]
        for token in [t for t in tokens.index if t in self.tokens]:
            self.tokens[token][1] += int(tokens[token])
        new = [t for t in tokens.index if t not in self.tokens][: MAX_TOKENS + 1 - len(self.tokens)]
        if new:
            firsts = text[text.isin(new)]
            firsts = firsts[~firsts.duplicated()]  # each new token once, at its first row
            for index, token in firsts.items():
                self.tokens[token] = [int(index), int(tokens[token])]

    def kind(self) -> ColumnType:
        """The column's type: its numbers' when it has no token or is numeric but for markers (see `problem`)."""
        if self.number_rows and (not self.tokens or self.markers):
            return ColumnType.INT if self.whole else ColumnType.FLOAT
        return ColumnType.CATEGORICAL

    def kind_as_is(self) -> ColumnType:
        """The type of a column taken as it is (a label, `kind` or ignored column): text unless every value is a number."""
        return ColumnType.CATEGORICAL if self.tokens else self.kind()

    @property
    def markers(self) -> bool:
        """Numbers but for a few tokens that they outweigh: the tokens are markers or corruption."""
        token_rows = sum(rows for _, rows in self.tokens.values())
        return (
            0 < len(self.tokens) <= MAX_TOKENS and self.number_rows > 0
            and (self.number_rows > token_rows or len(self.numbers) >= len(self.tokens))
        )

    def problem(self, where: str | Place, column: str) -> Problem | None:
        """The problem of a column that is numbers but for a few tokens, listing each with its first row and count."""
        if not self.markers:
            return None
        tokens = sorted(self.tokens.items(), key=lambda item: item[1][0])
        listed = ", ".join(f"{token!r} ({_row(where, first)}, {rows} row{'s' if rows > 1 else ''})" for token, (first, rows) in tokens)
        kind = "whole numbers" if self.whole else "numbers"
        names = [token for token, _ in tokens]
        return Problem(
            where, column, f"holds {kind} but for {len(tokens)} value{'s' if len(tokens) > 1 else ''} that "
            f"{'are' if len(tokens) > 1 else 'is'} not: {listed}",
            hint=f"if {'they mark' if len(tokens) > 1 else 'it marks'} a missing value, add `na_values: {names}`; "
            f"if the column is text, declare it: `columns: {{{column}: categorical}}`",
        )


def infer_type(values: pd.Series) -> ColumnType:
    """Numbers stay numbers (int when every value is whole), anything else is categorical.

    Text columns: see `TextTally` (numbers but for a few tokens are numeric, and a problem
    that `type_columns` reports).
    """
    if pd.api.types.is_bool_dtype(values):
        return ColumnType.CATEGORICAL
    if pd.api.types.is_integer_dtype(values):
        return ColumnType.INT
    if pd.api.types.is_float_dtype(values):
        return ColumnType.FLOAT
    if pd.api.types.is_datetime64_any_dtype(values):
        return ColumnType.TIMESTAMP
    tally = TextTally()
    tally.add(values)
    return tally.kind()


def _ids(values: pd.Series) -> pd.Series:
    """Customer ids as text (stripped, empty as missing), whatever their type in the table.

    Integer ids are converted by Arrow: the same text, about 5x faster than Python's `str`
    per value, which matters on a log of a hundred million rows; they have nothing to strip.
    Numbers stored as floats (a Parquet column with nulls, an id `derive`d by arithmetic) are
    their whole number's text when every one is whole: 17850.0 is the id "17850".
    """
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    if pd.api.types.is_bool_dtype(values):
        values = values.astype("string")
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iu":
        text = pa.array(values.to_numpy()).cast(pa.string()).to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)
        return pd.Series(text.array, index=values.index, name=values.name)
    return values.astype("string").str.strip().replace("", pd.NA)


# a date written with its day and month as numbers: 03/04/2024, 3.4.24, 03-04-2024 (then maybe a time)
_NUMERIC_DATE = r"^(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}(?:\D|$)"


def _to_timestamp(values: pd.Series, fmt: str | None) -> tuple[pd.Series, str | None]:
    """UTC timestamps, and why the column cannot be read without a declared format (or None).

    Without `fmt`, each value is parsed on its own (ISO-like and other forms may mix), except
    dates written with numbers for day and month (03/04/2024): their order is taken from the
    column as a whole, as a value above 12 shows it, and applied to every value, never guessed
    value by value (which would read 03/04 as March and 13/04 as April in one column). A
    column with no value above 12 in either place cannot say its order: that is the reason
    returned, and the user declares `timestamp_format`.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        return (values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")), None
    text = _as_text(values)
    if fmt:
        return pd.to_datetime(text, format=fmt, utc=True, errors="coerce"), None
    parts = text.dropna().str.extract(_NUMERIC_DATE).dropna().astype(int)
    unread = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")  # as to_datetime gives
    day_first = None
    if len(parts) and len(parts) == text.notna().sum():  # every value is a numeric date
        first_day, second_day = (parts[0] > 12).any(), (parts[1] > 12).any()
        if first_day and second_day:
            return unread, "mixes day-first and month-first dates (values above 12 in both places); set `timestamp_format`"
        if not first_day and not second_day and (parts[0] != parts[1]).any():
            example = text.dropna().iloc[int(np.flatnonzero((parts[0] != parts[1]).to_numpy())[0])]
            return unread, (
                f"writes dates whose day and month order cannot be told (no value above 12 in either place, e.g. "
                f"{example!r}); set `timestamp_format`, e.g. '%d/%m/%Y' or '%m/%d/%Y'"
            )
        day_first = bool(first_day)
    return pd.to_datetime(text, format="mixed", dayfirst=bool(day_first), utc=True, errors="coerce"), None


def _inferred(values: pd.Series, column: str, source: Source, where: str | Place) -> tuple[ColumnType, Problem | None]:
    """An undeclared column's type, and the problem of one that is numbers but for a few tokens (`TextTally`).

    A label, `kind` or ignored column is what it is: text unless every value is a number, never a problem.
    """
    if values.dtype != object and not pd.api.types.is_string_dtype(values):
        return infer_type(values), None
    tally = TextTally()
    tally.add(values)
    if column in (source.label, source.kind) or column in source.ignore:
        return tally.kind_as_is(), None
    kind = tally.kind()
    if kind == ColumnType.CATEGORICAL:
        formatted = _formatted_numbers(values, column)
        if formatted is not None:
            return kind, Problem(where, column, formatted)
    return kind, tally.problem(where, column)


# a number as spreadsheets and reports write it: currency sign, thousands separators, percent sign
_FORMATTED_NUMBER = r"^[-+]?\s*[$€£¥]?\s*[-+]?\d{1,3}(?:,\d{3})*(?:\.\d+)?\s*%?$"


def _formatted_numbers(values: pd.Series, column: str) -> str | None:
    """The problem of a text column that is numbers written for reading ('$1,234.50', '12.5%'), or None.

    Such a column would silently become a category of thousands of values; the engine does not
    guess what the signs mean (',' is a decimal mark in much of Europe), so the user says it
    with a `derive` expression (DuckDB), which the message spells out.
    """
    # each distinct value once, in order of first appearance: a text column of a million rows
    # holds far fewer values, and the regular expressions run on those
    text = pd.Series(values.dropna().astype("string").unique()).str.strip()
    if text.empty or not text.str.fullmatch(_FORMATTED_NUMBER).all():
        return None
    signed = text[text.str.contains(r"[$€£¥,%]")]
    if signed.empty:
        return None
    example = signed.iloc[0]
    name = f"{column}_value" if column.isidentifier() else "value"
    quoted = column if column.isidentifier() else f'\\"{column}\\"'  # a DuckDB identifier, inside a YAML "..." string
    return (
        f"holds numbers written for reading (e.g. {example!r}: currency or percent signs, thousands separators), "
        f"which would be read as text; derive the number and ignore the text, e.g. `derive: {{{name}: "
        f"\"CAST(regexp_replace({quoted}, '[^0-9.+-]', '', 'g') AS DOUBLE)\"}}` and `ignore: [{column}]`"
    )


def _markers_hint(values: pd.Series) -> str:
    """For a declared number's bad values: if they are a few tokens, the `na_values` that would mark them missing."""
    tokens = values.astype("string").unique().tolist()
    if len(tokens) > MAX_TOKENS:
        return ""
    return f"if {'they mark' if len(tokens) > 1 else 'it marks'} a missing value, add `na_values: {sorted(tokens)}`"


def type_columns(
    frame: pd.DataFrame, source: Source, where: str | Place
) -> tuple[pd.DataFrame, dict[str, ColumnType], list[Problem]]:
    """Convert every column to its declared or inferred type; values that do not convert are problems.

    The customer id becomes a string; the timestamp and signup columns become UTC timestamps
    (naive times are read as UTC). An undeclared column of numbers but for a few tokens is
    numeric, its tokens missing, and a problem naming them (`TextTally`).
    """
    problems: list[Problem] = []
    typed: dict[str, pd.Series] = {}
    types: dict[str, ColumnType] = {}
    time_columns = {c for c in (source.timestamp, source.signup) if c}
    for column in frame.columns:
        values = frame[column]
        if column == source.id_column:
            typed[column] = _ids(values)
            types[column] = ColumnType.CATEGORICAL
            continue
        markers = None
        kind = source.columns.get(column) or (ColumnType.TIMESTAMP if column in time_columns else None)
        if kind is None:
            kind, markers = _inferred(values, column, source, where)
        present = values.notna().to_numpy()
        if kind == ColumnType.TIMESTAMP:
            fmt = source.timestamp_format if column in (source.timestamp, source.signup) else None
            converted, unreadable = _to_timestamp(values, fmt)
            bad = present & converted.isna().to_numpy()
            if unreadable:
                problems.append(Problem(where, column, unreadable))
            elif bad.any():
                problems.append(_problem(where, column, f"has unparseable timestamps{f' in format {fmt!r}' if fmt else ''}", frame, bad))
        elif kind in (ColumnType.INT, ColumnType.FLOAT):
            converted = pd.to_numeric(values if values.dtype.kind in "iuf" else _as_text(values), errors="coerce")
            bad = present & converted.isna().to_numpy()
            if markers is not None:
                problems.append(markers)  # the tokens, each with its rows: the column is typed as its numbers
            elif bad.any():
                problems.append(_problem(where, column, f"must be of type {kind.value}", frame, bad, hint=_markers_hint(values[bad])))
            elif kind == ColumnType.INT and (converted.dropna() % 1 != 0).any():
                fraction = (converted % 1 != 0).fillna(False).to_numpy()
                problems.append(_problem(where, column, "must be of type int (whole numbers)", frame, fraction))
            converted = converted.astype("Int64" if kind == ColumnType.INT and not bad.any() else "float64")
        else:
            converted = values.astype("string")
            if markers is not None:
                problems.append(markers)  # text that is numbers written for reading (`_formatted_numbers`)
        typed[column] = converted
        types[column] = kind
    return pd.DataFrame(typed, index=frame.index), types, problems


def check_required(columns: list[str], source: Source, where: str | Place) -> list[Problem]:
    """Every column the config names must be in the table (or derived)."""
    available = set(columns) | set(source.derive)
    named = [*source.required_columns(), *source.columns]
    return [
        Problem(where, c, f"is required by the config but missing; the table has {sorted(columns)}")
        for c in dict.fromkeys(named)
        if c not in available
    ]


def check_rows(frame: pd.DataFrame, types: dict[str, ColumnType], source: Source, where: str | Place) -> list[Problem]:
    """Rules on the typed, filtered table."""
    if frame.empty:
        return [Problem(where, None, "is empty (no rows after reading and the config's `where` filter)")]
    problems = []
    ids = frame[source.id_column]
    missing = ids.isna().to_numpy()
    if missing.any():
        problems.append(_problem(where, source.id_column, "must hold a customer id on every row", frame, missing))
    if source.shape in TABLE_SHAPES:
        dup = ids.duplicated(keep=False).to_numpy() & ~missing
        if dup.any():
            table = "snapshot" if source.shape == Shape.SNAPSHOT else "customers table"
            problems.append(_problem(where, source.id_column, f"must be unique in a {table} (one row per customer)", frame, dup))
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


def labels(values: pd.Series) -> pd.Series:
    """A label column as the engine compares it with `positive`: text, a whole number without its ".0" (`label_text`)."""
    text = _as_text(values)
    distinct = text.dropna().unique()
    return text.map(dict(zip(distinct, map(label_text, distinct))), na_action="ignore").astype("string")


def _check_label(frame: pd.DataFrame, source: Source, where: str | Place) -> list[Problem]:
    values = labels(frame[source.label])
    missing = values.isna().to_numpy()
    if missing.any():
        return [_problem(where, source.label, "must hold a label on every row", frame, missing)]
    distinct = sorted(values.unique().tolist())
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
    log: pd.DataFrame, log_source: Source, where: str | Place, signups: pd.DataFrame, snapshot: Source
) -> list[Problem]:
    """No event or transaction before the customer's signup (a wrong join key or time zone shows up here).

    Each log row is looked up in the snapshot by Arrow's hash lookup (`index_in`), several
    times faster than a pandas merge on text ids, which a log of a hundred million rows feels.
    """
    if log_source.shape not in LOG_SHAPES and log_source.shape != Shape.CANCELLATIONS:
        return []
    ids = pa.array(log[log_source.id_column], pa.string())
    known = pa.array(signups[snapshot.id_column], pa.string())
    at = pc.index_in(ids, value_set=known).to_numpy(zero_copy_only=False)  # NaN: not in the snapshot
    found = ~np.isnan(at)
    times = pd.to_datetime(signups[snapshot.signup], utc=True)  # UTC even when none was read (a refused column)
    positions = np.where(found, np.nan_to_num(at, nan=-1), -1).astype(np.int64)  # -1: not in the snapshot
    signup = pd.Series(times.array.take(positions, allow_fill=True), index=log.index)
    early = (log[log_source.timestamp] < signup).fillna(False).to_numpy()
    if not early.any():
        return []
    row = int(np.flatnonzero(early)[0])
    return [
        Problem(
            where,
            log_source.timestamp,
            f"must not be before the customer's signup ({snapshot.signup} in the snapshot)",
            f"{_row(where, int(log.index[row]))}: customer {log[log_source.id_column].iloc[row]!r} at "
            f"{log[log_source.timestamp].iloc[row]} < signup {signup.iloc[row]}",
            int(early.sum()),
        )
    ]
