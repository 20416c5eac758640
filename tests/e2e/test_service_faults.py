"""Store outages against a real `bentoml serve` on Redis and PostgreSQL: 503, readiness, recovery.

The service reads its own Redis (started, stopped and SIGSTOPped here) and reaches PostgreSQL
through a relay that the tests cut: a real outage for the service, none for anyone else. The
ledger is checked directly on PostgreSQL, past the relay: a decision is recorded exactly
when the service says so. A second service on the same stores plays a second replica.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
import yaml

from churn.settings import load_settings
from features.store import materialize
from serving.ledger import Ledger
from serving.policy import load_catalog

from tests.conftest import serve_features_of
from tests.e2e.servers import AUTH, RedisServer, TcpRelay, bentoml_service, free_port, service_env

# ports and database of this run only: other checkouts may run this module on the same machine at once
REDIS_PORT = free_port()
RELAY_PORT = free_port()
PG_DATABASE = f"churn_faults_{uuid.uuid4().hex[:10]}"
PG_DIRECT = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DATABASE}"
# the packaged catalog with a campaign budget that the batch run's acted-on customers overrun
BUDGET = 3.0


def _admin(statement: str) -> None:
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(statement))
    admin.dispose()


@pytest.fixture(scope="module")
def stores(engine, tmp_path_factory):
    """(Redis server, relay to PostgreSQL, settings) for a service on Redis + PostgreSQL."""
    root = tmp_path_factory.mktemp("faults")
    redis_server = RedisServer(REDIS_PORT, root / "redis")
    redis_server.start()
    _admin(f'CREATE DATABASE "{PG_DATABASE}"')  # this run's own, so its schema is the current one
    relay = TcpRelay(RELAY_PORT, ("127.0.0.1", 5432))
    relay.start()
    catalog = root / "actions.yaml"
    catalog.write_text(yaml.safe_dump({**load_catalog().model_dump(mode="json"), "budget": BUDGET}))
    settings = load_settings(
        data_dir=root / "data",
        mlruns_dir=engine.settings.mlruns_dir,
        online_store="redis",
        redis_url=redis_server.url,
        ledger_url=f"postgresql+psycopg://postgres@127.0.0.1:{RELAY_PORT}/{PG_DATABASE}",
        actions_path=catalog,
        now=engine.settings.now,  # the engine's pinned clock
    )
    settings.ensure_dirs()
    serve_features_of(engine, settings)
    try:
        yield redis_server, relay, settings
    finally:
        relay.cut()
        redis_server.stop()
        _admin(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')


def _service_env(settings, tmp_path_factory):
    return service_env(settings, tmp_path_factory.mktemp("bentoml_home"), CHURN_ACTIONS_PATH=str(settings.actions_path))


@pytest.fixture(scope="module")
def api(engine, stores, tmp_path_factory):
    _, _, settings = stores
    known = pd.read_parquet(engine.interventions.scores_path)["customer_id"].head(10).tolist()
    with bentoml_service(_service_env(settings, tmp_path_factory), tmp_path_factory.mktemp("faults_log") / "serve.log") as base:
        yield base, known


@pytest.fixture(scope="module")
def replica(stores, tmp_path_factory):
    """A second service process on the same Redis and ledger: another replica behind the load balancer."""
    _, _, settings = stores
    with bentoml_service(_service_env(settings, tmp_path_factory), tmp_path_factory.mktemp("replica_log") / "serve.log") as base:
        yield base


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
    assert sorted(recorded["customer_id"]) == sorted(str(c) for c in known[:5])  # ids are text in the ledger
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


def _timed_post(base, path, body) -> tuple[httpx.Response, float]:
    began = time.perf_counter()
    answer = _post(base, path, body)
    return answer, time.perf_counter() - began


def test_hung_redis_gives_503_within_2_s_and_recovers_after_sigcont(api, stores):
    base, known = api
    redis_server, _, _ = stores
    before = _post(base, "/score", {"customer_ids": known[:3]})
    assert before.status_code == 200
    redis_server.pause()
    try:
        down, seconds = _timed_post(base, "/score", {"customer_ids": known[:3]})
        assert down.status_code == 503, down.text
        assert seconds < 2.0
        assert "online store (redis) is unreachable: TimeoutError" in down.json()["error"]
        began = time.perf_counter()
        ready = _ready(base)
        assert ready.status_code == 503 and "online store (redis) is unreachable" in ready.json()["online_store"]
        assert time.perf_counter() - began < 4.0
        again, seconds = _timed_post(base, "/score", {"customer_ids": known[:3]})  # still hung: still bounded
        assert again.status_code == 503 and seconds < 2.0
    finally:
        redis_server.resume()
    after = _post(base, "/score", {"customer_ids": known[:3]})  # no restart of the service
    assert after.status_code == 200, after.text
    assert after.json()["scores"] == before.json()["scores"]
    assert _ready(base).status_code == 200


def test_locked_decisions_table_gives_503_within_the_bound_records_nothing_and_scoring_goes_on(api):
    """LOCK TABLE decisions held for ~10 s: decisions fail within timeouts.ledger_seconds (2 s), /score does not wait."""
    base, known = api
    score = {"customer_ids": known[:3]}
    _post(base, "/score", score)
    unloaded = [_timed_post(base, "/score", score)[1] for _ in range(80)]
    campaign = f"locked-{uuid.uuid4().hex[:8]}"
    holder = psycopg.connect(PG_DIRECT.replace("postgresql+psycopg", "postgresql"))
    decisions: list[tuple[httpx.Response, float]] = []
    scoring_done = threading.Event()

    def keep_deciding(customer: int) -> None:
        while not scoring_done.is_set():
            decisions.append(_timed_post(base, "/interventions", {"customer_ids": [customer], "campaign": campaign}))

    try:
        holder.execute("LOCK TABLE decisions IN ACCESS EXCLUSIVE MODE")  # held until the rollback below
        locked_at = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            deciders = [pool.submit(keep_deciding, c) for c in known[:4]]
            time.sleep(0.5)  # the decisions are waiting on the lock
            loaded = [_timed_post(base, "/score", score) for _ in range(160)]
            ready = _ready(base)
            while time.perf_counter() - locked_at < 10:  # hold the lock ~10 s: five times the bound
                time.sleep(0.2)
            scoring_done.set()
            for decider in deciders:
                decider.result()
    finally:
        holder.rollback()
        holder.close()
    assert decisions and all(answer.status_code == 503 for answer, _ in decisions), [a.text for a, _ in decisions[:3]]
    assert max(seconds for _, seconds in decisions) < 3.0  # 2 s bound, plus the HTTP round trip on a busy machine
    assert "not confirmed" in decisions[0][0].json()["error"] and "ledger" in decisions[0][0].json()["error"]
    assert _recorded(campaign).empty  # told 503, and indeed nothing recorded
    assert ready.status_code == 503 and ready.json()["ledger"] != "ok"
    assert all(answer.status_code == 200 for answer, _ in loaded)
    unloaded += [_timed_post(base, "/score", score)[1] for _ in range(80)]  # before and after: the machine's drift
    p99_unloaded = float(np.quantile(unloaded, 0.99))
    p99_loaded = float(np.quantile([seconds for _, seconds in loaded], 0.99))
    loaded_seconds = [seconds for _, seconds in loaded]
    print(
        f"/score median/p99 unloaded {np.median(unloaded) * 1000:.1f}/{p99_unloaded * 1000:.1f} ms, with decisions "
        f"blocked {np.median(loaded_seconds) * 1000:.1f}/{p99_loaded * 1000:.1f} ms"
    )
    assert p99_loaded <= 3 * p99_unloaded
    # once the lock is gone, the same call records
    after = _post(base, "/interventions", {"customer_ids": known[:4], "campaign": campaign})
    assert after.status_code == 200, after.text
    assert len(_recorded(campaign)) == 4
    assert _ready(base).status_code == 200


def _acted_in_batch(engine, skip: list[int]) -> pd.DataFrame:
    """Customers the batch run gave an action (contacted or held out), best first, but not `skip`.

    The service scores them on the same features, so they are worth an action online too.
    """
    ledger = Ledger(engine.settings.resolved_ledger_url)
    try:
        batch = ledger.campaign_decisions(engine.interventions.campaign)
    finally:
        ledger.close()
    acted = batch[(batch["action"] != "none") & ~batch["customer_id"].isin([str(c) for c in skip])]
    return acted.sort_values("expected_value", ascending=False).reset_index(drop=True)


def test_two_replicas_deciding_the_same_customers_for_two_campaigns_contact_each_once(api, replica, engine):
    base, known = api
    customers = _acted_in_batch(engine, known)["customer_id"].head(20).astype(int).tolist()
    tag = uuid.uuid4().hex[:8]
    calls = [(base, f"a-{tag}", c) for c in customers] + [(replica, f"b-{tag}", c) for c in customers]
    order = np.random.default_rng(16).permutation(len(calls))
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: _post(calls[i][0], "/interventions", {"customer_ids": [calls[i][2]], "campaign": calls[i][1]}), order)
        )
    assert [a.status_code for a in answers] == [200] * len(calls), [a.text for a in answers if a.status_code != 200][:3]
    recorded = pd.concat([_recorded(f"a-{tag}"), _recorded(f"b-{tag}")])
    assert len(recorded) == 40
    contacted = recorded[recorded["action"] != "none"]
    assert len(contacted) >= 5  # the customers do get actions, from one campaign or the other
    twice = contacted["customer_id"].value_counts()
    assert (twice <= 1).all(), f"contacted twice within the cooldown: {sorted(twice[twice > 1].index)}"


def test_a_campaign_decided_in_13_calls_on_two_replicas_spends_at_most_its_budget(api, replica, engine):
    base, known = api
    batch = _acted_in_batch(engine, known).iloc[20:]  # past the previous test's customers
    assert len(batch) >= 26 and batch["cost"].sum() > 2 * BUDGET  # what they got in the batch run overruns the budget
    campaign = f"budget-{uuid.uuid4().hex[:8]}"
    parts = np.array_split(batch["customer_id"].astype(int).to_numpy(), 13)
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda i: _post((base, replica)[i % 2], "/interventions", {"customer_ids": parts[i].tolist(), "campaign": campaign}),
                range(13),
            )
        )
    assert [a.status_code for a in answers] == [200] * 13, [a.text for a in answers if a.status_code != 200][:3]
    direct = sa.create_engine(PG_DIRECT)
    with direct.connect() as conn:
        rows = pd.read_sql(sa.text("SELECT action, cost, holdout FROM decisions WHERE campaign = :c"), conn, params={"c": campaign})
    direct.dispose()
    assert len(rows) == len(batch)
    committed = rows.loc[rows["action"] != "none", "cost"].sum()  # contacted and held out
    print(f"13 calls: {committed:.2f} committed of a {BUDGET:.0f} budget ({rows.loc[(rows['action'] != 'none') & ~rows['holdout'], 'cost'].sum():.2f} contacted)")
    assert committed <= BUDGET + 1e-6
    assert committed > 0.8 * BUDGET
    reasons = [d["reason"] for a in answers[-3:] for d in a.json()["decisions"]]
    assert any("left out by the budget" in r for r in reasons)


def test_black_holed_ledger_gives_503_within_the_bound_and_records_nothing(api, stores):
    """The link to PostgreSQL goes silent (taken, never answered): the server's timeouts cannot help, the service's do."""
    base, known = api
    _, relay, settings = stores
    campaign = f"silent-{uuid.uuid4().hex[:8]}"
    body = {"customer_ids": known[:2], "campaign": campaign}
    bound = settings.timeouts.ledger_seconds + 1.0  # the ledger's timeout and the service's grace
    relay.freeze()
    try:
        down, seconds = _timed_post(base, "/interventions", body)
        assert down.status_code == 503, down.text
        assert seconds < bound + 1.0
        assert f"did not answer within {bound:g} s" in down.json()["error"] and "not confirmed" in down.json()["error"]
        assert _post(base, "/score", {"customer_ids": known[:2]}).status_code == 200
        began = time.perf_counter()
        ready = _ready(base)
        assert ready.status_code == 503 and "did not answer" in ready.json()["ledger"]
        assert time.perf_counter() - began < bound + 3.0  # the online store's check, then the ledger's bound
        listing = httpx.get(f"{base}/interventions", params={"campaign": campaign}, headers=AUTH, timeout=30)
        assert listing.status_code == 503
    finally:
        relay.thaw()
    time.sleep(2)  # the abandoned decision goes on once the link is back, finds its deadline gone and rolls back
    assert _recorded(campaign).empty
    up = _post(base, "/interventions", body)
    assert up.status_code == 200, up.text
    assert len(_recorded(campaign)) == 2


def test_readiness_turns_red_on_an_emptied_redis_and_the_ledger_gets_its_tables_back(api, stores, engine):
    base, known = api
    redis_server, _, settings = stores
    redis_server.client().flushall()  # what a Redis restarted without its data serves
    try:
        ready = _ready(base)
        assert ready.status_code == 503
        assert "holds no features of project 'churn'" in ready.json()["online_store"] and ready.json()["ledger"] == "ok"
    finally:
        materialize(settings, engine.as_of)
    assert _ready(base).status_code == 200
    # the ledger re-created empty (tables dropped under the running service): the next decision makes them again
    direct = sa.create_engine(PG_DIRECT)
    with direct.begin() as conn:
        conn.execute(sa.text("DROP TABLE outcomes, decisions, customer_locks, campaign_spend"))
    direct.dispose()
    campaign = f"recreated-{uuid.uuid4().hex[:8]}"
    answer = _post(base, "/interventions", {"customer_ids": known[:2], "campaign": campaign})
    assert answer.status_code == 200, answer.text
    assert len(_recorded(campaign)) == 2
    assert _ready(base).status_code == 200
