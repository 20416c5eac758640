"""The Feast feature store of the engine: configure, apply, materialize, read.

The repository folder (`<data_dir>/feast`) gets a `feature_store.yaml` written from the
settings, so the `feast` CLI works on it too (`feast -c data/feast feature-views list`).
Offline store: DuckDB over the Parquet tables; online store: SQLite, or Redis when configured.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from feast import FeatureStore
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from churn.child import frame_from_child, lean_frame, report_progress
from churn.clock import utc
from churn.errors import DataError
from churn.settings import Settings
from features.definitions import FEATURE_TTL, customer, feature_service, feature_views

PROJECT = "churn"


def redis_connection_string(settings: Settings) -> str:
    """`redis_url` with the connect and socket timeouts of `timeouts.redis_seconds` unless it sets its own.

    Feast passes the `key=value` parts of its connection string to `redis.Redis` as keyword
    arguments (`RedisOnlineStore._parse_connection_string`): without them redis-py waits
    forever on a Redis that accepts connections but does not answer (stopped, overloaded).
    """
    given = {part.split("=", 1)[0].strip() for part in settings.redis_url.split(",") if "=" in part}
    seconds = settings.timeouts.redis_seconds
    extra = [f"{key}={seconds:g}" for key in ("socket_timeout", "socket_connect_timeout") if key not in given]
    return ",".join([settings.redis_url, *extra])


def redis_retry() -> Retry:
    """The retry of every Redis client of the engine: once, at once, on a broken connection only.

    A pooled connection that Redis closed is worth one more try; a read that timed out
    (`timeouts.redis_seconds`) is not: redis-py's default (three tries with back-off) made a
    hung Redis cost several timeouts, and an outage seconds, before the caller heard of it.
    """
    return Retry(ConstantBackoff(0.01), retries=1, supported_errors=(RedisConnectionError,))


def _config(settings: Settings) -> dict:
    repo = settings.feature_repo_dir.resolve()
    if settings.online_store == "redis":
        online = {"type": "redis", "connection_string": redis_connection_string(settings)}
    else:
        online = {"type": "sqlite", "path": str(repo / "online_store.db")}
    return {
        "project": PROJECT,
        "provider": "local",
        "registry": {"path": str(repo / "registry.db"), "cache_ttl_seconds": 60},
        "offline_store": {"type": "duckdb"},
        "online_store": online,
        "entity_key_serialization_version": 3,
    }


def feature_store(settings: Settings) -> FeatureStore:
    """A FeatureStore on the repository folder, with its config written from the settings."""
    repo = settings.feature_repo_dir
    repo.mkdir(parents=True, exist_ok=True)
    config_path = repo / "feature_store.yaml"
    text = yaml.safe_dump(_config(settings), sort_keys=False)
    if not config_path.exists() or config_path.read_text() != text:
        config_path.write_text(text)
    return FeatureStore(repo_path=str(repo.resolve()))


def apply_definitions(settings: Settings) -> list[str]:
    """Register the entity, the data set's views and its FeatureService (`feast apply`, after `churn features build`)."""
    from features.build import read_views

    written = read_views(settings.feature_tables_dir)
    views = feature_views(settings.feature_tables_dir, written["views"], set(written["snapshot_views"]))
    service = feature_service(written["contract"], views)
    store = feature_store(settings)
    store.apply([customer, *views, service])
    return [v.name for v in views] + [service.name]


def materialize(settings: Settings, end: datetime) -> None:
    """Load the latest rows of the data set's views up to `end` into the online store.

    Weekly log views: their rows of the last `FEATURE_TTL` (older ones would be stale anyway).
    Views of one row per customer (a snapshot, a customers source): every row, however old: a
    customer's row stamped at their signup holds their attributes for good, and a window of
    two weeks would leave out everyone who signed up before it.
    """
    from features.build import read_views

    views = read_views(settings.feature_tables_dir)
    store = feature_store(settings)
    if views["log_views"]:
        store.materialize(start_date=end - FEATURE_TTL, end_date=end, feature_views=views["log_views"])
    if views["snapshot_views"]:
        tables = [settings.feature_tables_dir / f"{v}.parquet" for v in views["snapshot_views"]]
        con = duckdb.connect()
        try:
            first = con.execute(
                "SELECT min(event_timestamp) FROM (" + " UNION ALL ".join(f"SELECT event_timestamp FROM read_parquet('{t}')" for t in tables) + ")"
            ).fetchone()[0]
        finally:
            con.close()
        store.materialize(start_date=min(first, end), end_date=end, feature_views=views["snapshot_views"])


def feature_refs(store: FeatureStore, services: str | list[str]) -> list[str]:
    """The `view:feature` references of one or more FeatureServices, each once."""
    refs: dict[str, None] = {}
    for service in [services] if isinstance(services, str) else services:
        for projection in store.get_feature_service(service).feature_view_projections:
            for feature in projection.features:
                refs[f"{projection.name_to_use()}:{feature.name}"] = None
    return list(refs)


def historical_features(
    settings: Settings, entity_df: pd.DataFrame, services: str | list[str], chunk_rows: int | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None, lean: bool = False,
) -> pd.DataFrame:
    """Point-in-time join of the features of one or more FeatureServices onto `entity_df`.

    `entity_df` columns:
    - customer_id: int
    - event_timestamp: tz-aware timestamp; each row gets the latest feature row at or before it
      (and not older than the views' TTL).

    Returns one row per entity row, in the same order, with extra columns kept.

    Feast joins at most `chunk_rows` entity rows per call (default `offline.pit_chunk_rows`):
    each row's join is independent of the others, so the parts are the rows one call returns.
    A join of more than one part runs in a child process, which hands its result over as an
    Arrow file: the memory DuckDB and Arrow keep for reuse after a join (measured: about 5 GB
    after a 5.6 M-row training set at 1,000,000 customers, for a 1.5 GB frame) goes with the
    process instead of staying under the model fits that follow. Like any code that starts
    processes, a script calling this at that size needs the `if __name__ == "__main__":` guard.
    `progress(done, total)` after each part: the entity rows joined so far, of `len(entity_df)`.
    `lean`: the features come as float32 where every value of theirs is exactly a float32
    (`churn.child.lean_frame`; training sets, whose size is the offline path's memory bound);
    the entity frame's own columns (labels) as they were.
    """
    chunk = chunk_rows or settings.offline.pit_chunk_rows
    keep = list(entity_df.columns) if lean else None  # the entity frame's own columns (labels) as they are
    if len(entity_df) <= chunk:
        table = _joined(settings, entity_df, services, chunk, progress)
        return lean_frame(table.schema, lambda: iter(table.to_batches()), keep) if lean else table.to_pandas(self_destruct=True)
    reported = [0]

    def relayed(done: int, total: int) -> None:
        reported.append(done)
        progress(done, total)

    try:
        frame, _ = frame_from_child(
            _joined_apart, (settings, entity_df, services, chunk), settings.data_dir / "scratch", relayed, lean_except=keep
        )
    except BrokenProcessPool as exc:
        raise DataError(
            f"feature services {services!r}: the point-in-time join of {len(entity_df):,} entity rows "
            f"died in its process (out of memory? lower offline.pit_chunk_rows, now {chunk:,})"
        ) from exc
    if reported[-1] < len(entity_df):  # the child's last report may still have been on its way
        progress(len(entity_df), len(entity_df))
    return frame


def _joined_apart(settings: Settings, entity_df: pd.DataFrame, services: str | list[str], chunk: int) -> tuple[Iterator[pa.Table], None]:
    """`_parts` in the child process of `historical_features` (`churn.child.frame_from_child`), which writes each part as it comes.

    Feast's DuckDB store runs on ibis's default backend: in this process of its own it gets a
    memory limit and a spill folder (at 1,000,000 customers a 500,000-row part peaked 2.9 GB
    without, 1.3 GB with 1 GB, in the same time).
    """
    import ibis

    def parts() -> Iterator[pa.Table]:
        with tempfile.TemporaryDirectory(dir=settings.data_dir / "scratch", prefix="spill-") as spill:
            ibis.set_backend(ibis.duckdb.connect(memory_limit=settings.offline.memory_limit, temp_directory=spill))
            yield from _parts(settings, entity_df, services, chunk, report_progress)

    return parts(), None


def _joined(
    settings: Settings, entity_df: pd.DataFrame, services: str | list[str], chunk: int,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> pa.Table:
    """Feast's point-in-time join in parts of `chunk` entity rows, concatenated in entity order."""
    return pa.concat_tables(list(_parts(settings, entity_df, services, chunk, progress)))


def _parts(
    settings: Settings, entity_df: pd.DataFrame, services: str | list[str], chunk: int,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Iterator[pa.Table]:
    """Feast's point-in-time join of `chunk` entity rows at a time, each part in entity order; `progress` after each part."""
    store = feature_store(settings)
    refs = feature_refs(store, services)
    frame = entity_df.reset_index(drop=True)
    for start in range(0, max(len(frame), 1), chunk):
        part = frame.iloc[start : start + chunk].assign(_row=np.arange(start, start + min(chunk, len(frame) - start)))
        table = store.get_historical_features(entity_df=part, features=refs).to_arrow()
        if table.num_rows != len(part):
            raise DataError(
                f"feature services {services!r}: point-in-time join returned {table.num_rows} rows "
                f"for {len(part)} entity rows (rows {start}..{start + len(part) - 1})"
            )
        progress(start + len(part), len(frame))
        yield table.take(pc.sort_indices(table["_row"])).drop_columns(["_row"])


def latest_snapshot(settings: Settings, now: datetime) -> datetime:
    """The latest feature snapshot at or before `now` (the engine's clock), if it is still fresh.

    A weekly snapshot older than the features' TTL (`FEATURE_TTL`) at `now` is stale: deciding
    on it would act on customers as they were weeks ago, so this refuses with what to do
    instead. A data set made of a snapshot table alone has one date, its `as_of`, which does
    not expire (its Feast view has no TTL).
    """
    views = _views(settings)
    if not views["log_views"]:
        return _snapshot_date(settings, views, now)
    paths = [settings.feature_tables_dir / f"{v}.parquet" for v in views["log_views"]]
    for path in paths:
        if not path.exists():
            raise DataError(f"{path} is missing; run `churn features build` first")
    where = paths[0] if len(paths) == 1 else settings.feature_tables_dir
    latest = _latest_stamp(paths, now)
    if latest is None:
        raise DataError(f"{where}: no feature snapshot at or before now ({now:%Y-%m-%d %H:%M} UTC, the engine's clock)")
    latest = latest.astimezone(timezone.utc)
    if now - latest > FEATURE_TTL:
        raise DataError(
            f"{where}: the features are stale: the latest snapshot ({latest:%Y-%m-%d}) is {(now - latest).days} days "
            f"before now ({now:%Y-%m-%d}, the engine's clock), past the {FEATURE_TTL.days} days features are valid "
            f"for. Build and materialize newer data, or pin the clock to a date the data covers "
            f"(CHURN_NOW={latest:%Y-%m-%d})"
        )
    return latest


def _latest_stamp(tables: list[Path], at: datetime) -> datetime | None:
    """The latest event_timestamp at or before `at` in the feature tables `tables`; None when they have none.

    The maximum of each table's own maximum: DuckDB answers those from the Parquet statistics
    of the row groups wholly before `at` (at 200,000 customers 0.007 s instead of 0.025 s for
    the maximum over the tables' union).
    """
    maxima = " UNION ALL ".join(
        f"SELECT max(event_timestamp) AS t FROM read_parquet('{p}') WHERE event_timestamp <= $at" for p in tables
    )
    con = duckdb.connect()
    try:
        ((latest,),) = con.execute(f"SELECT max(t) FROM ({maxima})", {"at": at}).fetchall()
    finally:
        con.close()
    return latest


def _views(settings: Settings) -> dict:
    from features.build import read_views

    return read_views(settings.feature_tables_dir)


def _snapshot_date(settings: Settings, views: dict, now: datetime) -> datetime:
    """The date an ingested snapshot describes (its `as_of`), which must not be after `now`."""
    from features.contract import Contract
    from features.ingest import read_manifest

    _, source = Contract.model_validate(read_manifest(settings.ingested_dir)["contract"]).snapshot
    as_of = datetime(source.as_of.year, source.as_of.month, source.as_of.day, tzinfo=timezone.utc)
    if as_of > now:
        raise DataError(
            f"the ingested snapshot describes {as_of:%Y-%m-%d} (its `as_of`), after now ({now:%Y-%m-%d}, the engine's "
            f"clock); pin the clock to a later date (CHURN_NOW={as_of:%Y-%m-%d})"
        )
    return as_of


def active_population(settings: Settings, as_of: datetime) -> str:
    """The customers active at `as_of`, as SQL: a DuckDB SELECT of one text column, customer_id, each once.

    The whole snapshot table, or for logs the customers in the latest weekly feature rows at
    or before `as_of`, less those cancelled before it. `active_customers` runs it; batch scoring
    runs it inside its point-in-time join (`features.pit.open_active_batches`), so the ids do
    not go through pandas. For logs it reads the date of those latest rows first and writes it
    into the SELECT: a literal date lets DuckDB skip the row groups of every other week (at
    50,000 customers 0.03 s instead of 0.2 s with the date as a subquery).
    Raises DataError when no feature row is at or before `as_of`.
    """
    return _population(settings, _contract(settings), _views(settings)["log_views"], pd.Timestamp(utc(as_of)))


def _population(settings: Settings, contract, log_views: list[str], stamp: pd.Timestamp) -> str:
    """`active_population` of a data set whose contract and log views are read already."""
    from features.contract import Shape

    if not log_views:
        name, _ = contract.snapshot
        return f"SELECT customer_id FROM read_parquet('{settings.ingested_dir / name}.parquet')"
    tables = [settings.feature_tables_dir / f"{v}.parquet" for v in log_views]
    rows = " UNION ALL ".join(f"SELECT customer_id, event_timestamp FROM read_parquet('{p}')" for p in tables)
    latest = _latest_stamp(tables, stamp.to_pydatetime())
    if latest is None:
        raise _no_customer(contract.name, stamp)
    sql = f"SELECT DISTINCT customer_id FROM ({rows}) WHERE event_timestamp = TIMESTAMPTZ '{pd.Timestamp(latest).isoformat()}'"
    cancels = contract.of_shape(Shape.CANCELLATIONS)
    if cancels:
        gone = " UNION ALL ".join(
            f"SELECT customer_id FROM read_parquet('{settings.ingested_dir / n}.parquet') "
            f"WHERE event_time < TIMESTAMPTZ '{stamp.isoformat()}'"
            for n in cancels
        )
        sql += f" AND customer_id NOT IN ({gone})"
    return sql


def active_customers(settings: Settings, as_of: datetime) -> pd.DataFrame:
    """Customers with a feature snapshot at `as_of` (the active ones: `active_population`), as an entity frame.

    Returns customer_id, event_timestamp (= as_of); for logs in customer_id order, for a
    snapshot in its table's order.
    """
    stamp = pd.Timestamp(utc(as_of))
    contract, log_views = _contract(settings), _views(settings)["log_views"]
    sql = _population(settings, contract, log_views, stamp)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        ids = con.execute(f"{sql} ORDER BY 1" if log_views else sql).df()["customer_id"]
    finally:
        con.close()
    if ids.empty:
        raise _no_customer(contract.name, stamp)
    return pd.DataFrame({"customer_id": ids.astype(str).to_numpy(), "event_timestamp": stamp})


def _contract(settings: Settings):
    from features.contract import Contract
    from features.ingest import read_manifest

    return Contract.model_validate(read_manifest(settings.ingested_dir)["contract"])


def _no_customer(data_set: str, stamp: pd.Timestamp) -> DataError:
    return DataError(f"{data_set}: no customer to score at {stamp:%Y-%m-%d} (no feature rows at or before it)")


def online_features(store: FeatureStore, customer_ids: list, services: str | list[str]) -> pd.DataFrame:
    """Latest features of `customer_ids` (as text) from the online store, one read for all ids.

    Customers the online store does not know come back with every feature null.
    """
    response = store.get_online_features(
        features=feature_refs(store, services),
        entity_rows=[{"customer_id": str(c)} for c in customer_ids],
    )
    return pd.DataFrame(response.to_dict())
