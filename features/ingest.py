"""`churn ingest`: read a company's tables as its config describes, validate, then write.

Everything is read and checked first; only a fully valid set of tables is kept, in a new
folder that replaces `<data_dir>/ingested` in one rename. A failed ingest therefore leaves
the earlier ingested data exactly as it was.

Large logs are streamed: an events, transactions or cancellations source in Parquet
(without `derive`/`where`, whose SQL may need the whole table) is read `STREAM_ROWS` rows at
a time, each chunk typed, checked and written to the staging folder as it comes, so memory
holds one chunk (a million simulated customers: 176 M event rows). Every rule is checked on
every chunk, and a problem found in several chunks is reported once, with its first row
(numbered in the whole file) and the count over all of them. Undeclared column types are
read from the Parquet schema (text columns: inferred over the chunks until one settles it).
CSV files, database tables and one-row-per-customer sources are read whole.

Written layout (`<data_dir>/ingested/`):
- `<source>.parquet` per source: `customer_id` (string), `event_time` (UTC, logs and
  cancellations), `signup_at` (snapshot, if configured), the label as `churned` (0/1),
  and the other columns under their own names;
- `actions.yaml`: a copy of the config's action catalog (`actions`), if it names one;
- `manifest.json`: the config, each source's column types, the end of the data, and the
  catalog (`actions`: the copy's file name and where it came from, or null).
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from churn.errors import DataError
from features.contract import LOG_SHAPES, TABLE_SHAPES, ColumnType, Contract, Shape, Source
from features.validate import (
    ContractViolation,
    Problem,
    check_after_signup,
    check_required,
    check_rows,
    infer_type,
    merged,
    type_columns,
)

MANIFEST = "manifest.json"
ACTIONS = "actions.yaml"  # the data set's own action catalog, when the config names one (churn/settings.py reads it)
# Rows per chunk of a streamed source: about 0.5 GB of pandas at a time for the simulator's events.
STREAM_ROWS = 1_000_000


@dataclass(frozen=True)
class IngestedSource:
    """A validated table and what its columns are."""

    name: str
    source: Source
    frame: pd.DataFrame
    types: dict[str, ColumnType]


@dataclass(frozen=True)
class StreamedSource:
    """A source validated chunk by chunk and written to the staging folder as it was read."""

    name: str
    source: Source
    types: dict[str, ColumnType]
    rows: int
    latest: pd.Timestamp | None  # its latest timestamp


@dataclass(frozen=True)
class IngestResult:
    """What `ingest` wrote."""

    out_dir: Path
    rows: dict[str, int]
    customers: int
    data_end: datetime


def _describe(source: Source, root: Path) -> str:
    if source.path:
        return str(root / source.path)
    url = sa.make_url(source.url).render_as_string(hide_password=True)
    return f"{url} ({'table ' + source.table if source.table else 'query'})"


def read_source(source: Source, root: Path) -> pd.DataFrame:
    """The table as stored: CSV (every column as text, typed later), Parquet, or a PostgreSQL table/query."""
    if source.path:
        path = root / source.path
        if not path.exists():
            raise FileNotFoundError(path)
        if path.suffix == ".parquet" or path.name.endswith(".parquet"):
            return pd.read_parquet(path)
        opts = source.csv
        return pd.read_csv(
            path,
            sep=r"\s+" if opts.separator == "whitespace" else opts.separator,
            header=0 if opts.header else None,
            names=opts.names,
            dtype=str,
            keep_default_na=False,
            na_values=["", *source.na_values],
        )
    engine = sa.create_engine(source.url)
    try:
        with engine.connect() as conn:
            if source.query:
                frame = pd.read_sql_query(sa.text(source.query), conn)
            else:
                schema, _, table = source.table.rpartition(".")
                frame = pd.read_sql_table(table, conn, schema=schema or None)
    finally:
        engine.dispose()
    return frame.replace(source.na_values, pd.NA) if source.na_values else frame


def _filter_and_derive(frame: pd.DataFrame, source: Source, where: str) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Apply the config's SQL `derive` expressions and `where` filter (DuckDB on the typed frame)."""
    if not source.derive and not source.where:
        return frame, []
    select = ", ".join(["*", *(f"{expr} AS \"{name}\"" for name, expr in source.derive.items())])
    sql = f"SELECT {select} FROM t" + (f" WHERE {source.where}" if source.where else "")
    con = duckdb.connect()
    try:
        con.register("t", frame)
        return con.execute(sql).df(), []
    except duckdb.Error as exc:
        return None, [Problem(where, None, f"`derive`/`where` expression failed: {str(exc).splitlines()[0]}", sql)]
    finally:
        con.close()


def load_source(name: str, source: Source, root: Path) -> tuple[IngestedSource | None, list[Problem]]:
    """Read, type, filter and check one source; returns it (or None) and its problems."""
    where = _describe(source, root)
    try:
        raw = read_source(source, root)
    except FileNotFoundError:
        return None, [Problem(where, None, f"source {name!r}: file not found")]
    except (sa.exc.SQLAlchemyError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        return None, [Problem(where, None, f"source {name!r} cannot be read: {str(exc).splitlines()[0]}")]
    problems = check_required(list(raw.columns), source, where)
    typed, types, type_problems = type_columns(raw, source, where)
    problems += type_problems
    if problems:
        return None, problems
    typed, problems = _filter_and_derive(typed, source, where)
    if typed is None:
        return None, problems
    typed = typed.reset_index(drop=True)
    for column in source.derive:
        types[column] = source.columns.get(column) or type_columns(typed[[column]], source, where)[1][column]
    problems = check_rows(typed, types, source, where)
    return IngestedSource(name, source, typed, types), problems


def _standard(table: IngestedSource) -> pd.DataFrame:
    """The engine's column names for the roles the config declared."""
    s = table.source
    frame = table.frame.copy()
    rename = {s.customer_id: "customer_id"}
    if s.timestamp:
        rename[s.timestamp] = "event_time"
    if s.signup:
        rename[s.signup] = "signup_at"
    if s.label:
        frame[s.label] = frame[s.label].astype("string").str.strip().isin(s.positive).astype("int64")
        rename[s.label] = "churned"
    frame = frame.drop(columns=[c for c in s.ignore if c in frame and c not in rename])
    for column, kind in table.types.items():
        if kind == ColumnType.CATEGORICAL and column in frame and column not in rename:
            frame[column] = frame[column].astype("string")
        if kind == ColumnType.TIMESTAMP and column in frame:
            frame[column] = frame[column].astype("datetime64[us, UTC]")  # one resolution, whatever the parser chose
    return frame.rename(columns=rename)


def _data_end(tables: list[IngestedSource], streamed: list[StreamedSource] = ()) -> datetime:
    """Midnight UTC after the latest log row (or the snapshot's as_of): the end of the data."""
    ends = [t.frame[t.source.timestamp].max() for t in tables if t.source.shape in LOG_SHAPES]
    ends += [t.latest for t in streamed if t.source.shape in LOG_SHAPES and t.latest is not None]
    if ends:
        latest = max(ends)
        return datetime(latest.year, latest.month, latest.day, tzinfo=timezone.utc) + timedelta(days=1)
    snap = next(t for t in tables if t.source.shape == Shape.SNAPSHOT).source.as_of
    return datetime(snap.year, snap.month, snap.day, tzinfo=timezone.utc)


def streams(source: Source, root: Path) -> bool:
    """Whether `source` is read in chunks: a Parquet log or cancellations file with no `derive`/`where`."""
    return bool(
        source.path and str(source.path).endswith(".parquet") and source.shape not in TABLE_SHAPES
        and not source.derive and not source.where and (root / source.path).exists()
    )


def _parquet_types(file: pq.ParquetFile, source: Source) -> dict[str, ColumnType]:
    """Types of the undeclared columns of a Parquet file, as `type_columns` would infer them on the whole table.

    From the schema where it says (a whole-number column holding nulls reads as float, as
    pandas reads it); other columns (text) are inferred chunk by chunk until a chunk settles
    them (one non-number makes a column categorical).
    """
    time_columns = {c for c in (source.timestamp, source.signup) if c}
    types, open_ = {}, []
    schema = file.schema_arrow
    for column in schema.names:
        if column == source.customer_id or column in time_columns or column in source.columns:
            continue
        kind = schema.field(column).type
        if pa.types.is_integer(kind):
            types[column] = ColumnType.INT if _nulls(file, column) == 0 else ColumnType.FLOAT
        elif pa.types.is_floating(kind):
            types[column] = ColumnType.FLOAT
        elif pa.types.is_timestamp(kind):
            types[column] = ColumnType.TIMESTAMP
        elif pa.types.is_boolean(kind):
            types[column] = ColumnType.CATEGORICAL
        else:
            open_.append(column)
    seen: dict[str, ColumnType | None] = dict.fromkeys(open_)  # None: no value seen yet
    for batch in (file.iter_batches(STREAM_ROWS, columns=open_) if open_ else ()):
        for column in [c for c in open_ if seen[c] != ColumnType.CATEGORICAL]:
            values = batch.column(column).to_pandas()
            if values.notna().any():
                # a non-number among the first values settles it without converting the whole chunk
                head = infer_type(values.dropna().head(1_000))
                kind = head if head == ColumnType.CATEGORICAL else infer_type(values)
                seen[column] = kind if seen[column] is None else max(seen[column], kind, key=_WIDER.index)
        if all(seen[c] == ColumnType.CATEGORICAL for c in open_):
            break
    types.update({c: kind or ColumnType.CATEGORICAL for c, kind in seen.items()})
    return types


def _nulls(file: pq.ParquetFile, column: str) -> int:
    """Nulls in one column: from the row groups' statistics, or counted when a group has none."""
    index = file.schema_arrow.get_field_index(column)
    total = 0
    for group in range(file.num_row_groups):
        stats = file.metadata.row_group(group).column(index).statistics
        if stats is None or not stats.has_null_count:
            return sum(b.column(0).null_count for b in file.iter_batches(STREAM_ROWS, columns=[column]))
        total += stats.null_count
    return total


_WIDER = [ColumnType.INT, ColumnType.FLOAT, ColumnType.CATEGORICAL]  # int < float < categorical


def stream_source(
    name: str, source: Source, root: Path, out: Path | None, signups: IngestedSource | None
) -> tuple[StreamedSource | None, list[Problem], list[Problem]]:
    """Read, type and check a Parquet source chunk by chunk, writing it to `out` while no problem is found.

    Returns the source (None if it cannot be read), its own problems, and those of the rule
    that no row comes before the customer's signup (`signups`: the one-row-per-customer source).
    """
    where = _describe(source, root)
    try:
        file = pq.ParquetFile(root / source.path)
    except (OSError, pa.ArrowException) as exc:
        return None, [Problem(where, None, f"source {name!r} cannot be read: {str(exc).splitlines()[0]}")], []
    problems = check_required(file.schema_arrow.names, source, where)
    if problems:
        return None, problems, []
    typed_as = source.model_copy(update={"columns": {**_parquet_types(file, source), **source.columns}})
    rows, latest, types, writer, early = 0, None, {}, None, []
    try:
        for batch in file.iter_batches(STREAM_ROWS):
            raw = batch.to_pandas()
            raw.index = pd.RangeIndex(rows, rows + len(raw))  # rows are numbered in the whole file
            typed, types, found = type_columns(raw, typed_as, where)
            if not found:
                found = check_rows(typed, types, source, where)
            if signups is not None and source.timestamp in typed:
                early += check_after_signup(typed, source, where, signups.frame, signups.source)
            problems += found
            rows += len(raw)
            if source.timestamp and source.timestamp in typed and not found:
                top = typed[source.timestamp].max()
                latest = top if latest is None or (pd.notna(top) and top > latest) else latest
            if out is None or problems or early:
                continue  # nothing more is written: the ingest will fail; the rest is only checked
            table = pa.Table.from_pandas(_standard(IngestedSource(name, source, typed, types)), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema)
            writer.write_table(table.cast(writer.schema))
    except (pa.ArrowException, OSError) as exc:
        problems.append(Problem(where, None, f"source {name!r} cannot be read: {str(exc).splitlines()[0]}"))
    finally:
        if writer is not None:
            writer.close()
    if rows == 0:
        problems.append(Problem(where, None, "is empty (no rows after reading and the config's `where` filter)"))
    return StreamedSource(name, source, types, rows, latest), merged(problems), merged(early)


def validate(contract: Contract, root: Path, out_dir: Path | None = None) -> tuple[list[IngestedSource], list[StreamedSource]]:
    """Read and check every source; raise `ContractViolation` with every problem found.

    Returns the sources read whole, and those streamed (`streams`): these are written to
    `out_dir` (as `<source>.parquet`) while they are read, when it is given.
    """
    tables, streamed = [], []
    # one-row-per-customer sources first: log rows are checked against their signups
    order = sorted(contract.sources.items(), key=lambda item: item[1].shape not in TABLE_SHAPES)
    found_by: dict[str, list[Problem]] = {}
    early_by: dict[str, list[Problem]] = {}
    snapshot = None
    for name, source in order:
        if streams(source, root):
            out = Path(out_dir) / f"{name}.parquet" if out_dir is not None else None
            part, found_by[name], early_by[name] = stream_source(name, source, root, out, snapshot)
            if part is not None:
                streamed.append(part)
            continue
        table, found_by[name] = load_source(name, source, root)
        if table is not None:
            tables.append(table)
            if snapshot is None and source.shape in TABLE_SHAPES and source.signup:
                snapshot = table
    if snapshot is not None:
        for table in tables:
            if table is not snapshot:
                early_by[table.name] = check_after_signup(
                    table.frame, table.source, _describe(table.source, root), snapshot.frame, snapshot.source
                )
    # in the config's order: each source's own problems, then those of rows before a signup
    problems = [p for name in contract.sources for p in found_by.get(name, [])]
    problems += [p for name in contract.sources for p in early_by.get(name, [])]
    if problems:
        raise ContractViolation(problems)
    return tables, streamed


def ingest(contract: Contract, root: Path, out_dir: Path) -> IngestResult:
    """Validate every source, then replace `out_dir` with the new tables (and the action catalog) in one step.

    `contract.actions`, when given, is the path of the catalog file (`load_contract` resolves it
    against the config file's folder). Streamed sources are written into the staging folder
    while they are checked; a failed ingest removes it, and `out_dir` is untouched.
    """
    catalog = Path(contract.actions) if contract.actions else None
    if catalog is not None and not catalog.is_file():
        raise DataError(f"actions: action catalog {catalog} not found")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        tables, streamed = validate(contract, root, staging)
        rows = {}
        for table in tables:
            frame = _standard(table)
            frame.to_parquet(staging / f"{table.name}.parquet", index=False)
            rows[table.name] = len(frame)
        rows.update({part.name: part.rows for part in streamed})
        rows = {name: rows[name] for name in contract.sources}
        end = _data_end(tables, streamed)
        if catalog is not None:
            shutil.copyfile(catalog, staging / ACTIONS)
        types = {t.name: t.types for t in [*tables, *streamed]}
        manifest = {
            "contract": contract.model_dump(mode="json"),
            "types": {name: {c: k.value for c, k in types[name].items()} for name in contract.sources},
            "data_end": end.isoformat(),
            "actions": {"file": ACTIONS, "from": str(catalog)} if catalog is not None else None,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        customers = _customers(staging, contract)
        _swap(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return IngestResult(out_dir, rows, customers, end)


def _customers(folder: Path, contract: Contract) -> int:
    """Distinct customer ids over every written table."""
    con = duckdb.connect()
    try:
        union = " UNION ALL ".join(f"SELECT customer_id FROM read_parquet('{folder / name}.parquet')" for name in contract.sources)
        return con.execute(f"SELECT count(DISTINCT customer_id) FROM ({union})").fetchone()[0]
    finally:
        con.close()


def _swap(new: Path, target: Path) -> None:
    """Put `new` in place of `target`; the old folder is removed only once the new one is there."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    new.rename(target)
    if old.exists():
        shutil.rmtree(old)


def read_manifest(ingested_dir: Path) -> dict:
    """The manifest of the last successful ingest."""
    path = Path(ingested_dir) / MANIFEST
    if not path.exists():
        raise DataError(f"{path} is missing; run `churn ingest --config <file>` first")
    return json.loads(path.read_text())
