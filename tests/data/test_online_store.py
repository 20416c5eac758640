"""The online store serves what the offline store holds at the as-of date: SQLite and Redis alike."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import redis

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


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_online_matches_offline_at_as_of(engine, backend, request):
    settings = engine.settings if backend == "sqlite" else request.getfixturevalue("redis_settings")
    as_of = engine.features.as_of
    if backend == "redis":
        apply_definitions(settings)
        materialize(settings, as_of - FEATURE_TTL, as_of)
    scores = pd.read_parquet(engine.interventions.scores_path)
    ids = scores["customer_id"].head(25).tolist()
    names = feature_names("churn_model_v1")
    online = online_features(feature_store(settings), ids, "churn_model_v1").set_index("customer_id")
    offline = historical_features(
        engine.settings, pd.DataFrame({"customer_id": ids, "event_timestamp": as_of}), "churn_model_v1"
    ).set_index("customer_id")
    pd.testing.assert_frame_equal(
        online.loc[ids, names], offline.loc[ids, names], check_dtype=False, check_exact=False, rtol=1e-9
    )
