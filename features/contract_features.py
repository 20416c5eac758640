"""Generic feature tables from ingested data, with no per-data-set code.

- The snapshot source becomes one view: its attributes as of its `as_of` date (numbers stay
  numbers, categories stay categories; a signup column, or a `tenure` column in its
  `tenure_unit`, becomes `tenure_days`).
- Every events/transactions source becomes one view of weekly snapshots, stamped at UTC
  midnight every 7 days back from the end of the data. A row stamped `s` summarizes only
  log rows strictly before `s` and exists while the customer was active within
  `churn.active_days` before `s`. Signals, prefixed with the source name:
  counts, distinct active days and sums of the amount/value columns over 7/30/90/365 days;
  trends (30 d vs 90 d, 90 d vs 365 d); recency, tenure (days since the first row), lifetime
  frequency (active days) and, for transactions, monetary value per active day (RFM);
  mean gap between active days; counts per value of the `kind` column (its 8 most frequent).
- Lifecycle inputs under the engine's own names (the action catalog's stages read them on any
  data set): `tenure_days`, from the snapshot when it has one, else in the view of the first
  events source (else transactions source) as days since the customer's first row there;
  `days_since_last_active`, from the `activity` signal when declared, else in that same view as
  days since the customer's latest row there. Snapshot-only data have no activity.

`features/definitions.py` turns the schema written next to the tables (`views.json`)
into Feast feature views.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from churn.errors import DataError
from features.contract import LOG_SHAPES, TABLE_SHAPES, ColumnType, Contract, Shape
from features.ingest import read_manifest

WINDOWS = (7, 30, 90, 365)
_DAYS_PER = {"days": 1.0, "weeks": 7.0, "months": 30.44}  # a snapshot `tenure_unit` in days
SNAPSHOT_DAYS = 7
TOP_KINDS = 8
VIEWS_FILE = "views.json"

_DESCRIPTIONS = {
    "count": "Rows of {src} in the {w} days before the snapshot.",
    "days": "Distinct days with a row of {src} in the {w} days before the snapshot.",
    "sum": "Sum of {col} over rows of {src} in the {w} days before the snapshot.",
}


@dataclass(frozen=True)
class ContractFeatures:
    """What `build_contract_features` wrote: per view, its table and its (column, kind, description) list."""

    tables: dict[str, Path]
    schema: dict[str, list[tuple[str, str, str]]]
    rows: dict[str, int]
    data_end: datetime


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or "blank"


def _kind_of(dtype) -> str:
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    return "string"


def _snapshot_table(path: Path, contract: Contract, types: dict[str, str]) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    name, source = contract.snapshot
    frame = pd.read_parquet(path)
    as_of = pd.Timestamp(source.as_of, tz="UTC")
    out = pd.DataFrame({"customer_id": frame["customer_id"].astype(str), "event_timestamp": as_of})
    schema = []
    if "signup_at" in frame:
        out["tenure_days"] = (as_of - pd.to_datetime(frame["signup_at"], utc=True)).dt.days.astype("Int64")
        schema.append(("tenure_days", "int", f"Days from {source.signup} to the snapshot date."))
    elif source.tenure:
        if types.get(source.tenure) not in (ColumnType.INT.value, ColumnType.FLOAT.value):
            raise DataError(
                f"{path}: `tenure` {source.tenure!r} must be a numeric column (declare it int or float); "
                f"it was ingested as {types.get(source.tenure)}"
            )
        out["tenure_days"] = frame[source.tenure].astype("float64") * _DAYS_PER[source.tenure_unit]
        schema.append(("tenure_days", "float", f"{source.tenure} ({source.tenure_unit}) in days as of the snapshot date."))
    return out, schema + _attributes(frame, out, name, types, as_of, "the snapshot date")


def _attributes(
    frame: pd.DataFrame, out: pd.DataFrame, name: str, types: dict[str, str], since, since_text: str
) -> list[tuple[str, str, str]]:
    """Add the attribute columns of a one-row-per-customer table to `out`; returns their schema.

    Numbers stay numbers, categories stay categories; a timestamp column becomes the days from
    it to `since` (a date, or per customer), named `days_since_<column>`.
    """
    schema = []
    for column in frame.columns:
        if column in ("customer_id", "churned", "signup_at"):
            continue
        kind = types.get(column, "categorical")
        feature = f"{_slug(column)}"
        if kind == ColumnType.TIMESTAMP.value:
            out[f"days_since_{feature}"] = (since - pd.to_datetime(frame[column], utc=True)).dt.days.astype("Int64")
            schema.append((f"days_since_{feature}", "int", f"Days from {column} to {since_text}."))
        elif kind == ColumnType.CATEGORICAL.value:
            out[feature] = frame[column].astype("string")
            schema.append((feature, "string", f"{column} (categorical) from source {name}."))
        else:
            out[feature] = frame[column].astype("float64")
            schema.append((feature, "float", f"{column} from source {name}."))
    return schema


def _customers_table(path: Path, contract: Contract, types: dict[str, str]) -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    """The customers source as one row per customer stamped at its signup: known from then on."""
    name, source = contract.customers
    frame = pd.read_parquet(path)
    signup = pd.to_datetime(frame["signup_at"], utc=True)
    out = pd.DataFrame({"customer_id": frame["customer_id"].astype(str), "event_timestamp": signup})
    return out, _attributes(frame, out, name, types, signup, f"{source.signup} (signup)")


def _literal(value) -> str:
    """A SQL string literal of `value`."""
    return "'" + str(value).replace("'", "''") + "'"


# Windows of the declared signals' features: the engine's own (7, 28 and 91 days), so that
# the action catalog and the reason codes read the same names on every data set.
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


def _signal_window_columns(signals: dict[str, list[str]], sessions: bool = False) -> list[str]:
    """Window sums of the declared signals (the `windowed` step); `sessions`: activity rows carry a session count."""
    columns = []
    for signal, windows in _SIGNAL_WINDOWS.items():
        if signal not in signals:
            continue
        for w in windows:
            recent = f"d.d >= st.s - INTERVAL {w} DAY"
            if signal == "activity":
                columns += [
                    f"CAST(coalesce(sum(d.{'g_sessions' if sessions else 'g_activity'}) FILTER (WHERE {recent}), 0) AS DOUBLE) AS sessions_{w}d",
                    f"count(*) FILTER (WHERE {recent} AND d.g_activity > 0) AS active_days_{w}d",
                ]
            else:
                columns.append(
                    f"CAST(coalesce(sum(d.g_{signal}) FILTER (WHERE {recent}), 0) AS BIGINT) AS {_SIGNAL_NAMES[signal]}_{w}d"
                )
    return columns


def _lifecycle_columns(contract: Contract) -> dict[str, str]:
    """Generic lifecycle inputs a log source carries: column -> source name.

    `tenure_days` unless the snapshot gives it, `days_since_last_active` unless an `activity`
    signal gives it; both in the first events source (else transactions source).
    """
    logs = contract.of_shape(Shape.EVENTS) or contract.of_shape(Shape.TRANSACTIONS)
    if not logs:
        return {}
    first = next(iter(logs))
    snapshot = contract.snapshot
    out = {}
    if not (snapshot and (snapshot[1].signup or snapshot[1].tenure)):
        out["tenure_days"] = first  # from the customers source's signup when there is one
    if not any(s.signals.activity for s in contract.sources.values()):
        out["days_since_last_active"] = first
    return out


def _lifecycle_sql(columns: list[str], signups: bool = False) -> list[str]:
    """The generic lifecycle inputs of a log source (from its first and latest rows, or the signup `p.signup_d`)."""
    sql = {
        "tenure_days": "CAST(date_diff('day', p.signup_d, w.s) AS BIGINT) AS tenure_days"
        if signups
        else "CAST(date_diff('day', l.first_d, w.s) AS BIGINT) AS tenure_days",
        "days_since_last_active": "CAST(date_diff('day', l.d, w.s) AS BIGINT) AS days_since_last_active",
    }
    return [sql[c] for c in columns]


def _signal_columns(signals: dict[str, list[str]], lifecycle: list[str] = (), signups: bool = False) -> str:
    """Trend, recency and latest survey score of the declared signals, and generic lifecycle inputs (the final step)."""
    columns = _lifecycle_sql(lifecycle, signups)
    if "activity" in signals:
        columns += [
            "CAST((active_days_7d + 1.0) / (active_days_28d / 4.0 + 1.0) AS DOUBLE) AS activity_trend_7d_28d",
            "CAST(date_diff('day', l.last_active_d, w.s) AS BIGINT) AS days_since_last_active",
        ]
    if "survey" in signals:
        columns += [
            "CAST(l.last_survey_score AS DOUBLE) AS last_survey_score",
            "CAST(date_diff('day', l.last_survey_d, w.s) AS BIGINT) AS days_since_survey",
        ]
    return "".join(f",\n            {c}" for c in columns)


def _log_table(
    con: duckdb.DuckDBPyConnection, path: Path, name: str, contract: Contract, end: datetime, types: dict[str, str],
    signups: Path | None = None,
) -> str:
    """SQL of the weekly snapshot table of one log source (run by the caller).

    `types`: the ingested column types of the source (from the manifest); `signups`: the
    ingested customers source (customer_id, signup_at), whose signup gives `tenure_days`."""
    source = contract.sources[name]
    sums = {(_slug(c)): c for c in source.numeric_columns()}
    kinds = []
    if source.kind:
        kinds = [
            row[0]
            for row in con.execute(
                f'SELECT "{source.kind}" FROM read_parquet(\'{path}\') WHERE "{source.kind}" IS NOT NULL '
                f"GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT {TOP_KINDS}"
            ).fetchall()
        ]
    lookback = max(max(WINDOWS), contract.churn.active_days)
    first = con.execute(f"SELECT min(event_time) FROM read_parquet('{path}')").fetchone()[0]
    n_stamps = max(1, (end - first).days // SNAPSHOT_DAYS)
    daily_cols = ["count(*) AS n"] + [f'sum("{col}") AS "s_{slug}"' for slug, col in sums.items()]
    daily_cols += [
        f"count(*) FILTER (WHERE \"{source.kind}\" = {_literal(k)}) AS \"k_{_slug(k)}\""
        for k in kinds
    ]
    signals = source.signals.declared()
    daily_cols += [
        f"count(*) FILTER (WHERE \"{source.kind}\" IN ({', '.join(_literal(k) for k in values)})) AS g_{signal}"
        for signal, values in signals.items()
    ]
    sessions = source.signals.activity_sessions
    if "activity" in signals and sessions:
        if types.get(sessions) not in (ColumnType.INT.value, ColumnType.FLOAT.value):
            raise DataError(
                f"{path}: signals.activity_sessions {sessions!r} must be a numeric column (declare it int or float); "
                f"it was ingested as {types.get(sessions)}"
            )
        # an activity row may stand for several sessions (a daily usage summary): sum them
        daily_cols.append(
            f'sum(coalesce("{sessions}", 1)) FILTER (WHERE "{source.kind}" IN '
            f"({', '.join(_literal(k) for k in signals['activity'])})) AS g_sessions"
        )
    if "survey" in signals:
        score = source.signals.survey_score
        if types.get(score) not in (ColumnType.INT.value, ColumnType.FLOAT.value):
            raise DataError(
                f"{path}: signals.survey_score {score!r} must be a numeric column (declare it int or float); "
                f"it was ingested as {types.get(score)}"
            )
        daily_cols.append(
            f'arg_max("{score}", event_time) FILTER (WHERE "{source.kind}" IN '
            f"({', '.join(_literal(k) for k in signals['survey'])}) AND \"{score}\" IS NOT NULL) AS g_survey_score"
        )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE daily AS
        SELECT customer_id, CAST(timezone('UTC', event_time) AS DATE) AS d, {', '.join(daily_cols)}
        FROM read_parquet('{path}') WHERE event_time < TIMESTAMPTZ '{end.isoformat()}' GROUP BY ALL"""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE stamps AS
        SELECT CAST(DATE '{end.date().isoformat()}' - INTERVAL (7 * k) DAY AS DATE) AS s
        FROM range({n_stamps}) t(k)"""
    )
    window_cols = []
    for w in WINDOWS:
        recent = f"d.d >= st.s - INTERVAL {w} DAY"
        window_cols += [
            f"coalesce(sum(d.n) FILTER (WHERE {recent}), 0) AS {name}_count_{w}d",
            f"count(*) FILTER (WHERE {recent}) AS {name}_days_{w}d",
        ]
        window_cols += [f'coalesce(sum(d."s_{slug}") FILTER (WHERE {recent}), 0) AS {name}_{slug}_{w}d' for slug in sums]
        if w in (30, 90):
            window_cols += [
                f'coalesce(sum(d."k_{_slug(k)}") FILTER (WHERE {recent}), 0) AS {name}_{_slug(source.kind)}_{_slug(k)}_{w}d'
                for k in kinds
            ]
    window_cols += _signal_window_columns(signals, bool(sessions and 'activity' in signals))
    amount = _slug(source.amount) if source.amount else None
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE windowed AS
        SELECT d.customer_id, st.s, {', '.join(window_cols)}
        FROM stamps st JOIN daily d ON d.d < st.s AND d.d >= st.s - INTERVAL {lookback} DAY
        GROUP BY ALL
        HAVING count(*) FILTER (WHERE d.d >= st.s - INTERVAL {contract.churn.active_days} DAY) > 0"""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE lifetime AS
        SELECT customer_id, d,
            min(d) OVER w AS first_d,
            sum(n) OVER w AS n_all,
            count(*) OVER w AS days_all
            {f', sum("s_{amount}") OVER w AS amount_all' if amount else ''}
            {', max(CASE WHEN g_activity > 0 THEN d END) OVER w AS last_active_d' if 'activity' in signals else ''}
            {', max(CASE WHEN g_survey > 0 THEN d END) OVER w AS last_survey_d, '
             'last_value(g_survey_score IGNORE NULLS) OVER w AS last_survey_score' if 'survey' in signals else ''}
        FROM daily WINDOW w AS (PARTITION BY customer_id ORDER BY d ROWS UNBOUNDED PRECEDING)"""
    )
    rfm = (
        f", l.amount_all AS {name}_{amount}_all, l.amount_all / l.days_all AS {name}_monetary" if amount else ""
    )
    lifecycle = [c for c, n in _lifecycle_columns(contract).items() if n == name]
    signup_join = (
        f"LEFT JOIN (SELECT customer_id, CAST(timezone('UTC', signup_at) AS DATE) AS signup_d "
        f"FROM read_parquet('{signups}')) p ON p.customer_id = w.customer_id"
        if signups is not None and "tenure_days" in lifecycle
        else ""
    )
    signups = signups if signup_join else None
    return f"""
        SELECT w.customer_id, CAST(timezone('UTC', CAST(w.s AS TIMESTAMP)) AS TIMESTAMPTZ) AS event_timestamp,
            w.* EXCLUDE (customer_id, s),
            CAST(({name}_days_30d + 1.0) / ({name}_days_90d / 3.0 + 1.0) AS DOUBLE) AS {name}_trend_30d_90d,
            CAST(({name}_days_90d + 1.0) / ({name}_days_365d * 90.0 / 365.0 + 1.0) AS DOUBLE) AS {name}_trend_90d_365d,
            CAST(date_diff('day', l.d, w.s) AS BIGINT) AS {name}_recency_days,
            CAST(date_diff('day', l.first_d, w.s) AS BIGINT) AS {name}_tenure_days,
            CAST(l.days_all AS BIGINT) AS {name}_frequency,
            CAST(l.n_all AS BIGINT) AS {name}_count_all,
            CASE WHEN l.days_all > 1 THEN date_diff('day', l.first_d, l.d) / (l.days_all - 1.0) END
                AS {name}_mean_gap_days
            {rfm}{_signal_columns(signals, lifecycle, signups is not None)}
        FROM windowed w ASOF JOIN lifetime l ON w.customer_id = l.customer_id AND w.s > l.d
        {signup_join}
        ORDER BY event_timestamp, customer_id"""


def _describe(column: str, name: str, generic: dict[str, str] | None = None) -> str:
    """A feature's description; `generic`: the lifecycle inputs taken from log rows (`_lifecycle_columns`)."""
    if generic and generic.get(column) == name:
        return {
            "tenure_days": f"Days from the customer's first row of {name} to the snapshot (tenure).",
            "days_since_last_active": f"Days from the customer's latest row of {name} to the snapshot "
            "(no `activity` signal is declared: any row counts as activity).",
        }[column]
    if column in _SIGNAL_DESCRIPTIONS:
        return _SIGNAL_DESCRIPTIONS[column]
    match = re.fullmatch(r"(sessions|active_days|tickets|complaints|payment_failures|plan_changes)_(\d+)d", column)
    if match:
        return _SIGNAL_DESCRIPTIONS[match[1]].format(w=match[2])
    match = re.fullmatch(rf"{name}_(count|days)_(\d+)d", column)
    if match:
        return _DESCRIPTIONS[match[1]].format(src=name, w=match[2])
    fixed = {
        "trend_30d_90d": "(active days in 30 d + 1) / (active days in 90 d / 3 + 1): below 1 means activity is falling.",
        "trend_90d_365d": "(active days in 90 d + 1) / (active days in 365 d * 90/365 + 1): below 1 means falling.",
        "recency_days": "Days from the latest row to the snapshot (RFM recency).",
        "tenure_days": "Days from the first row to the snapshot.",
        "frequency": "Distinct days with a row before the snapshot (RFM frequency).",
        "count_all": "Rows before the snapshot.",
        "mean_gap_days": "Mean days between consecutive active days; null with fewer than two.",
        "monetary": "Amount per active day before the snapshot (RFM monetary).",
    }
    suffix = column[len(name) + 1 :]
    if suffix in fixed:
        return fixed[suffix]
    match = re.fullmatch(r"(.+)_(\d+)d", suffix)
    if match:
        return f"Sum of {match[1]} over rows of {name} in the {match[2]} days before the snapshot."
    return f"{suffix} of {name} before the snapshot."


def build_contract_features(ingested_dir: Path, out_dir: Path) -> ContractFeatures:
    """Write one feature table per snapshot/log source of the last ingest into `out_dir`."""
    manifest = read_manifest(ingested_dir)
    contract = Contract.model_validate(manifest["contract"])
    end = datetime.fromisoformat(manifest["data_end"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables, schema, rows = {}, {}, {}
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    for name, source in contract.sources.items():
        path = Path(ingested_dir) / f"{name}.parquet"
        view = f"{contract.name}_{name}"
        if source.shape == Shape.SNAPSHOT:
            frame, fields = _snapshot_table(path, contract, manifest["types"][name])
        elif source.shape == Shape.CUSTOMERS:
            frame, fields = _customers_table(path, contract, manifest["types"][name])
        elif source.shape in LOG_SHAPES:
            signups = Path(ingested_dir) / f"{contract.customers[0]}.parquet" if contract.customers else None
            frame = con.execute(_log_table(con, path, name, contract, end, manifest["types"][name], signups)).df()
            frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
            generic = _lifecycle_columns(contract)
            fields = [(c, _kind_of(frame[c].dtype), _describe(c, name, generic)) for c in frame.columns[2:]]
            if signups is not None:  # tenure from the customers source's signup, not from the first log row
                fields = [(c, k, "Days from the customer's signup to the snapshot (tenure)." if c == "tenure_days" else d) for c, k, d in fields]
        else:
            continue
        if frame.empty:
            raise DataError(f"{path}: no customer is active at any weekly snapshot; nothing to build features from")
        target = out_dir / f"{view}.parquet"
        tmp = target.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(target)
        tables[view], schema[view], rows[view] = target, fields, len(frame)
    con.close()
    (out_dir / VIEWS_FILE).write_text(json.dumps(
            {
                "contract": contract.name,
                "views": schema,
                # views of one row per customer: they never go stale (no TTL)
                "snapshot_views": [f"{contract.name}_{n}" for n in contract.of_shape(*TABLE_SHAPES)],
                "log_views": [f"{contract.name}_{n}" for n in contract.of_shape(*LOG_SHAPES)],
                "data_end": end.isoformat(),
            },
            indent=2,
        ))
    return ContractFeatures(tables, schema, rows, end)


def read_views(tables_dir: Path) -> dict:
    """The schema `build_contract_features` wrote (views, their fields, the end of the data)."""
    path = Path(tables_dir) / VIEWS_FILE
    if not path.exists():
        raise DataError(f"{path} is missing; run `churn features build` after `churn ingest`")
    return json.loads(path.read_text())
