"""Store outages against a real `bentoml serve` on Redis and PostgreSQL: 503, readiness, recovery.

The service reads its own Redis (started and stopped here) and reaches PostgreSQL through
a relay that the tests cut: a real outage for the service, none for anyone else. The
ledger is checked directly on PostgreSQL, past the relay: a decision is recorded exactly
when the service says so.
"""

from __future__ import annotations

import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from churn.settings import load_settings
from features.definitions import FEATURE_TTL
from features.store import apply_definitions, materialize

from tests.e2e.servers import AUTH, RedisServer, TcpRelay, bentoml_service, service_env

REDIS_PORT = 3650
RELAY_PORT = 3651
PG_DATABASE = "churn_issue6_test"
PG_DIRECT = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DATABASE}"


def _create_database() -> None:
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # this issue's own database, made afresh so its schema is the current one
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{PG_DATABASE}"'))
    admin.dispose()


@pytest.fixture(scope="module")
def stores(engine, tmp_path_factory):
    """(Redis server, relay to PostgreSQL, settings) for a service on Redis + PostgreSQL."""
    root = tmp_path_factory.mktemp("faults")
    redis_server = RedisServer(REDIS_PORT, root / "redis")
    redis_server.start()
    _create_database()
    relay = TcpRelay(RELAY_PORT, ("127.0.0.1", 5432))
    relay.start()
    settings = load_settings(
        data_dir=root / "data",
        mlruns_dir=engine.settings.mlruns_dir,
        online_store="redis",
        redis_url=redis_server.url,
        ledger_url=f"postgresql+psycopg://postgres@127.0.0.1:{RELAY_PORT}/{PG_DATABASE}",
        now=engine.settings.now,  # the engine's pinned clock
    )
    settings.ensure_dirs()
    for table in engine.settings.feature_tables_dir.glob("*.parquet"):
        shutil.copy(table, settings.feature_tables_dir / table.name)
    apply_definitions(settings)
    as_of = engine.features.as_of
    materialize(settings, as_of - FEATURE_TTL, as_of)
    try:
        yield redis_server, relay, settings
    finally:
        relay.cut()
        redis_server.stop()


@pytest.fixture(scope="module")
def api(engine, stores, tmp_path_factory):
    _, _, settings = stores
    env = service_env(settings, tmp_path_factory.mktemp("bentoml_home"))
    known = pd.read_parquet(engine.interventions.scores_path)["customer_id"].head(10).tolist()
    with bentoml_service(env, tmp_path_factory.mktemp("faults_log") / "serve.log") as base:
        yield base, known


def _post(base, path, body) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, headers=AUTH, timeout=30)


def _recorded(campaign: str) -> pd.DataFrame:
    """The campaign's rows, read straight from PostgreSQL (not through the relay or the service)."""
    direct = sa.create_engine(PG_DIRECT)
    with direct.connect() as conn:
        frame = pd.read_sql(
            sa.text("SELECT customer_id, action, decided_at FROM decisions WHERE campaign = :c"), conn, params={"c": campaign}
        )
    direct.dispose()
    return frame


def _ready(base) -> httpx.Response:
    return httpx.get(f"{base}/ready", headers=AUTH, timeout=30)


def test_redis_outage_gives_503_and_red_readiness_then_recovers(api, stores):
    base, known = api
    redis_server, _, _ = stores
    before = _post(base, "/score", {"customer_ids": known[:3]})
    assert before.status_code == 200
    unknown = _post(base, "/score", {"customer_ids": [10_000_000]})  # Redis answers empty fields, not "no row"
    assert unknown.status_code == 404 and "unknown customer" in unknown.json()["error"]
    campaign = f"redis-down-{uuid.uuid4().hex[:8]}"
    redis_server.stop()
    try:
        down = _post(base, "/score", {"customer_ids": known[:3]})
        assert down.status_code == 503
        assert "online store (redis) is unreachable" in down.json()["error"]
        ready = _ready(base)
        assert ready.status_code == 503
        assert ready.json()["online_store"] != "ok" and ready.json()["ledger"] == "ok"
        assert httpx.get(f"{base}/readyz", headers=AUTH, timeout=30).status_code == 503
        no_decision = _post(base, "/interventions", {"customer_ids": known[:3], "campaign": campaign})
        assert no_decision.status_code == 503
        assert _recorded(campaign).empty
    finally:
        redis_server.start()
    # no restart of the service: the next request after the store is back succeeds
    after = _post(base, "/score", {"customer_ids": known[:3]})
    assert after.status_code == 200, after.text
    assert after.json()["scores"] == before.json()["scores"]
    assert _ready(base).status_code == 200


def test_ledger_outage_reports_no_decision_then_recovers(api, stores):
    base, known = api
    _, relay, _ = stores
    campaign = f"pg-down-{uuid.uuid4().hex[:8]}"
    body = {"customer_ids": known[:5], "campaign": campaign}
    relay.cut()
    try:
        down = _post(base, "/interventions", body)
        assert down.status_code == 503
        assert "ledger" in down.json()["error"] and "not confirmed" in down.json()["error"]
        assert _recorded(campaign).empty  # reported as not made, and indeed not made
        listing = httpx.get(f"{base}/interventions", params={"campaign": campaign}, headers=AUTH, timeout=30)
        assert listing.status_code == 503
        ready = _ready(base)
        assert ready.status_code == 503
        assert ready.json()["ledger"] != "ok" and ready.json()["online_store"] == "ok"
        # scoring needs no ledger: it goes on during the outage
        assert _post(base, "/score", {"customer_ids": known[:2]}).status_code == 200
    finally:
        relay.start()
    up = _post(base, "/interventions", body)
    assert up.status_code == 200, up.text
    recorded = _recorded(campaign)
    assert sorted(recorded["customer_id"]) == sorted(known[:5])
    assert {d["customer_id"]: d["action"] for d in up.json()["decisions"]} == dict(
        zip(recorded["customer_id"], recorded["action"])
    )
    assert _ready(base).status_code == 200


def test_concurrent_interventions_for_one_customer_record_one_decision(api):
    base, known = api
    campaign = f"race-{uuid.uuid4().hex[:8]}"
    body = {"customer_ids": [known[0]], "campaign": campaign}
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: _post(base, "/interventions", body), range(12)))
    assert [a.status_code for a in answers] == [200] * 12
    decided = {a.json()["decisions"][0]["decided_at"] for a in answers}
    assert len(decided) == 1  # every caller sees the one recorded decision
    assert len(_recorded(campaign)) == 1
