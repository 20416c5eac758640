"""`churn ingest`: read a company's tables as its config describes, validate, then write.

Everything is read and checked first; only a fully valid set of tables is kept, in a new
folder that replaces `<data_dir>/ingested` in one rename. A failed ingest therefore leaves
the earlier ingested data exactly as it was.

A source's `path` may be a glob: its files are read in sorted order as one table (one
schema), and problems name the file and its row (`validate.Place`).

Large logs are streamed: an events, transactions or cancellations source in Parquet (a file
or a glob, without `derive`/`where`, whose SQL may need the whole table) is read `STREAM_ROWS` rows at
a time, each chunk typed, checked and written to the staging folder as it comes, so memory
holds one chunk (a million simulated customers: 176 M event rows). Every rule is checked on
every chunk, and a problem found in several chunks is reported once, with its first row
(numbered in its file) and the count over all of them. Undeclared column types are
read from the Parquet schema (text columns: tallied over the chunks until one settles it).
CSV files, database tables and one-row-per-customer sources are read whole.

Progress is counted in parts (`ingest(progress=...)`): a source read whole is one part, a
streamed source one part per chunk (its row count from the Parquet metadata).

Written layout (`<data_dir>/ingested/`):
- `<source>.parquet` per source: `customer_id` (string), `event_time` (UTC, logs and
  cancellations), `signup_at` (snapshot, if configured), the label as `churned` (0/1),
  and the other columns under their own names;
- `actions.yaml`: a copy of the config's action catalog (`actions`), if it names one;
- `manifest.json`: the config, each source's column types, the end of the data, and the
  catalog (`actions`: the copy's file name and where it came from, or null).
"""

from __future__ import annotations

import glob
import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from churn.errors import DataError
from features.contract import LOG_SHAPES, ROW_ID, TABLE_SHAPES, ColumnType, Contract, Shape, Source
from features.validate import (
    ContractViolation,
    Place,
    Problem,
    TextTally,
    check_after_signup,
    check_required,
    check_rows,
    labels,
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
    where: Place | None = None  # where its rows come from (a glob's files), for the problems found later


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


def _describe(source: Source, root: Path) -> Place:
    """Where the source is, for messages (the rows of a glob's files are named per file once they are read)."""
    if source.path:
        return Place(str(root / source.path))
    url = sa.make_url(source.url).render_as_string(hide_password=True)
    return Place(f"{url} ({'table ' + source.table if source.table else 'query'})")


def _starts(files: list[Path], rows: list[int], root: Path) -> tuple[tuple[str, int], ...]:
    """Each file's name (relative to `root`) and the row of the whole table it starts at (`rows`: each file's rows)."""
    starts = [0, *pd.Series(rows, dtype="int64").cumsum().tolist()]
    return tuple((_name(f, root), start) for f, start in zip(files, starts)) if rows else ()


def _name(file: Path, root: Path) -> str:
    return str(file.relative_to(root)) if file.is_relative_to(root) else str(file)


def source_files(source: Source, root: Path) -> list[Path]:
    """The files of a `path` source, in the order they are read: the file, or every file its glob matches, sorted."""
    pattern = str(root / source.path)
    if not glob.has_magic(pattern):
        return [Path(pattern)]
    return sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())


def _is_parquet(path: Path | str) -> bool:
    return str(path).endswith(".parquet")


def _read_file(path: Path, source: Source) -> pd.DataFrame:
    """One file as stored: CSV (every column as text, typed later) or Parquet.

    Missing values are the empty field and the config's `na_values`, nothing else: pandas'
    own list (`NA`, `n/a`, `null`, `None`, ...) is not applied, since `NA` may be a value
    (Namibia) and a marker in a numeric column is told by the type inference (`TextTally`).
    """
    if not path.exists():
        raise FileNotFoundError(path)
    if _is_parquet(path):
        return _mark_missing(pd.read_parquet(path), source.na_values)
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


def _mark_missing(frame: pd.DataFrame, na_values: list[str]) -> pd.DataFrame:
    """The text values listed in `na_values` as missing (a Parquet file or a database table: CSV does it as it reads)."""
    if not na_values:
        return frame
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].mask(frame[column].isin(na_values))
    return frame


def _read_database(source: Source) -> pd.DataFrame:
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
    return _mark_missing(frame, source.na_values)


def _schema_problems(columns: list[list[str]], files: list[Path], root: Path, where: Place) -> list[Problem]:
    """The files of one source share one schema: each file whose columns differ from the first's, named."""
    problems = []
    first = columns[0]
    for file, names in zip(files[1:], columns[1:]):
        if set(names) != set(first):
            extra, lacks = sorted(set(names) - set(first)), sorted(set(first) - set(names))
            differs = "; ".join(x for x in (extra and f"has {extra} too", lacks and f"lacks {lacks}") if x)
            problems.append(
                Problem(where, None, f"file {_name(file, root)} {differs}: every file of a source must have the columns of the first, {_name(files[0], root)}")
            )
    return problems


def _read(name: str, source: Source, root: Path) -> tuple[pd.DataFrame | None, Place, list[Problem]]:
    """The source's table (None if it cannot be read), where its rows come from, and the problems of reading it."""
    where = _describe(source, root)
    try:
        if not source.path:
            return _read_database(source), where, []
        files = source_files(source, root)
        if not files:
            matched = " (no file matches the glob)" if glob.has_magic(source.path) else ""
            return None, where, [Problem(where, None, f"source {name!r}: file not found{matched}")]
        frames = [_read_file(f, source) for f in files]
    except FileNotFoundError:
        return None, where, [Problem(where, None, f"source {name!r}: file not found")]
    except (sa.exc.SQLAlchemyError, pd.errors.ParserError, UnicodeDecodeError, OSError, pa.ArrowException) as exc:
        return None, where, [Problem(where, None, f"source {name!r} cannot be read: {str(exc).splitlines()[0]}")]
    where = Place(where.text, _starts(files, [len(f) for f in frames], root))
    problems = _schema_problems([list(f.columns) for f in frames], files, root, where)
    if problems:
        return None, where, problems
    frame = frames[0] if len(frames) == 1 else pd.concat([f[list(frames[0].columns)] for f in frames], ignore_index=True)
    return frame, where, []


def _filter_and_derive(frame: pd.DataFrame, source: Source, where: Place) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Apply the config's SQL `derive` expressions and `where` filter (DuckDB on the typed frame).

    The rows keep their index (their place in the source), so problems found after a filter
    name the row of the file.
    """
    if not source.derive and not source.where:
        return frame, []
    select = ", ".join(["*", *(f"{expr} AS \"{name}\"" for name, expr in source.derive.items())])
    sql = f"SELECT {select} FROM t" + (f" WHERE {source.where}" if source.where else "")
    con = duckdb.connect()
    try:
        con.register("t", frame.assign(**{_ROW: frame.index}))
        out = con.execute(sql).df()
    except duckdb.Error as exc:
        return None, [Problem(where, None, f"`derive`/`where` expression failed: {str(exc).splitlines()[0]}", sql)]
    finally:
        con.close()
    return out.set_index(_ROW).rename_axis(None), []


_ROW = "__churn_row__"  # a row's place in the source, carried through DuckDB


def load_source(name: str, source: Source, root: Path) -> tuple[IngestedSource | None, list[Problem]]:
    """Read, type, filter and check one source; returns it (or None) and every problem found.

    Problems of types do not stop the checks: values that do not convert are missing in
    the rest of them (the row rules, the label), so one run lists everything that is wrong.
    """
    raw, where, problems = _read(name, source, root)
    if raw is None:
        return None, problems
    if source.row_id:
        if ROW_ID in raw:
            return None, [Problem(where, ROW_ID, "exists, and `row_id: true` would make the row number a column of that name: name it in `customer_id` instead")]
        raw.insert(0, ROW_ID, pd.RangeIndex(1, len(raw) + 1))
    problems = check_required(list(raw.columns), source, where)
    typed, types, type_problems = type_columns(raw, source, where)
    if problems:
        return None, problems + type_problems  # the row rules need the columns the config names
    problems = type_problems
    typed, found = _filter_and_derive(typed, source, where)
    if typed is None:
        return None, problems + found
    if source.derive:
        # derived columns are typed as read ones: an id derived as a number becomes text, as every id
        derived, derived_types, found = type_columns(typed[list(source.derive)], source, where)
        typed = typed.assign(**{c: derived[c] for c in derived.columns})
        types.update(derived_types)
        problems += found
    problems += check_rows(typed, types, source, where)
    return IngestedSource(name, source, typed, types, where), problems


def _standard(table: IngestedSource) -> pd.DataFrame:
    """The engine's column names for the roles the config declared."""
    s = table.source
    frame = table.frame.copy()
    rename = {s.id_column: "customer_id"}
    if s.timestamp:
        rename[s.timestamp] = "event_time"
    if s.signup:
        rename[s.signup] = "signup_at"
    if s.label:
        frame[s.label] = labels(frame[s.label]).isin(s.positive).astype("int64")
        rename[s.label] = "churned"
    frame = frame.drop(columns=[c for c in s.ignore if c in frame and c not in rename])
    for column, kind in table.types.items():
        if kind == ColumnType.CATEGORICAL and column in frame and column not in rename:
            frame[column] = frame[column].astype("string")
        if kind == ColumnType.TIMESTAMP and column in frame:
            frame[column] = frame[column].astype("datetime64[us, UTC]")  # one resolution, whatever the parser chose
    frame = frame.rename(columns=rename)
    frame["customer_id"] = frame["customer_id"].astype("string")  # every id is text, whatever made it (type_columns)
    return frame


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
    """Whether `source` is read in chunks: a Parquet log or cancellations file (or glob) with no `derive`/`where`."""
    return bool(
        source.path and _is_parquet(source.path) and source.shape not in TABLE_SHAPES
        and not source.derive and not source.where and source_files(source, root)
    )


def _parquet_types(files: list[pq.ParquetFile], source: Source, where: Place) -> tuple[dict[str, ColumnType], list[Problem]]:
    """Types of the undeclared columns of Parquet files, as `type_columns` would infer them on the whole table.

    From the schema where it says (a whole-number column holding nulls reads as float, as
    pandas reads it); other columns (text) are tallied chunk by chunk (`TextTally`) until a
    chunk settles them as text, or to the end: a column of numbers but for a few tokens is
    numeric and a problem. The first file's schema names the columns (`_schema_problems`
    checks that the others have the same).
    """
    time_columns = {c for c in (source.timestamp, source.signup) if c}
    exempt = {source.label, source.kind, *source.ignore}  # what they are, never a problem (validate._inferred)
    types, open_ = {}, []
    schema = files[0].schema_arrow
    for column in schema.names:
        if column == source.id_column or column in time_columns or column in source.columns:
            continue
        kind = schema.field(column).type
        if pa.types.is_integer(kind):
            types[column] = ColumnType.INT if sum(_nulls(f, column) for f in files) == 0 else ColumnType.FLOAT
        elif pa.types.is_floating(kind):
            types[column] = ColumnType.FLOAT
        elif pa.types.is_timestamp(kind):
            types[column] = ColumnType.TIMESTAMP
        elif pa.types.is_boolean(kind):
            types[column] = ColumnType.CATEGORICAL
        else:
            open_.append(column)
    tallies = {c: TextTally() for c in open_}
    for start, batch in _batches(files, open_) if open_ else ():
        # settled: text for certain, or an exempt column (text at its first token)
        unsettled = [c for c in open_ if not (tallies[c].is_text or (c in exempt and tallies[c].tokens))]
        if not unsettled:
            break
        for column in unsettled:
            values = batch.column(column).to_pandas()
            values.index = pd.RangeIndex(start, start + len(values))
            tallies[column].add(values)
    problems = []
    for column, tally in tallies.items():
        if column in exempt:
            types[column] = tally.kind_as_is()
            continue
        types[column] = tally.kind()
        found = tally.problem(where, column)
        if found is not None:
            problems.append(found)
    return types, problems


def _batches(files: list[pq.ParquetFile], columns: list[str] | None = None):
    """(first row in the whole table, batch) of every file in turn, `STREAM_ROWS` rows at a time."""
    start = 0
    for file in files:
        for batch in file.iter_batches(STREAM_ROWS, columns=columns):
            yield start, batch
            start += batch.num_rows


def _chunks(files: list[pq.ParquetFile]) -> int:
    """Chunks `_batches` reads the files in: `STREAM_ROWS` rows at a time, file by file (from the metadata)."""
    return sum(-(-f.metadata.num_rows // STREAM_ROWS) for f in files)


def _parts(source: Source, root: Path) -> int:
    """Parts of a source's ingest, for progress: its chunks when it streams, else one (read whole)."""
    if not streams(source, root):
        return 1
    try:
        return max(1, _chunks([pq.ParquetFile(p) for p in source_files(source, root)]))
    except (OSError, pa.ArrowException):
        return 1  # unreadable: `stream_source` reports it


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


def stream_source(
    name: str, source: Source, root: Path, out: Path | None, signups: IngestedSource | None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[StreamedSource | None, list[Problem], list[Problem]]:
    """Read, type and check a Parquet source chunk by chunk, writing it to `out` while no problem is found.

    A glob's files are read in sorted order as one table. Returns the source (None if it
    cannot be read), its own problems, and those of the rule that no row comes before the
    customer's signup (`signups`: the one-row-per-customer source).
    `progress(done, total)` after each chunk (`total`: the chunks, from the files' metadata).
    """
    paths = source_files(source, root)
    try:
        files = [pq.ParquetFile(p) for p in paths]
    except (OSError, pa.ArrowException) as exc:
        where = _describe(source, root)
        return None, [Problem(where, None, f"source {name!r} cannot be read: {str(exc).splitlines()[0]}")], []
    where = Place(_describe(source, root).text, _starts(paths, [f.metadata.num_rows for f in files], root))
    problems = _schema_problems([f.schema_arrow.names for f in files], paths, root, where)
    problems = problems or check_required(files[0].schema_arrow.names, source, where)
    if problems:
        return None, problems, []
    inferred, problems = _parquet_types(files, source, where)
    typed_as = source.model_copy(update={"columns": {**inferred, **source.columns}})
    # the token problems are told once, above: the chunks see those columns as declared numbers
    tokened = {p.column for p in problems}
    rows, latest, types, writer, early = 0, None, {}, None, []
    chunks = _chunks(files)
    try:
        for done, (start, batch) in enumerate(_batches(files), start=1):
            raw = _mark_missing(batch.to_pandas(), source.na_values)
            raw.index = pd.RangeIndex(start, start + len(raw))  # rows are numbered in the whole table
            typed, types, found = type_columns(raw, typed_as, where)
            found = [p for p in found if p.column not in tokened]
            found += check_rows(typed, types, source, where)
            if signups is not None and source.timestamp in typed:
                early += check_after_signup(typed, source, where, signups.frame, signups.source)
            problems += found
            rows += len(raw)
            if source.timestamp and source.timestamp in typed and not found:
                top = typed[source.timestamp].max()
                latest = top if latest is None or (pd.notna(top) and top > latest) else latest
            if out is not None and not problems and not early:  # else the ingest will fail: the rest is only checked
                table = pa.Table.from_pandas(_standard(IngestedSource(name, source, typed, types)), preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema)
                writer.write_table(table.cast(writer.schema))
            progress(done, chunks)
    except (pa.ArrowException, OSError) as exc:
        problems.append(Problem(where, None, f"source {name!r} cannot be read: {str(exc).splitlines()[0]}"))
    finally:
        if writer is not None:
            writer.close()
    if rows == 0:
        problems.append(Problem(where, None, "is empty (no rows after reading and the config's `where` filter)"))
    return StreamedSource(name, source, types, rows, latest), merged(problems), merged(early)


def validate(
    contract: Contract, root: Path, out_dir: Path | None = None, progress: Callable[[int, int], None] = lambda done, total: None
) -> tuple[list[IngestedSource], list[StreamedSource]]:
    """Read and check every source; raise `ContractViolation` with every problem found.

    Returns the sources read whole, and those streamed (`streams`): these are written to
    `out_dir` (as `<source>.parquet`) while they are read, when it is given.
    `progress(done, total)` as parts are read: a source read whole is one, a streamed source
    one per chunk (`total` counted from the Parquet metadata before reading).
    """
    tables, streamed = [], []
    # one-row-per-customer sources first: log rows are checked against their signups
    order = sorted(contract.sources.items(), key=lambda item: item[1].shape not in TABLE_SHAPES)
    parts = {name: _parts(source, root) for name, source in order}
    total, before, reported = sum(parts.values()), 0, 0

    def report(done: int) -> None:  # each count once: a streamed source's last chunk ends the source
        nonlocal reported
        if done > reported:
            reported = done
            progress(done, total)

    found_by: dict[str, list[Problem]] = {}
    early_by: dict[str, list[Problem]] = {}
    snapshot = None
    for name, source in order:
        if streams(source, root):
            out = Path(out_dir) / f"{name}.parquet" if out_dir is not None else None
            part, found_by[name], early_by[name] = stream_source(
                name, source, root, out, snapshot, progress=lambda done, _, n=parts[name]: report(before + min(done, n))
            )
            if part is not None:
                streamed.append(part)
        else:
            table, found_by[name] = load_source(name, source, root)
            if table is not None:
                tables.append(table)
                if snapshot is None and source.shape in TABLE_SHAPES and source.signup:
                    snapshot = table
        before += parts[name]
        report(before)
    if snapshot is not None:
        for table in tables:
            if table is not snapshot:
                early_by[table.name] = check_after_signup(table.frame, table.source, table.where, snapshot.frame, snapshot.source)
    # in the config's order: each source's own problems, then those of rows before a signup
    problems = [p for name in contract.sources for p in found_by.get(name, [])]
    problems += [p for name in contract.sources for p in early_by.get(name, [])]
    if problems:
        raise ContractViolation(problems)
    return tables, streamed


def ingest(
    contract: Contract, root: Path, out_dir: Path, progress: Callable[[int, int], None] = lambda done, total: None
) -> IngestResult:
    """Validate every source, then replace `out_dir` with the new tables (and the action catalog) in one step.

    `contract.actions`, when given, is the path of the catalog file (`load_contract` resolves it
    against the config file's folder). Streamed sources are written into the staging folder
    while they are checked; a failed ingest removes it, and `out_dir` is untouched.
    `progress(done, total)` as the sources' parts are read and checked (`validate`).
    """
    catalog = Path(contract.actions) if contract.actions else None
    if catalog is not None and not catalog.is_file():
        raise DataError(f"actions: action catalog {catalog} not found")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        tables, streamed = validate(contract, root, staging, progress)
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
