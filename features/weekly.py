"""Weekly feature table of one ingested log source, at the simulator's scale.

The log views of the generic builder (`features/build.py`): one row per
customer per weekly stamp, stamped at UTC midnight every 7 days back from the end of the
data; a row stamped `s` summarizes only log rows strictly before `s` and exists while the
customer had a row within `churn.active_days` before `s`. Features, prefixed with the source
name unless they are a declared signal:
- per window of 7, 28, 91 and 364 days: rows (`count`), distinct days with a row (`days`) and
  sums of the amount/values columns; for 28 and 91 days, rows per value of the `kind` column
  (its 8 most frequent values);
- trends (active days in 28 d vs 91 d, 91 d vs 364 d), recency, tenure (days since the first
  row), lifetime frequency (active days) and row count, mean gap between active days and, for
  transactions, the amount to date and the amount per active day (RFM monetary);
- the declared signals (`Signals` in `features/contract.py`): sessions_ and active_days_
  7/28/91d, activity_trend_7d_28d, days_since_last_active, tickets_/complaints_/
  payment_failures_ 28/91d, plan_changes_91d, last_survey_score, days_since_survey.

How it scales: log rows are reduced once to one row per customer
per week (integer microseconds from the first week's start, no time-zone arithmetic on the
raw rows), into a scratch DuckDB database on disk under `memory_limit` (DuckDB spills to
`temp_directory`). Customers are then numbered (in the order of their text ids), and the
windows are sums over the preceding weekly rows of a dense weekly grid, computed per customer
partition (numbers equal to k modulo n) one after another, or in Dask mode as one Dask task
each (reading the scratch database by path), each written as a Parquet part; the table is the
parts sorted by (event_timestamp, customer_id), the same for any n.

Exact values at weekly granularity: a day lies in one week, so distinct days are counted per
week (the bits of a 7-bit weekday mask) and summed; the latest row, the latest activity and
the latest survey answer are carried per week as day numbers and taken as the running
maximum up to the stamp.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from churn.errors import DataError
from features.contract import ColumnType, Contract

# Window lengths in weeks; names say days, as the simulator's features do.
WINDOWS = {7: 1, 28: 4, 91: 13, 364: 52}
# Windows that also get counts per value of the `kind` column.
KIND_WINDOWS = (28, 91)
TOP_KINDS = 8
# Customers per partition of the window step (setting `build.partition_customers`): about 2 GB a step.
PARTITION_CUSTOMERS = 125_000
_DAY_US = 86_400 * 1_000_000

# Windows of the declared signals' features: the engine's own names on every data set.
_SIGNAL_WINDOWS = {
    "activity": (7, 28, 91),
    "support_tickets": (28, 91),
    "complaints": (28, 91),
    "failed_payments": (28, 91),
    "plan_changes": (91,),
}
_SIGNAL_NAMES = {
    "support_tickets": "tickets",
    "complaints": "complaints",
    "failed_payments": "payment_failures",
    "plan_changes": "plan_changes",
}
_SIGNAL_DESCRIPTIONS = {
    "sessions": "Activity rows (sessions, logins, usage) in the {w} days before the snapshot.",
    "active_days": "Days with activity in the {w} days before the snapshot.",
    "tickets": "Support tickets in the {w} days before the snapshot.",
    "complaints": "Complaints in the {w} days before the snapshot.",
    "payment_failures": "Failed payments in the {w} days before the snapshot.",
    "plan_changes": "Plan changes (up- or downgrades) in the {w} days before the snapshot.",
    "activity_trend_7d_28d": "(active days in 7 d + 1) / (active days in 28 d / 4 + 1): below 1 means activity is falling.",
    "days_since_last_active": "Days from the latest activity to the snapshot; null if none yet.",
    "last_survey_score": "Score of the latest survey answer (NPS, CSAT, CES) before the snapshot; null if none.",
    "days_since_survey": "Days from the latest survey answer to the snapshot; null if none.",
}
_FIXED_DESCRIPTIONS = {
    "count": "Rows of {src} in the {w} days before the snapshot.",
    "days": "Distinct days with a row of {src} in the {w} days before the snapshot.",
    "trend_28d_91d": "(active days in 28 d + 1) / (active days in 91 d * 4/13 + 1): below 1 means activity is falling.",
    "trend_91d_364d": "(active days in 91 d + 1) / (active days in 364 d / 4 + 1): below 1 means falling.",
    "recency_days": "Days from the latest row to the snapshot (RFM recency).",
    "tenure_days": "Days from the first row to the snapshot.",
    "frequency": "Distinct days with a row before the snapshot (RFM frequency).",
    "count_all": "Rows before the snapshot.",
    "mean_gap_days": "Mean days between consecutive active days; null with fewer than two.",
    "monetary": "Amount per active day before the snapshot (RFM monetary).",
}
_KINDS = {"BIGINT": "int", "INTEGER": "int", "DOUBLE": "float", "VARCHAR": "string"}


@dataclass(frozen=True)
class WeeklyTable:
    """What `weekly_log_features` wrote: the table, its rows, and its (column, kind, description) fields."""

    path: Path
    rows: int
    fields: list[tuple[str, str, str]]
    partitions: int


def slug(text: str) -> str:
    """A value or column name as a lower-case identifier part."""
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or "blank"


def _literal(value) -> str:
    """A SQL string literal of `value`."""
    return "'" + str(value).replace("'", "''") + "'"


def _in(column: str, values: list[str]) -> str:
    return f'"{column}" IN ({", ".join(_literal(v) for v in values)})'


def describe(column: str, name: str, kind_column: str | None = None, kinds: list[str] | tuple[str, ...] = ()) -> str:
    """The description of a feature column of log source `name` (for views.json and Feast).

    `kind_column` and `kinds`: the source's kind column and the values that have counts.
    """
    for kind in kinds:
        match = re.fullmatch(rf"{name}_{slug(kind_column)}_{slug(kind)}_(\d+)d", column)
        if match:
            return f"Rows of {name} with {kind_column} = {kind!r} in the {match[1]} days before the snapshot."
    if column in _SIGNAL_DESCRIPTIONS:
        return _SIGNAL_DESCRIPTIONS[column]
    match = re.fullmatch(r"(sessions|active_days|tickets|complaints|payment_failures|plan_changes)_(\d+)d", column)
    if match:
        return _SIGNAL_DESCRIPTIONS[match[1]].format(w=match[2])
    suffix = column[len(name) + 1 :]
    match = re.fullmatch(r"(count|days)_(\d+)d", suffix)
    if match:
        return _FIXED_DESCRIPTIONS[match[1]].format(src=name, w=match[2])
    if suffix in _FIXED_DESCRIPTIONS:
        return _FIXED_DESCRIPTIONS[suffix]
    match = re.fullmatch(r"(.+)_(\d+)d", suffix)
    if match:
        return f"Sum of {match[1]} over rows of {name} in the {match[2]} days before the snapshot."
    if suffix.endswith("_all"):
        return f"Sum of {suffix[:-4]} over rows of {name} before the snapshot."
    return f"{suffix} of {name} before the snapshot."


def weekly_log_features(
    path: Path,
    name: str,
    contract: Contract,
    end: datetime,
    types: dict[str, str],
    out_path: Path,
    memory_limit: str = "4GB",
    partitions: int | None = None,
    partition_customers: int = PARTITION_CUSTOMERS,
    lifecycle: tuple[str, ...] = (),
    signups: Path | None = None,
    client=None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> WeeklyTable:
    """Write the weekly feature table of log source `name` to `out_path` (Parquet).

    Parameters
    ----------
    path : the ingested Parquet of the source (`features/ingest.py` layout), with columns
        - customer_id: text
        - event_time: UTC timestamp
        - the source's `kind`, `amount`, `values` and `signals.survey_score` columns
    name : the source's name in `contract` (prefix of its features).
    end : the end of the data (a UTC midnight, the manifest's `data_end`): the latest stamp.
    types : the ingested column types of the source (the manifest's `types[name]`).
    memory_limit : DuckDB's memory limit; beyond it DuckDB spills to a scratch folder.
    partitions : customer partitions of the window step, run one after another (default: at
        most `partition_customers` customers each). The table is the same whatever the number.
    lifecycle : the data set's generic lifecycle inputs this source carries (`tenure_days`,
        `days_since_last_active`: `features.build._lifecycle_columns`).
    signups : the ingested customers table (customer_id, signup_at): `tenure_days` counts from
        each customer's signup instead of their first row.
    client : a `distributed.Client` (Dask mode, `churn.cluster.dask_client`): the partitions'
        window steps run as Dask tasks, each opening the scratch database read-only by path,
        so on a real cluster `out_path`'s folder must be on storage every worker sees.
    progress : called `progress(done, total)` as the partitions' window steps finish (the
        weekly rows before them and the sorted table after them are one query each).

    The table is sorted by (event_timestamp, customer_id); a scratch folder next to
    `out_path` holds the DuckDB database, its spill files and the parts while it runs.
    """
    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be at least 1; got {partitions}")
    if partition_customers < 1:
        raise ValueError(f"partition_customers must be at least 1; got {partition_customers}")
    path, out_path = Path(path), Path(out_path).resolve()  # Dask tasks open the scratch database by path
    scratch = out_path.parent / f"_{out_path.stem}_build"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    # a database file, not memory: the weekly rows of a million customers stay on disk
    database, parts = scratch / "weekly.duckdb", scratch / "parts"
    try:
        con = _connect(database, memory_limit, scratch / "spill")
        try:
            plan, partitions = _prepare(con, path, name, contract, end, types, partitions, partition_customers, lifecycle, signups)
            parts.mkdir()
            if client is None:
                for k in range(partitions):
                    _window_step(con, plan, parts / f"part-{k:04d}.parquet", k, partitions)
                    progress(k + 1, partitions)
                return _table(con, path, plan, parts, out_path, partitions)
        finally:
            con.close()
        # Dask mode: a DuckDB file open for writing is locked, so the tasks open it once this process has closed it
        from distributed import as_completed

        futures = [
            client.submit(_window_task, str(database), plan, str(parts), k, partitions, memory_limit, pure=False)
            for k in range(partitions)
        ]
        for done, _ in enumerate(as_completed(futures), start=1):
            progress(done, partitions)
        client.gather(futures)
        con = _connect(database, memory_limit, scratch / "spill")
        try:
            return _table(con, path, plan, parts, out_path, partitions)
        finally:
            con.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _connect(database: Path, memory_limit: str, spill: Path, read_only: bool = False):
    """A DuckDB connection to the scratch database, within `memory_limit`, spilling to `spill`."""
    con = duckdb.connect(str(database), read_only=read_only)
    con.execute(f"SET memory_limit='{memory_limit}'")
    con.execute(f"SET temp_directory='{spill}'")
    con.execute("SET preserve_insertion_order=false")
    con.execute("SET TimeZone='UTC'")
    return con


def _window_task(database: str, plan: _Plan, parts: str, k: int, n: int, memory_limit: str) -> None:
    """Dask task body: the window step of partition k of n, reading the scratch database by path."""
    con = _connect(Path(database), memory_limit, Path(parts).parent / f"spill-{k:04d}", read_only=True)
    try:
        _window_step(con, plan, Path(parts) / f"part-{k:04d}.parquet", k, n)
    finally:
        con.close()


@dataclass(frozen=True)
class _Plan:
    """The columns of one log source's table, and the weekly grid it is computed on."""

    name: str
    sums: dict[str, str]  # feature slug -> numeric column
    kind_column: str | None
    kinds: list[str]  # its most frequent values
    signals: dict[str, list[str]]
    amount: str | None  # slug of the amount column
    origin: datetime  # start of week 0 (a UTC midnight, at or before the first row)
    weeks: int  # weeks 0 .. weeks-1; the stamp after week b is origin + 7 (b + 1) days
    first_stamp_week: int  # the earliest week whose stamp gets rows
    active_days: int
    sessions: str | None = None  # numeric column: the sessions an activity row stands for
    lifecycle: tuple[str, ...] = ()  # generic lifecycle inputs carried here
    signups: bool = False  # tenure_days from the signup (table `signups`), not the first row


def _plan(con, path: Path, name: str, contract: Contract, end: datetime, types: dict[str, str]) -> _Plan:
    """Read what the columns depend on: the top kinds and the span of the data."""
    source = contract.sources[name]
    signals = source.signals.declared()
    if "survey" in signals:
        score = source.signals.survey_score
        if types.get(score) not in (ColumnType.INT.value, ColumnType.FLOAT.value):
            raise DataError(
                f"{path}: signals.survey_score {score!r} must be a numeric column (declare it int or float); "
                f"it was ingested as {types.get(score)}"
            )
    sessions = source.signals.activity_sessions
    if sessions and types.get(sessions) not in (ColumnType.INT.value, ColumnType.FLOAT.value):
        raise DataError(
            f"{path}: signals.activity_sessions {sessions!r} must be a numeric column (declare it int or float); "
            f"it was ingested as {types.get(sessions)}"
        )
    kinds = []
    if source.kind:
        kinds = [
            row[0]
            for row in con.execute(
                f'SELECT "{source.kind}" FROM read_parquet(\'{path}\') WHERE "{source.kind}" IS NOT NULL '
                f"GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT {TOP_KINDS}"
            ).fetchall()
        ]
    first = con.execute(f"SELECT min(event_time) FROM read_parquet('{path}')").fetchone()[0]
    if first is None:
        raise DataError(f"{path}: the log has no rows; nothing to build features from")
    # the stamps of the generic builder: end - 7k for k < max(1, days // 7)
    weeks = (end - first).days // 7 + 1
    stamps = max(1, (end - first).days // 7)
    return _Plan(
        name=name,
        sums={slug(c): c for c in source.numeric_columns()},
        kind_column=source.kind,
        kinds=kinds,
        signals=signals,
        amount=slug(source.amount) if source.amount else None,
        origin=end - timedelta(days=7 * weeks),
        weeks=weeks,
        first_stamp_week=weeks - stamps,
        active_days=contract.churn.active_days,
        sessions=source.signals.activity_sessions if "activity" in signals else None,
    )


def _prepare(
    con, path: Path, name: str, contract: Contract, end: datetime, types: dict[str, str], partitions: int | None,
    partition_customers: int, lifecycle: tuple[str, ...], signups: Path | None,
) -> tuple[_Plan, int]:
    """The plan and the weekly rows (in the scratch database), and how many customer partitions to window."""
    plan = _plan(con, path, name, contract, end, types)
    plan = replace(plan, lifecycle=tuple(lifecycle), signups=signups is not None and "tenure_days" in lifecycle)
    _weekly_rows(con, path, plan, contract.sources[name], end)
    if plan.signups:
        origin_us = int(plan.origin.timestamp()) * 1_000_000
        # signup as a day number of the grid (floor: a signup at 10:00 is on its day)
        con.execute(
            f"CREATE TABLE signups AS SELECT c.cid, CAST((epoch_us(s.signup_at) - {origin_us}) // {_DAY_US} AS INTEGER) AS signup_day "
            f"FROM read_parquet('{signups}') s JOIN customers c USING (customer_id)"
        )
    if partitions is None:
        customers = con.execute("SELECT count(*) FROM customers").fetchone()[0]
        partitions = max(1, -(-customers // partition_customers))
    return plan, partitions


def _table(con, path: Path, plan: _Plan, parts: Path, out_path: Path, partitions: int) -> WeeklyTable:
    """The partitions' parts as one table sorted by (event_timestamp, customer_id), at `out_path`."""
    features = f"read_parquet('{parts}/part-*.parquet')"
    rows = con.execute(f"SELECT count(*) FROM {features}").fetchone()[0]
    if rows == 0:
        raise DataError(f"{path}: no customer is active at any weekly snapshot; nothing to build features from")
    tmp = out_path.with_suffix(".parquet.tmp")
    # customer numbers follow the order of the text ids: sorting on them is sorting on the ids, and cheaper
    con.execute(f"COPY (SELECT * EXCLUDE (cid) FROM {features} ORDER BY event_timestamp, cid) TO '{tmp}' (FORMAT parquet)")
    tmp.replace(out_path)  # a failed build leaves the previous table in place
    described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{out_path}')").fetchall()
    fields = [
        (column, _KINDS[kind], describe(column, plan.name, plan.kind_column, plan.kinds)) for column, kind, *_ in described[2:]
    ]
    return WeeklyTable(out_path, rows, fields, partitions)


def _weekly_rows(con, path: Path, plan: _Plan, source, end: datetime) -> None:
    """One row per customer per week with a log row: table `weekly` in the scratch database.

    One pass over the log, grouped by customer and week. Distinct days stay exact without a
    daily step: each row sets the bit of its weekday in a 7-bit mask, and the days of the
    week are the bits set. Day numbers count from `plan.origin` (integer microseconds, no
    time-zone arithmetic).
    """
    origin_us = int(plan.origin.timestamp()) * 1_000_000
    end_us = int(end.timestamp()) * 1_000_000
    bit = "(CAST(1 AS INTEGER) << (day % 7))"
    weekly = [
        "count(*) AS n",
        f"bit_count(bit_or({bit})) AS days",
        "min(day) AS first_day",
        "max(day) AS last_day",
    ]
    weekly += [f'sum("{col}") AS "s_{key}"' for key, col in plan.sums.items()]
    weekly += [f'count(*) FILTER (WHERE "{source.kind}" = {_literal(k)}) AS "k_{slug(k)}"' for k in plan.kinds]
    weekly += [
        f"count(*) FILTER (WHERE {_in(source.kind, kinds)}) AS g_{signal}"
        for signal, kinds in plan.signals.items()
        if signal != "survey"
    ]
    if "activity" in plan.signals:
        active = _in(source.kind, plan.signals["activity"])
        weekly += [
            f"bit_count(bit_or(CASE WHEN {active} THEN {bit} ELSE 0 END)) AS active_days",
            f"max(day) FILTER (WHERE {active}) AS last_active_day",
        ]
        if plan.sessions:  # an activity row may stand for several sessions (a daily usage summary)
            weekly.append(f'sum(coalesce("{plan.sessions}", 1)) FILTER (WHERE {active}) AS g_sessions')
    if "survey" in plan.signals:
        score, answered = source.signals.survey_score, _in(source.kind, plan.signals["survey"])
        weekly += [
            f"max(day) FILTER (WHERE {answered}) AS last_survey_day",
            f'arg_max("{score}", event_time) FILTER (WHERE {answered} AND "{score}" IS NOT NULL) AS survey_score',
        ]
    con.execute(
        f"""
        CREATE TABLE weekly_by_id AS
        SELECT customer_id, day // 7 AS b, {', '.join(weekly)}
        FROM (
            SELECT *, CAST((epoch_us(event_time) - {origin_us}) // {_DAY_US} AS INTEGER) AS day
            FROM read_parquet('{path}')
            WHERE epoch_us(event_time) < {end_us}
        )
        GROUP BY ALL
        """
    )
    # customers numbered in the order of their ids: the window step sorts and partitions on
    # integers (about twice as fast as on text), and the text id comes back at the end
    con.execute(
        "CREATE TABLE customers AS SELECT customer_id, CAST(row_number() OVER (ORDER BY customer_id) - 1 AS INTEGER) AS cid "
        "FROM (SELECT DISTINCT customer_id FROM weekly_by_id)"
    )
    con.execute(
        "CREATE TABLE weekly AS SELECT c.cid, w.* EXCLUDE (customer_id) FROM weekly_by_id w JOIN customers c USING (customer_id)"
    )
    con.execute("DROP TABLE weekly_by_id")


def _window_columns(plan: _Plan) -> tuple[list[str], list[str]]:
    """Window sums over the weekly grid: running totals (first step) and the sums (second step).

    A count over the last k weeks is the running total minus the total k weeks earlier
    (exact on integers, and about twice as fast in DuckDB as a k-row frame per window).
    Money keeps k-row frames: a difference of float totals would not be the plain sum.
    The second list is in the column order of the table.
    """
    totals: dict[str, str] = {}
    first, second = [], []

    def count(quantity: str, weeks: int, alias: str, cast: str = "BIGINT") -> None:
        totals.setdefault(quantity, f'sum(coalesce("{quantity}", 0)) OVER (w ROWS UNBOUNDED PRECEDING) AS "c_{quantity}"')
        total = f'"c_{quantity}"'
        second.append(f'CAST({total} - coalesce(lag({total}, {weeks}) OVER w, 0) AS {cast}) AS "{alias}"')

    def money(quantity: str, weeks: int, alias: str) -> None:
        # a float sum's last bits depend on the order DuckDB adds in (threads, partitions);
        # rounded to a micro-unit, any order gives the same value
        frame = f"w ROWS BETWEEN {weeks - 1} PRECEDING AND CURRENT ROW"
        first.append(f'CAST(round(sum(coalesce("{quantity}", 0)) OVER ({frame}), 6) AS DOUBLE) AS "{alias}"')
        second.append(f'"{alias}"')

    name = plan.name
    for days, weeks in WINDOWS.items():
        count("n", weeks, f"{name}_count_{days}d")
        count("days", weeks, f"{name}_days_{days}d")
        for key in plan.sums:
            money(f"s_{key}", weeks, f"{name}_{key}_{days}d")
        if days in KIND_WINDOWS:
            for k in plan.kinds:
                count(f"k_{slug(k)}", weeks, f"{name}_{slug(plan.kind_column)}_{slug(k)}_{days}d")
    for signal, windows in _SIGNAL_WINDOWS.items():
        if signal not in plan.signals:
            continue
        for days in windows:
            if signal == "activity":
                if plan.sessions:  # each activity row's session count
                    money("g_sessions", WINDOWS[days], f"sessions_{days}d")
                else:
                    count("g_activity", WINDOWS[days], f"sessions_{days}d", cast="DOUBLE")
                count("active_days", WINDOWS[days], f"active_days_{days}d")
            else:
                count(f"g_{signal}", WINDOWS[days], f"{_SIGNAL_NAMES[signal]}_{days}d")
    return list(totals.values()) + first, second


def _window_step(con, plan: _Plan, part: Path, k: int, n: int) -> None:
    """The snapshots of customer partition k of n (customer numbers `cid % n = k`), written to `part`."""
    mine = f"cid % {n} = {k}"
    name, active = plan.name, plan.active_days
    running = "OVER (w ROWS UNBOUNDED PRECEDING)"
    carried = ["first_day", "last_day"]
    if plan.amount:
        carried.append("amount_all")
    if "activity" in plan.signals:
        carried.append("last_active_day")
    if "survey" in plan.signals:
        carried += ["last_survey_day", "survey_score"]
    running_columns = {
        "first_day": f"min(first_day) {running}",
        "last_day": f"max(last_day) {running}",
        "amount_all": f'round(sum(coalesce("s_{plan.amount}", 0)) {running}, 6)',
        "last_active_day": f"max(last_active_day) {running}",
        "last_survey_day": f"max(last_survey_day) {running}",
        "survey_score": f"last_value(survey_score IGNORE NULLS) {running}",
    }
    final = [
        f"CAST(({name}_days_28d + 1.0) / ({name}_days_91d * 4.0 / 13.0 + 1.0) AS DOUBLE) AS {name}_trend_28d_91d",
        f"CAST(({name}_days_91d + 1.0) / ({name}_days_364d / 4.0 + 1.0) AS DOUBLE) AS {name}_trend_91d_364d",
        f"CAST(stamp_day - last_day AS BIGINT) AS {name}_recency_days",
        f"CAST(stamp_day - first_day AS BIGINT) AS {name}_tenure_days",
        f"CAST(days_all AS BIGINT) AS {name}_frequency",
        f"CAST(n_all AS BIGINT) AS {name}_count_all",
        f"CAST(CASE WHEN days_all > 1 THEN (last_day - first_day) / (days_all - 1.0) END AS DOUBLE) AS {name}_mean_gap_days",
    ]
    if plan.amount:
        final += [
            f'CAST(amount_all AS DOUBLE) AS "{name}_{plan.amount}_all"',
            f"CAST(amount_all / days_all AS DOUBLE) AS {name}_monetary",
        ]
    if "activity" in plan.signals:
        final += [
            "CAST((active_days_7d + 1.0) / (active_days_28d / 4.0 + 1.0) AS DOUBLE) AS activity_trend_7d_28d",
            "CAST(stamp_day - last_active_day AS BIGINT) AS days_since_last_active",
        ]
    if "survey" in plan.signals:
        final += [
            "CAST(survey_score AS DOUBLE) AS last_survey_score",
            "CAST(stamp_day - last_survey_day AS BIGINT) AS days_since_survey",
        ]
    if "tenure_days" in plan.lifecycle:
        final.append(f"CAST(stamp_day - {'signup_day' if plan.signups else 'first_day'} AS BIGINT) AS tenure_days")
    if "days_since_last_active" in plan.lifecycle:  # no activity signal: any row counts as activity
        final.append("CAST(stamp_day - last_day AS BIGINT) AS days_since_last_active")
    signup_join = "LEFT JOIN signups USING (cid)" if plan.signups else ""
    first, second = _window_columns(plan)
    window_names = [c.rsplit(" AS ", 1)[-1] for c in second]
    con.execute(
        f"""
        COPY (
        WITH mine AS (SELECT * FROM weekly WHERE {mine}),
        lives AS (
            -- a customer's weeks: from the first with a row until the last that may still be active
            SELECT cid, min(b) AS b_first, least({plan.weeks - 1}, (max(last_day) + {active}) // 7) AS b_last
            FROM mine GROUP BY cid
        ),
        grid AS (SELECT cid, unnest(range(b_first, b_last + 1)) AS b FROM lives),
        totals AS (
            SELECT cid, b, {', '.join(first + [f"{running_columns[c]} AS {c}" for c in carried])}
            FROM grid LEFT JOIN mine USING (cid, b)
            WINDOW w AS (PARTITION BY cid ORDER BY b)
        ),
        windowed AS (
            SELECT cid, 7 * (b + 1) AS stamp_day, c_n AS n_all, c_days AS days_all, {', '.join(second + carried)}
            FROM totals
            WINDOW w AS (PARTITION BY cid ORDER BY b)
        )
        SELECT cid, c.customer_id,
            TIMESTAMPTZ '{plan.origin.isoformat()}' + to_days(CAST(stamp_day AS INTEGER)) AS event_timestamp,
            {', '.join(window_names + final)}
        FROM windowed JOIN (SELECT * FROM customers WHERE {mine}) c USING (cid) {signup_join}
        -- stamps of the generic builder, while the customer had a row within `active_days`
        WHERE stamp_day >= {7 * (plan.first_stamp_week + 1)} AND stamp_day - last_day <= {active}
        ) TO '{part}' (FORMAT parquet)
        """
    )
