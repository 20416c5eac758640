"""Point-in-time reads of the offline feature tables with DuckDB's ASOF JOIN.

The same rule as Feast's offline store (and `tests/data/test_pit_asof.py` checks them value
for value): each entity row gets, per feature view, the latest row stamped at or before it,
unless that row is older than the view's TTL. Views without a TTL (the one-row-per-customer
views of ingested data: a snapshot, a customers source stamped at each signup) match their
latest row however old. Feast remains the path for training sets; this one is the baseline
the scale benchmark measures Feast against, and it streams: `open_active_batches` hands
every active customer to batch scoring in bounded chunks, without the whole population in
pandas.

The views are those the feature build wrote (`views.json`, written by `features/build.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from churn.errors import DataError
from features.build import read_views
from features.definitions import FEATURE_TTL


@dataclass(frozen=True)
class View:
    """One feature table: its name, file, feature columns and TTL (None: rows never go stale)."""

    name: str
    path: Path
    columns: list[str]
    ttl: timedelta | None


def views_of(tables_dir: Path, ttl: timedelta = FEATURE_TTL) -> list[View]:
    """The feature views whose tables are in `tables_dir`; `ttl` is that of the views that have one."""
    tables_dir = Path(tables_dir)
    spec = read_views(tables_dir)
    timeless = set(spec["snapshot_views"])
    return [
        View(name, tables_dir / f"{name}.parquet", [c for c, _, _ in fields], None if name in timeless else ttl)
        for name, fields in spec["views"].items()
    ]


def feature_columns(tables_dir: Path) -> list[str]:
    """Every feature column of the views in `tables_dir`, in view order."""
    return [c for view in views_of(tables_dir) for c in view.columns]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pit_query(views: list[View], entity: str, extra_columns: str = "", stamps: str | None = None) -> str:
    """SELECT of `entity` (customer_id, event_timestamp, ...) with every view's features as of each row.

    `stamps`: a table of the entity rows' distinct timestamps (column `ts`); feature rows of a
    view with a TTL in no [ts - ttl, ts] window are dropped before the join. Same result: such
    a row is either not the latest at or before any entity row, or too old for it, and then
    any older row is too.
    """
    select, joins = [], []
    for view in views:
        alias = f"v_{len(joins)}"
        source = f"read_parquet('{view.path}')"
        seconds = None if view.ttl is None else int(view.ttl.total_seconds())
        if stamps is not None and seconds is not None:
            source = (
                f"(SELECT * FROM {source} v WHERE EXISTS (SELECT 1 FROM {stamps} s "
                f"WHERE v.event_timestamp BETWEEN s.ts - to_seconds({seconds}) AND s.ts))"
            )
        joins.append(
            f"ASOF LEFT JOIN {source} {alias} "
            f"ON e.customer_id = {alias}.customer_id AND e.event_timestamp >= {alias}.event_timestamp"
        )
        if seconds is None:
            select += [f"{alias}.{_q(c)}" for c in view.columns]
        else:
            select += [
                f"CASE WHEN e.event_timestamp - {alias}.event_timestamp <= to_seconds({seconds}) THEN {alias}.{_q(c)} END AS {_q(c)}"
                for c in view.columns
            ]
    return f"SELECT e.customer_id, e.event_timestamp{extra_columns}, {', '.join(select)} FROM {entity} e {' '.join(joins)}"


def _at_query(views: list[View], entity: str, at: pd.Timestamp) -> str:
    """SELECT of `entity` (customer_id; every row stamped `at`) with every view's features as of `at`.

    The rule of `_pit_query` for entity rows that all share one timestamp: per view, each
    customer's latest row at or before `at`, and, in a view with a TTL, not before `at - ttl`
    (an older latest row would be stale, so the customer gets nothing from that view). Read
    as "the latest row per customer in that window", joined on customer_id, not as an ASOF
    join (at 50,000 customers 0.08 s instead of 0.43 s on the events view). In a view with a
    TTL the row stamped `at` is the latest wherever there is one (a weekly view has it for
    nearly every active customer): those rows are read as they are, and only the customers
    of `entity` without one are looked up in the older rows of the window (at 200,000
    customers the join took 0.64-0.78 s instead of 0.83-1.12 s with every customer looked up).
    A view's rows are one per customer and timestamp, as the feature build writes them.
    """
    select, joins = [], []
    stamp = f"TIMESTAMPTZ '{at.isoformat()}'"
    newest = "QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY event_timestamp DESC) = 1"
    for view in views:
        alias = f"v_{len(joins)}"
        rows = f"read_parquet('{view.path}')"
        if view.ttl is None:
            latest = f"SELECT * FROM {rows} WHERE event_timestamp <= {stamp} {newest}"
        else:
            since = f"TIMESTAMPTZ '{(at - view.ttl).isoformat()}'"
            latest = (
                f"SELECT * FROM {rows} WHERE event_timestamp = {stamp} UNION ALL "
                f"SELECT * FROM {rows} WHERE {since} <= event_timestamp AND event_timestamp < {stamp} AND customer_id IN "
                f"(SELECT customer_id FROM {entity} EXCEPT SELECT customer_id FROM {rows} WHERE event_timestamp = {stamp}) "
                f"{newest}"
            )
        joins.append(f"LEFT JOIN ({latest}) {alias} ON {alias}.customer_id = e.customer_id")
        select += [f"{alias}.{_q(c)}" for c in view.columns]
    return f"SELECT e.customer_id, {stamp} AS event_timestamp, {', '.join(select)} FROM {entity} e {' '.join(joins)}"


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    return con


# Up to this many distinct entity timestamps, feature rows are filtered to their TTL windows first.
_FEW_STAMPS = 100


def asof_features(
    tables_dir: Path, entity_df: pd.DataFrame, ttl: timedelta = FEATURE_TTL, memory_limit: str = "6GB"
) -> pd.DataFrame:
    """Every view's features joined onto `entity_df`, one row per entity row, in its order.

    `entity_df` columns: customer_id, event_timestamp (tz-aware); other columns are kept.
    `ttl`: the TTL of the views that have one.
    """
    con = _connect()
    # bounded memory: DuckDB spills its joins to disk past this (its default is 80 % of the machine)
    con.execute(f"SET memory_limit='{memory_limit}'")
    frame = entity_df.reset_index(drop=True).assign(_row=lambda d: range(len(d)))
    con.register("entity_rows", frame)
    extra = [c for c in frame.columns if c not in ("customer_id", "event_timestamp")]
    # training sets have a few cutoffs: read only the feature rows within the TTL of one of them
    con.execute("CREATE TEMP TABLE stamps AS SELECT DISTINCT event_timestamp AS ts FROM entity_rows")
    few = con.execute("SELECT count(*) FROM stamps").fetchall()[0][0] <= _FEW_STAMPS
    query = _pit_query(
        views_of(tables_dir, ttl), "entity_rows", "".join(f", e.{_q(c)}" for c in extra), stamps="stamps" if few else None
    )
    # through Arrow, as `historical_features` does: equal strings shared, not a Python object per value
    out = con.sql(f"{query} ORDER BY e._row").to_arrow_table().to_pandas(self_destruct=True)
    con.close()
    if len(out) != len(frame):
        raise DataError(f"ASOF join returned {len(out)} rows for {len(frame)} entity rows")
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    return out.drop(columns="_row")


def active_feature_batches(
    tables_dir: Path, as_of: datetime, batch_rows: int = 200_000, customers: pd.Series | None = None,
) -> Iterator[pd.DataFrame]:
    """Features at `as_of` of every active customer, in chunks.

    Yields frames of at most `batch_rows` rows: customer_id, event_timestamp (= as_of), features.
    DuckDB streams the join, so memory holds one chunk, not the population.
    `customers`: the active customers' ids (`features.store.active_customers`: the population
    depends on the data set's cancellations too, not only on its feature rows).
    """
    for batch in active_arrow_batches(tables_dir, as_of, batch_rows, customers):
        yield batch.to_pandas()


def active_arrow_batches(
    tables_dir: Path, as_of: datetime, batch_rows: int = 200_000, customers: pd.Series | None = None,
) -> Iterator[pa.RecordBatch]:
    """`active_feature_batches` as Arrow record batches (for scoring without pandas)."""
    if customers is None:
        raise ValueError("the active customers must be given (features.store.active_customers)")
    with open_active_batches(tables_dir, as_of, batch_rows, customers=customers) as (_, batches):
        yield from batches


@contextmanager
def open_active_batches(
    tables_dir: Path, as_of: datetime, batch_rows: int = 200_000, customers: pd.Series | None = None,
    population: str | None = None,
) -> Iterator[tuple[int, Iterator[pa.RecordBatch]]]:
    """How many customers are active at `as_of`, and their features as Arrow batches in customer_id order.

        with open_active_batches(tables_dir, as_of, population=sql) as (total, batches):
            for batch in batches: ...

    Batches of at most `batch_rows` rows: customer_id, event_timestamp (= as_of), features.
    The active customers are given either as their ids (`customers`) or as a SELECT of one
    column, customer_id (`population`: `features.store.active_population`), which runs in the
    join's own DuckDB connection: the ids never go through pandas, and `total` is known before
    the first batch.
    """
    if (customers is None) == (population is None):
        raise ValueError("give the active customers either as ids (customers) or as a SELECT of them (population)")
    tables_dir = Path(tables_dir)
    stamp = pd.Timestamp(as_of).tz_convert("UTC") if pd.Timestamp(as_of).tzinfo else pd.Timestamp(as_of, tz="UTC")
    views = views_of(tables_dir)
    for view in views:
        if not view.path.exists():
            raise DataError(f"{view.path} is missing; run `churn features build` first")
    con = _connect()
    try:
        if customers is not None:
            con.register("given", pd.DataFrame({"customer_id": pd.Series(customers).astype(str).to_numpy()}))
            population = "SELECT customer_id FROM given"
        # a table: the population is computed once, counted, then joined
        con.execute(f"CREATE TEMP TABLE active AS SELECT DISTINCT customer_id FROM ({population})")
        ((total,),) = con.execute("SELECT count(*) FROM active").fetchall()
        if total == 0:
            raise DataError(f"{views[0].path}: no customer has a snapshot at {stamp.isoformat()}; is as_of on a weekly snapshot?")
        # a relation, not a DB-API result: DuckDB hands its Arrow batches over without an extra copy
        reader = con.sql(f"{_at_query(views, 'active', stamp)} ORDER BY e.customer_id").to_arrow_reader(batch_rows)
        yield total, iter(reader)
    finally:
        con.close()
