"""`churn ingest`: read a company's tables as its config describes, validate, then write.

Everything is read and checked first; only a fully valid set of tables is written, into a
new folder that replaces `<data_dir>/ingested` in one rename. A failed ingest therefore
leaves the earlier ingested data exactly as it was.

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
import sqlalchemy as sa

from churn.errors import DataError
from features.contract import LOG_SHAPES, TABLE_SHAPES, ColumnType, Contract, Shape, Source
from features.validate import (
    ContractViolation,
    Problem,
    check_after_signup,
    check_required,
    check_rows,
    type_columns,
)

MANIFEST = "manifest.json"
ACTIONS = "actions.yaml"  # the data set's own action catalog, when the config names one (churn/settings.py reads it)


@dataclass(frozen=True)
class IngestedSource:
    """A validated table and what its columns are."""

    name: str
    source: Source
    frame: pd.DataFrame
    types: dict[str, ColumnType]


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


def _data_end(tables: list[IngestedSource]) -> datetime:
    """Midnight UTC after the latest log row (or the snapshot's as_of): the end of the data."""
    ends = [t.frame[t.source.timestamp].max() for t in tables if t.source.shape in LOG_SHAPES]
    if ends:
        latest = max(ends)
        return datetime(latest.year, latest.month, latest.day, tzinfo=timezone.utc) + timedelta(days=1)
    snap = next(t for t in tables if t.source.shape == Shape.SNAPSHOT).source.as_of
    return datetime(snap.year, snap.month, snap.day, tzinfo=timezone.utc)


def validate(contract: Contract, root: Path) -> list[IngestedSource]:
    """Read and check every source; raise `ContractViolation` with every problem found."""
    tables, problems = [], []
    for name, source in contract.sources.items():
        table, found = load_source(name, source, root)
        problems += found
        if table is not None:
            tables.append(table)
    snapshot = next((t for t in tables if t.source.shape in TABLE_SHAPES and t.source.signup), None)
    if snapshot is not None:
        for table in tables:
            if table is not snapshot:
                problems += check_after_signup(
                    table.frame, table.source, _describe(table.source, root), snapshot.frame, snapshot.source
                )
    if problems:
        raise ContractViolation(problems)
    return tables


def ingest(contract: Contract, root: Path, out_dir: Path) -> IngestResult:
    """Validate every source, then replace `out_dir` with the new tables (and the action catalog) in one step.

    `contract.actions`, when given, is the path of the catalog file (`load_contract` resolves it
    against the config file's folder).
    """
    catalog = Path(contract.actions) if contract.actions else None
    if catalog is not None and not catalog.is_file():
        raise DataError(f"actions: action catalog {catalog} not found")
    tables = validate(contract, root)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        rows = {}
        for table in tables:
            frame = _standard(table)
            frame.to_parquet(staging / f"{table.name}.parquet", index=False)
            rows[table.name] = len(frame)
        end = _data_end(tables)
        if catalog is not None:
            shutil.copyfile(catalog, staging / ACTIONS)
        manifest = {
            "contract": contract.model_dump(mode="json"),
            "types": {t.name: {c: k.value for c, k in t.types.items()} for t in tables},
            "data_end": end.isoformat(),
            "actions": {"file": ACTIONS, "from": str(catalog)} if catalog is not None else None,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _swap(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    customers = len(set().union(*(set(t.frame[t.source.customer_id].dropna()) for t in tables)))
    return IngestResult(out_dir, rows, customers, end)


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
