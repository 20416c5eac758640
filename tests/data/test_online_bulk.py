"""Bulk materialization writes exactly what Feast's own `materialize` writes, on SQLite and Redis."""

from __future__ import annotations

import shutil
import sqlite3

import pandas as pd
import pytest
import redis

from churn.errors import DataError
from features.definitions import FEATURE_TTL, service_name
from features.online_bulk import materialize_bulk
from features.pit import feature_columns
from features.simulate import CONFIG_NAME
from features.store import apply_definitions, feature_refs, feature_store, historical_features, materialize

from tests.conftest import make_settings

# issue 7's own database on the local Redis
REDIS_DB = 7


SERVICE = service_name(CONFIG_NAME)  # the engine's data set: the simulator's tables through `churn ingest`


def _copy_tables(engine, settings):
    """The engine's feature tables and their schema (views.json) in another data folder."""
    for table in [*engine.settings.feature_tables_dir.glob("*.parquet"), engine.settings.feature_tables_dir / "views.json"]:
        shutil.copy(table, settings.feature_tables_dir / table.name)


@pytest.fixture()
def redis_client():
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    client.ping()  # Redis must run here: fail, don't skip
    client.flushdb()
    yield client
    client.flushdb()


def _sqlite_rows(settings) -> pd.DataFrame:
    with sqlite3.connect(settings.feature_repo_dir / "online_store.db") as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'churn_%'")]
        frames = [
            pd.read_sql(f'SELECT \'{t}\' AS tbl, entity_key, feature_name, value, value_text, event_ts, created_ts FROM "{t}"', conn)
            for t in tables
        ]
    return pd.concat(frames).sort_values(["tbl", "entity_key", "feature_name"]).reset_index(drop=True)


def _redis_dump(client) -> dict:
    return {key: client.hgetall(key) for key in client.scan_iter(count=10_000)}


def _assert_online_reads_offline(engine, settings, n=40):
    """Feast's own reader returns, for active customers, what the offline store holds at as_of."""
    as_of = engine.as_of
    ids = pd.read_parquet(engine.interventions.scores_path)["customer_id"].head(n).tolist()
    names = feature_columns(settings.feature_tables_dir)
    store = feature_store(settings)
    online = store.get_online_features(
        features=feature_refs(store, SERVICE), entity_rows=[{"customer_id": i} for i in ids]
    ).to_df().set_index("customer_id")
    offline = historical_features(
        engine.settings, pd.DataFrame({"customer_id": ids, "event_timestamp": as_of}), SERVICE
    ).set_index("customer_id")
    pd.testing.assert_frame_equal(online.loc[ids, names], offline.loc[ids, names], check_dtype=False, check_exact=True)


def test_sqlite_bulk_equals_feast_materialize(engine, tmp_path):
    as_of = engine.as_of
    by_feast, bulk = make_settings(tmp_path / "feast"), make_settings(tmp_path / "bulk")
    for settings in (by_feast, bulk):
        _copy_tables(engine, settings)
        apply_definitions(settings)
    materialize(by_feast, as_of)  # Feast's own materialize of every view
    result = materialize_bulk(bulk, as_of - FEATURE_TTL, as_of, batch_rows=300)  # several batches

    expected = _sqlite_rows(by_feast)
    assert len(expected) > 0
    assert result.customers == expected["entity_key"].nunique()
    pd.testing.assert_frame_equal(_sqlite_rows(bulk), expected)
    _assert_online_reads_offline(engine, bulk)


def test_redis_bulk_equals_feast_materialize(engine, tmp_path, redis_client):
    as_of = engine.as_of
    settings = make_settings(tmp_path, online_store="redis", redis_url=f"127.0.0.1:6379,db={REDIS_DB}")
    _copy_tables(engine, settings)
    apply_definitions(settings)
    materialize(settings, as_of)
    expected = _redis_dump(redis_client)
    redis_client.flushdb()

    result = materialize_bulk(settings, as_of - FEATURE_TTL, as_of, batch_rows=300)

    assert len(expected) > 0 and result.customers == len(expected)
    assert _redis_dump(redis_client) == expected  # same keys, same fields, same bytes
    _assert_online_reads_offline(engine, settings)


def test_bulk_reports_the_customers_written_after_each_batch(engine, tmp_path):
    settings = make_settings(tmp_path)
    _copy_tables(engine, settings)
    apply_definitions(settings)
    reports = []
    result = materialize_bulk(
        settings, engine.as_of - FEATURE_TTL, engine.as_of, batch_rows=300, progress=lambda *r: reports.append(r)
    )
    done = [d for d, _ in reports]
    assert len(reports) == -(-result.customers // 300) > 1  # one report per batch
    assert done == sorted(set(done)) and done[-1] == result.customers
    assert {t for _, t in reports} == {result.customers}  # the total is known before the first batch


def test_bulk_needs_registered_views(engine, tmp_path):
    settings = make_settings(tmp_path)
    _copy_tables(engine, settings)
    feature_store(settings)  # an empty repository: nothing applied
    with pytest.raises(DataError, match=f"feature view '{CONFIG_NAME}_customers' is not registered.*churn features apply"):
        materialize_bulk(settings, pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-01-15", tz="UTC"))


def test_materializing_into_a_hung_redis_fails_within_the_timeout(engine, tmp_path):
    """A Redis that takes connections but answers nothing (SIGSTOP): StoreUnavailableError in about a second."""
    import time

    from churn.errors import StoreUnavailableError
    from tests.e2e.servers import RedisServer, free_port

    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    try:
        settings = make_settings(tmp_path, online_store="redis", redis_url=server.url)
        _copy_tables(engine, settings)
        apply_definitions(settings)
        as_of = engine.as_of
        server.pause()
        began = time.perf_counter()
        with pytest.raises(StoreUnavailableError, match=r"Redis online store unreachable while materializing \(no answer within timeouts.redis_seconds\)"):
            materialize_bulk(settings, as_of - FEATURE_TTL, as_of)
        assert time.perf_counter() - began < 5  # one timeout (1 s), not redis-py's default retries with back-off
    finally:
        server.resume()
        server.stop()
