"""The online store serves what the offline store holds at the as-of date: SQLite and Redis alike."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import redis

from churn.settings import Settings
from features.build import VIEWS_FILE
from features.definitions import FEATURE_TTL
from features.store import (
    apply_definitions, feature_store, historical_features, materialize, online_features,
)

from tests.conftest import make_settings

# a database of its own on the local Redis, so that tests never touch db 0
REDIS_TEST_URL = "127.0.0.1:6379,db=13"


@pytest.fixture()
def redis_settings(engine, tmp_path):
    client = redis.Redis(host="127.0.0.1", port=6379, db=13)
    client.ping()  # Redis must run here (CI starts it): fail, don't skip
    client.flushdb()
    settings = make_settings(tmp_path, online_store="redis", redis_url=REDIS_TEST_URL)
    for table in [*engine.settings.feature_tables_dir.glob("*.parquet"), engine.settings.feature_tables_dir / VIEWS_FILE]:
        shutil.copy(table, settings.feature_tables_dir / table.name)
    yield settings
    client.flushdb()


def _materialized(engine, backend: str, request) -> Settings:
    """Settings of an online store holding the engine's features at its as_of: its own SQLite, or Redis filled here."""
    if backend == "sqlite":
        return engine.settings
    settings = request.getfixturevalue("redis_settings")
    apply_definitions(settings)
    materialize(settings, engine.as_of)
    return settings


def _reader(engine, settings: Settings):
    """A reader of the engine's feature service that needs what its champion needs, as the service's reader does."""
    from serving.online import OnlineReader
    from serving.scoring import Scorer

    return OnlineReader(feature_store(settings), [engine.service], Scorer.load(engine.settings).required_features)


def _scored_ids(engine) -> list[str]:
    return pd.read_parquet(engine.interventions.scores_path)["customer_id"].head(25).tolist()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_online_matches_offline_at_as_of(engine, backend, request):
    settings = _materialized(engine, backend, request)
    as_of = engine.as_of
    ids = _scored_ids(engine)
    names = engine.feature_names
    online = online_features(feature_store(settings), ids, engine.service).set_index("customer_id")
    offline = historical_features(
        engine.settings, pd.DataFrame({"customer_id": ids, "event_timestamp": as_of}), engine.service
    ).set_index("customer_id")
    pd.testing.assert_frame_equal(
        online.loc[ids, names], offline.loc[ids, names], check_dtype=False, check_exact=False, rtol=1e-9
    )


def test_readiness_needs_fresh_features_in_a_store_that_holds_them(engine, redis_settings):
    from churn.errors import StoreUnavailableError
    from features.store import redis_connection_string
    as_of = engine.as_of
    assert redis_connection_string(redis_settings) == f"{REDIS_TEST_URL},socket_timeout=1,socket_connect_timeout=1"
    apply_definitions(redis_settings)
    reader = _reader(engine, redis_settings)
    with pytest.raises(StoreUnavailableError, match=r"feature view '\w+' was never materialized"):
        reader.check_ready(as_of)
    materialize(redis_settings, as_of)
    reader.check_ready(as_of)
    reader.check_ready(as_of + FEATURE_TTL)  # the last day of the TTL
    late = as_of + FEATURE_TTL + pd.Timedelta(days=1)
    with pytest.raises(StoreUnavailableError, match=r"features of '\w+' are stale: materialized up to .* 15 days before now .* 14-day TTL"):
        reader.check_ready(late)
    redis.Redis(host="127.0.0.1", port=6379, db=13).flushdb()  # a Redis restarted without its data
    with pytest.raises(StoreUnavailableError, match=r"online store \(redis\) holds no features of project 'churn'"):
        reader.check_ready(as_of)
    # the embedded SQLite store of the engine's run holds fresh features
    _reader(engine, engine.settings).check_ready(as_of)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_reads_mark_customers_whose_features_are_past_the_ttl(engine, backend, request):
    """At the engine's clock, a customer's features older than the view's TTL are stale (Feast would drop them)."""
    settings = _materialized(engine, backend, request)
    as_of = engine.as_of
    ids = _scored_ids(engine)
    reader = _reader(engine, settings)
    fresh = reader.read(ids, now=as_of)
    assert fresh.complete.all() and not fresh.stale.any()
    assert (fresh.oldest == as_of.timestamp()).all()  # every active customer has the latest weekly snapshot
    late = reader.read(ids, now=as_of + FEATURE_TTL + pd.Timedelta(seconds=1))
    assert late.stale.all() and not late.complete.any()
    assert reader.read(ids).stale is None  # no clock, no judgement


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_reads_by_text_ids_and_by_integers(engine, backend, request):
    """Ids are text: an integer finds the customer of its decimal text (the simulator's ids), other text is unknown, no error."""
    settings = _materialized(engine, backend, request)
    ids = _scored_ids(engine)
    reader = _reader(engine, settings)
    asked = [int(ids[0]), str(ids[1]), "7590-VHVEG", f"0{ids[2]}", f"{ids[3]}.0", "99999999999999999999"]
    rows = reader.read(asked, now=engine.as_of)
    assert rows.customer_ids.tolist() == [str(c) for c in asked]
    assert all(isinstance(c, str) for c in rows.customer_ids)
    assert rows.known.tolist() == [True, True, False, False, False, False]
    assert rows.complete.tolist() == [True, True, False, False, False, False]
    reader.ping()


@pytest.fixture()
def text_id_settings(request, tmp_path) -> Settings:
    """A store of one feature view keyed by text ids (the entity of ingested data sets), materialized."""
    from datetime import datetime, timezone

    from feast import FeatureService, FeatureView, Field, FileSource
    from feast.types import Float64, String

    from features.definitions import customer

    if request.param == "redis":
        client = redis.Redis(host="127.0.0.1", port=6379, db=13)
        client.ping()
        client.flushdb()
        request.addfinalizer(client.flushdb)
        settings = make_settings(tmp_path, online_store="redis", redis_url=REDIS_TEST_URL)
    else:
        settings = make_settings(tmp_path)
    as_of = datetime(2025, 3, 1, tzinfo=timezone.utc)
    path = settings.feature_tables_dir / "accounts.parquet"
    pd.DataFrame(
        {
            "customer_id": ["7590-VHVEG", "5575-GNVDE", "123"],
            "event_timestamp": pd.Series([as_of - pd.Timedelta(days=1)] * 3).astype("datetime64[us, UTC]"),
            "monthly_charges": [29.85, 56.95, 10.0],
            "contract": ["Month-to-month", "One year", "Two year"],
        }
    ).to_parquet(path)
    view = FeatureView(
        name="accounts",
        entities=[customer],
        ttl=FEATURE_TTL,
        schema=[
            Field(name="monthly_charges", dtype=Float64, description="Monthly charge."),
            Field(name="contract", dtype=String, description="Contract kind."),
        ],
        source=FileSource(name="accounts_source", path=str(path), timestamp_field="event_timestamp"),
        online=True,
    )
    store = feature_store(settings)
    store.apply([customer, view, FeatureService(name="accounts_v1", features=[view])])
    store.materialize(start_date=as_of - FEATURE_TTL, end_date=as_of)
    return settings


@pytest.mark.parametrize("text_id_settings", ["sqlite", "redis"], indirect=True)
def test_reads_a_feature_view_keyed_by_text_ids(text_id_settings):
    from serving.online import OnlineReader

    reader = OnlineReader(feature_store(text_id_settings), ["accounts_v1"])
    rows = reader.read(["5575-GNVDE", "nobody", 123, "7590-VHVEG"])
    assert rows.customer_ids.tolist() == ["5575-GNVDE", "nobody", "123", "7590-VHVEG"]
    assert rows.known.tolist() == [True, False, True, True]
    assert rows.columns["monthly_charges"].tolist() == [56.95, None, 10.0, 29.85]
    assert rows.columns["contract"].tolist() == ["One year", None, "Two year", "Month-to-month"]
    reader.ping()
