"""Turn the raw tables into weekly, timestamped feature tables for Feast.

One row per customer per weekly snapshot while the customer is active. A row stamped
`event_timestamp = s` summarizes only raw rows with a timestamp strictly before `s`, so a
point-in-time join at a cutoff `c >= s` never sees anything from after `c`.

Windows are whole weeks counted back from the snapshot: 7, 28, 91 and 364 days.
The work runs in DuckDB (columnar, out-of-core): events are first reduced to one row per
customer per week, and the windows are sums over the preceding weekly rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
import shutil
from pathlib import Path

import duckdb

from churn.errors import DataError
from features.definitions import VIEW_COLUMNS
from features.raw import RAW_TABLES, validate_raw_dir

# Customers per partition of the window step (see `build_partitions`).
PARTITION_CUSTOMERS = 125_000
# Weeks in each window; names say days so that a reader need not convert.
_WINDOWS = {"7d": 1, "28d": 4, "91d": 13, "364d": 52}
_DAY_US = 86_400 * 1_000_000
_WEEK_US = 7 * _DAY_US


@dataclass(frozen=True)
class FeatureBuildResult:
    """What `build_feature_tables` wrote."""

    tables: dict[str, Path]
    rows: int
    snapshots: int
    first_snapshot: datetime
    as_of: datetime
    partitions: int = 1


def raw_as_of(raw_dir: Path) -> datetime:
    """The end of the data: midnight UTC after the latest event (the scoring date)."""
    path = Path(raw_dir) / RAW_TABLES["events"].file
    con = duckdb.connect()
    latest = con.execute(f"SELECT max(event_time) FROM read_parquet('{path}')").fetchone()[0]
    if latest is None:
        raise DataError(f"{path}: table 'events' is empty; cannot tell the end of the data")
    latest = latest.astimezone(timezone.utc)
    return datetime(latest.year, latest.month, latest.day, tzinfo=timezone.utc) + timedelta(days=1)


def build_partitions(customers: int, partition_customers: int = PARTITION_CUSTOMERS) -> int:
    """How many customer partitions the window step runs in, one after another.

    The window step (about 58 weekly rows per customer x 25 windowed sums) is what outgrows
    memory: at 1,000,000 customers it did not fit in 11 GB as one query. Each partition holds
    at most `partition_customers` customers, which keeps the step well under 2 GB.
    """
    if partition_customers < 1:
        raise ValueError(f"partition_customers must be at least 1; got {partition_customers}")
    return max(1, -(-customers // partition_customers))


def build_feature_tables(
    raw_dir: Path,
    out_dir: Path,
    memory_limit: str = "4GB",
    partition: tuple[int, int] | None = None,
    partitions: int | None = None,
    partition_customers: int = PARTITION_CUSTOMERS,
) -> FeatureBuildResult:
    """Compute the four feature tables (behavioral, lifecycle, experience, value).

    Reads from `raw_dir`:
    - customers.parquet: customer_id, signup_at, plan, price_tier, monthly_price, channel, region
    - events.parquet: customer_id, event_time, event_type, value
    - transactions.parquet: customer_id, transaction_time, kind, amount
    - cancellations.parquet: customer_id, cancelled_at, reason

    Writes one Parquet file per feature view into `out_dir`.
    `partition=(k, n)` builds only the customers with `customer_id % n == k` (features are
    per customer, so partitions are independent: `features/build_dask.py` runs them as tasks);
    the weekly grid stays that of the whole data, so partitions concatenate into the full tables.

    Memory stays bounded on one machine: the weekly aggregation of the raw rows runs once into
    a scratch DuckDB database on disk (DuckDB spills under `memory_limit`), then the window step
    runs over `partitions` customer partitions one after another (default: `build_partitions`
    of the customer count, i.e. at most `partition_customers` each), each written to a Parquet
    part; the tables are the parts sorted by (event_timestamp, customer_id), identical whatever
    the number of partitions.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    validate_raw_dir(raw_dir)
    if partition is not None and not 0 <= partition[0] < partition[1]:
        raise ValueError(f"partition must be (k, n) with 0 <= k < n; got {partition}")
    out_dir.mkdir(parents=True, exist_ok=True)
    as_of = raw_as_of(raw_dir)
    scratch = out_dir / "_build"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        return _build(raw_dir, out_dir, scratch, as_of, memory_limit, partition, partitions, partition_customers)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _build(
    raw_dir: Path,
    out_dir: Path,
    scratch: Path,
    as_of: datetime,
    memory_limit: str,
    partition: tuple[int, int] | None,
    partitions: int | None,
    partition_customers: int,
) -> FeatureBuildResult:
    # a database file, not memory: the weekly tables of a million customers stay on disk
    con = duckdb.connect(str(scratch / "build.duckdb"))
    con.execute(f"SET memory_limit='{memory_limit}'")
    con.execute(f"SET temp_directory='{scratch / 'spill'}'")
    con.execute("SET preserve_insertion_order=false")
    con.execute("SET TimeZone='UTC'")
    events_file = raw_dir / RAW_TABLES["events"].file
    first_event = con.execute(f"SELECT CAST(min(event_time) AS TIMESTAMPTZ) FROM read_parquet('{events_file}')").fetchone()[0]
    # one view per raw table, with its time column at microsecond precision whatever the file holds
    where = f"WHERE customer_id % {partition[1]} = {partition[0]}" if partition else ""
    for name, spec in RAW_TABLES.items():
        con.execute(
            f"CREATE TEMP VIEW raw_{name} AS SELECT * REPLACE "
            f"(CAST({spec.time_column} AS TIMESTAMPTZ) AS {spec.time_column}) "
            f"FROM read_parquet('{raw_dir / spec.file}') {where}"
        )
    paths = {name: f"raw_{name}" for name in RAW_TABLES}
    n_weeks = (as_of - first_event.astimezone(timezone.utc)).days // 7 + 1
    origin = as_of - timedelta(days=7 * n_weeks)
    # bucket b holds raw rows in [origin + 7b, origin + 7b + 7); snapshot b+1 is stamped at its end.
    # Integer microseconds, not TIMESTAMPTZ arithmetic: time-zone aware subtraction and casts to
    # DATE cost several times the rest of the aggregation on hundreds of millions of events.
    origin_us = int(origin.timestamp()) * 1_000_000
    bucket = "CAST((epoch_us({col}) - {origin_us}) // {week_us} AS INTEGER)"
    ev_b, tx_b, su_b, ca_b = (
        bucket.format(col=col, origin_us=origin_us, week_us=_WEEK_US)
        for col in ("event_time", "transaction_time", "signup_at", "cancelled_at")
    )
    # the UTC day of an event, as an integer (origin is a UTC midnight, so whole days fit in weeks)
    ev_day = f"(epoch_us(event_time) // {_DAY_US})"

    con.execute(
        f"""
        CREATE TABLE weekly_events AS
        WITH days AS (
            -- active days counted once however many activity rows a day has
            SELECT customer_id, CAST((day - {origin_us // _DAY_US}) // 7 AS INTEGER) AS b, count(*) AS active_days
            FROM (
                SELECT DISTINCT customer_id, {ev_day} AS day FROM {paths['events']}
                WHERE event_type = 'activity' AND event_time < TIMESTAMPTZ '{as_of.isoformat()}'
            )
            GROUP BY ALL
        ),
        other AS (
        SELECT customer_id, {ev_b} AS b,
            sum(value) FILTER (WHERE event_type = 'activity') AS sessions,
            max(event_time) FILTER (WHERE event_type = 'activity') AS last_activity,
            count(*) FILTER (WHERE event_type = 'support_ticket') AS tickets,
            count(*) FILTER (WHERE event_type = 'complaint') AS complaints,
            count(*) FILTER (WHERE event_type = 'payment_failed') AS payment_failures,
            count(*) FILTER (WHERE event_type = 'downgrade') AS downgrades,
            arg_max(value, event_time) FILTER (WHERE event_type = 'downgrade') AS downgrade_price,
            arg_max(value, event_time) FILTER (WHERE event_type = 'nps') AS nps
        FROM {paths['events']}
        WHERE event_time < TIMESTAMPTZ '{as_of.isoformat()}'
        GROUP BY ALL
        )
        SELECT * FROM other LEFT JOIN days USING (customer_id, b)
        """
    )
    con.execute(
        f"""
        CREATE TABLE weekly_tx AS
        SELECT customer_id, {tx_b} AS b,
            sum(amount) AS revenue,
            sum(amount) FILTER (WHERE kind = 'addon') AS addon_revenue,
            count(*) FILTER (WHERE kind = 'addon') AS addon_purchases
        FROM {paths['transactions']}
        WHERE transaction_time < TIMESTAMPTZ '{as_of.isoformat()}'
        GROUP BY ALL
        """
    )
    # customers and the weeks in which they exist (from their first bucket, or the data start)
    con.execute(
        f"""
        CREATE TABLE lives AS
        SELECT c.customer_id, c.signup_at, c.plan, c.price_tier, c.monthly_price, c.channel,
            x.cancelled_at,
            greatest({su_b}, 0) AS b_first,
            least(coalesce({ca_b}, {n_weeks - 1}), {n_weeks - 1}) AS b_last
        FROM {paths['customers']} c
        LEFT JOIN (
            SELECT customer_id, min(cancelled_at) AS cancelled_at
            FROM {paths['cancellations']} GROUP BY customer_id
        ) x USING (customer_id)
        WHERE c.signup_at < TIMESTAMPTZ '{as_of.isoformat()}'
        """
    )

    def window(expr: str, weeks: int) -> str:
        total = f"sum({expr}) OVER (w ROWS BETWEEN {weeks - 1} PRECEDING AND CURRENT ROW)"
        # money sums to a micro-unit: the last bits of a float sum depend on the order DuckDB adds
        # in, which depends on how the customers are partitioned; rounded, any order gives the same value
        return f"round({total}, 6)" if "revenue" in expr else total

    sums = []
    for suffix, weeks in _WINDOWS.items():
        if weeks <= 13:
            sums += [
                f"{window('coalesce(e.active_days, 0)', weeks)} AS active_days_{suffix}",
                f"{window('coalesce(e.sessions, 0)', weeks)} AS sessions_{suffix}",
            ]
        if weeks in (4, 13):
            sums += [
                f"{window('coalesce(e.tickets, 0)', weeks)} AS tickets_{suffix}",
                f"{window('coalesce(e.complaints, 0)', weeks)} AS complaints_{suffix}",
                f"{window('coalesce(e.payment_failures, 0)', weeks)} AS payment_failures_{suffix}",
                f"{window('coalesce(t.revenue, 0)', weeks)} AS revenue_{suffix}",
            ]
        if weeks == 13:
            sums += [
                f"{window('coalesce(e.downgrades, 0)', weeks)} AS downgrades_{suffix}",
                f"{window('coalesce(t.addon_revenue, 0)', weeks)} AS addon_revenue_{suffix}",
                f"{window('coalesce(t.addon_purchases, 0)', weeks)} AS addon_purchases_{suffix}",
            ]
        if weeks == 52:
            sums.append(f"{window('coalesce(t.revenue, 0)', weeks)} AS revenue_{suffix}")

    if partitions is None:
        partitions = build_partitions(con.execute("SELECT count(*) FROM lives").fetchone()[0], partition_customers)
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1; got {partitions}")
    parts = scratch / "parts"
    parts.mkdir()
    for k in range(partitions):
        _window_step(con, sums, origin, parts / f"part-{k:04d}.parquet", k, partitions)
    return _write_tables(con, raw_dir, out_dir, parts, as_of, partition, partitions)


def _window_step(con, sums: list[str], origin: datetime, part: Path, k: int, n: int) -> None:
    """The snapshots of customer partition k of n (`customer_id % n = k`), written to `part`."""
    mine = f"customer_id % {n} = {k}"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW snapshots AS
        WITH grid AS (
            SELECT l.*, unnest(range(l.b_first, l.b_last + 1)) AS b FROM lives l WHERE {mine}
        ),
        rolled AS (
            SELECT g.customer_id, g.b, g.signup_at, g.cancelled_at, g.plan, g.price_tier, g.channel,
                g.monthly_price,
                {", ".join(sums)},
                max(e.last_activity) OVER (w ROWS UNBOUNDED PRECEDING) AS last_activity,
                last_value(e.nps IGNORE NULLS) OVER (w ROWS UNBOUNDED PRECEDING) AS last_nps,
                last_value(e.downgrade_price IGNORE NULLS) OVER (w ROWS UNBOUNDED PRECEDING) AS downgraded_price
            FROM grid g
            LEFT JOIN (SELECT * FROM weekly_events WHERE {mine}) e USING (customer_id, b)
            LEFT JOIN (SELECT * FROM weekly_tx WHERE {mine}) t USING (customer_id, b)
            WINDOW w AS (PARTITION BY g.customer_id ORDER BY g.b)
        )
        SELECT *, TIMESTAMPTZ '{origin.isoformat()}' + to_days(CAST(7 * (b + 1) AS INTEGER)) AS event_timestamp
        FROM rolled
        """
    )
    # keep the snapshots at which the customer is active: signed up before, not yet cancelled
    con.execute(
        f"""
        COPY (
        SELECT customer_id, event_timestamp,
            -- behavioral
            CAST(active_days_7d AS BIGINT) AS active_days_7d,
            CAST(active_days_28d AS BIGINT) AS active_days_28d,
            CAST(active_days_91d AS BIGINT) AS active_days_91d,
            CAST(sessions_7d AS DOUBLE) AS sessions_7d,
            CAST(sessions_28d AS DOUBLE) AS sessions_28d,
            CAST(sessions_91d AS DOUBLE) AS sessions_91d,
            (active_days_7d + 1.0) / (active_days_28d / 4.0 + 1.0) AS activity_trend_7d_28d,
            (active_days_28d + 1.0) / (active_days_91d * 4.0 / 13.0 + 1.0) AS activity_trend_28d_91d,
            CAST(date_diff('day', coalesce(last_activity, signup_at), event_timestamp) AS BIGINT)
                AS days_since_last_activity,
            -- lifecycle
            CAST(date_diff('day', signup_at, event_timestamp) AS BIGINT) AS tenure_days,
            plan, price_tier, channel,
            CAST(coalesce(downgraded_price, monthly_price) AS DOUBLE) AS monthly_price,
            CAST(CASE WHEN plan = 'annual'
                THEN 365 - date_diff('day', signup_at, event_timestamp) % 365
                ELSE 30 - date_diff('day', signup_at, event_timestamp) % 30 END AS BIGINT) AS days_to_renewal,
            CAST(payment_failures_28d AS BIGINT) AS payment_failures_28d,
            CAST(payment_failures_91d AS BIGINT) AS payment_failures_91d,
            CAST(downgrades_91d AS BIGINT) AS downgrades_91d,
            -- experience
            CAST(tickets_28d AS BIGINT) AS tickets_28d,
            CAST(tickets_91d AS BIGINT) AS tickets_91d,
            CAST(complaints_28d AS BIGINT) AS complaints_28d,
            CAST(complaints_91d AS BIGINT) AS complaints_91d,
            CAST(last_nps AS DOUBLE) AS last_nps,
            -- value
            CAST(revenue_28d AS DOUBLE) AS revenue_28d,
            CAST(revenue_91d AS DOUBLE) AS revenue_91d,
            CAST(revenue_364d AS DOUBLE) AS revenue_364d,
            CAST(addon_revenue_91d AS DOUBLE) AS addon_revenue_91d,
            CAST(addon_purchases_91d AS BIGINT) AS addon_purchases_91d
        FROM snapshots
        WHERE signup_at < event_timestamp AND (cancelled_at IS NULL OR cancelled_at >= event_timestamp)
        ) TO '{part}' (FORMAT parquet)
        """
    )
    con.execute("DROP VIEW snapshots")


def _write_tables(
    con, raw_dir: Path, out_dir: Path, parts: Path, as_of: datetime, partition: tuple[int, int] | None, partitions: int
) -> FeatureBuildResult:
    """Concatenate the parts into one table per view, in (event_timestamp, customer_id) order."""
    features = f"read_parquet('{parts}/part-*.parquet')"
    rows = con.execute(f"SELECT count(*) FROM {features}").fetchone()[0]
    if rows == 0 and partition is None:  # one partition of many may well be empty
        raise DataError(f"{raw_dir}: no customer is active at any weekly snapshot; nothing to build features from")
    tables = {}
    for view, columns in VIEW_COLUMNS.items():
        path = out_dir / f"{view}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        con.execute(
            f"COPY (SELECT customer_id, event_timestamp, {', '.join(columns)} FROM {features} "
            f"ORDER BY event_timestamp, customer_id) TO '{tmp}' (FORMAT parquet)"
        )
        tmp.replace(path)  # a failed build leaves the previous table in place
        tables[view] = path
    snapshots = con.execute(f"SELECT count(DISTINCT event_timestamp), min(event_timestamp) FROM {features}").fetchone()
    con.close()
    return FeatureBuildResult(tables, rows, snapshots[0], snapshots[1], as_of, partitions)
