"""The online store serves what the offline store holds at the as-of date: SQLite and Redis alike."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import redis

from churn.settings import Settings
from features.definitions import FEATURE_TTL, feature_names
from features.store import apply_definitions, feature_store, historical_features, materialize, online_features

from tests.conftest import make_settings

# a database of its own on the local Redis, so that tests never touch db 0
REDIS_TEST_URL = "127.0.0.1:6379,db=13"


@pytest.fixture()
def redis_settings(engine, tmp_path):
    client = redis.Redis(host="127.0.0.1", port=6379, db=13)
    client.ping()  # Redis must run here (CI starts it): fail, don't skip
    client.flushdb()
    settings = make_settings(tmp_path, online_store="redis", redis_url=REDIS_TEST_URL)
    for table in engine.settings.feature_tables_dir.glob("*.parquet"):
        shutil.copy(table, settings.feature_tables_dir / table.name)
    yield settings
    client.flushdb()


def _materialized(engine, backend: str, request) -> Settings:
    """Settings of an online store holding the engine's features at its as_of: its own SQLite, or Redis filled here."""
    if backend == "sqlite":
        return engine.settings
    settings = request.getfixturevalue("redis_settings")
    apply_definitions(settings)
    materialize(settings, engine.features.as_of - FEATURE_TTL, engine.features.as_of)
    return settings


def _scored_ids(engine) -> list[int]:
    return pd.read_parquet(engine.interventions.scores_path)["customer_id"].head(25).tolist()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_online_matches_offline_at_as_of(engine, backend, request):
    settings = _materialized(engine, backend, request)
    as_of = engine.features.as_of
    ids = _scored_ids(engine)
    names = feature_names("churn_model_v1")
    online = online_features(feature_store(settings), ids, "churn_model_v1").set_index("customer_id")
    offline = historical_features(
        engine.settings, pd.DataFrame({"customer_id": ids, "event_timestamp": as_of}), "churn_model_v1"
    ).set_index("customer_id")
    pd.testing.assert_frame_equal(
        online.loc[ids, names], offline.loc[ids, names], check_dtype=False, check_exact=False, rtol=1e-9
    )


def test_readiness_needs_fresh_features_in_a_store_that_holds_them(engine, redis_settings):
    from churn.errors import StoreUnavailableError
    from features.store import redis_connection_string
    from serving.online import OnlineReader

    as_of = engine.features.as_of
    assert redis_connection_string(redis_settings) == f"{REDIS_TEST_URL},socket_timeout=1,socket_connect_timeout=1"
    apply_definitions(redis_settings)
    reader = OnlineReader(feature_store(redis_settings), ["churn_model_v1"])
    with pytest.raises(StoreUnavailableError, match=r"feature view '\w+' was never materialized"):
        reader.check_ready(as_of)
    materialize(redis_settings, as_of - FEATURE_TTL, as_of)
    reader.check_ready(as_of)
    reader.check_ready(as_of + FEATURE_TTL)  # the last day of the TTL
    late = as_of + FEATURE_TTL + pd.Timedelta(days=1)
    with pytest.raises(StoreUnavailableError, match=r"features of '\w+' are stale: materialized up to .* 15 days before now .* 14-day TTL"):
        reader.check_ready(late)
    redis.Redis(host="127.0.0.1", port=6379, db=13).flushdb()  # a Redis restarted without its data
    with pytest.raises(StoreUnavailableError, match=r"online store \(redis\) holds no features of project 'churn'"):
        reader.check_ready(as_of)
    # the embedded SQLite store of the engine's run holds fresh features
    OnlineReader(feature_store(engine.settings), ["churn_model_v1"]).check_ready(as_of)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_reads_mark_customers_whose_features_are_past_the_ttl(engine, backend, request):
    """At the engine's clock, a customer's features older than the view's TTL are stale (Feast would drop them)."""
    from serving.online import OnlineReader

    settings = _materialized(engine, backend, request)
    as_of = engine.features.as_of
    ids = _scored_ids(engine)
    reader = OnlineReader(feature_store(settings), ["churn_model_v1"])
    fresh = reader.read(ids, now=as_of)
    assert fresh.complete.all() and not fresh.stale.any()
    assert (fresh.oldest == as_of.timestamp()).all()  # every active customer has the latest weekly snapshot
    late = reader.read(ids, now=as_of + FEATURE_TTL + pd.Timedelta(seconds=1))
    assert late.stale.all() and not late.complete.any()
    assert reader.read(ids).stale is None  # no clock, no judgement
