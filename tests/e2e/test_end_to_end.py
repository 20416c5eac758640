"""The whole path on a small population, through a real `bentoml serve` process."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

from serving.ledger import Ledger
from serving.policy import cooldown_blocks, decide, load_catalog, max_cooldown_days

from tests.e2e.servers import AUTH, bentoml_service, service_env

LIST_REQUIRED = [
    "customer_id", "segment", "churn_probability", "clv", "action", "channel", "cost", "reason",
    "model_version", "decided_at",
]


def test_intervention_list(engine):
    run = engine.interventions
    listing = pd.read_csv(run.list_csv, dtype={"customer_id": str})  # ids are text, as in the ledger
    assert run.list_parquet.exists()
    assert set(LIST_REQUIRED) <= set(listing.columns)
    assert len(listing) == run.n_actions > 0
    assert run.effects == "catalog priors"  # a ledger without outcomes: nothing learned yet
    assert listing["customer_id"].is_unique
    assert (listing["action"] != "none").all()
    assert (listing["expected_value"] > 0).all()
    assert listing["model_version"].str.contains(f"{engine.training.model_name}/{engine.training.version}").all()
    # every listed customer is an active customer that was scored
    scores = pd.read_parquet(run.scores_path)
    assert set(listing["customer_id"]) <= set(scores["customer_id"].astype(str))
    assert pd.read_parquet(run.list_parquet)["customer_id"].tolist() == listing["customer_id"].tolist()
    # the ledger holds every scored customer's decision, actions and 'none' alike
    ledger = Ledger(engine.settings.resolved_ledger_url)
    recorded = ledger.campaign_decisions(run.campaign)
    ledger.close()
    assert len(recorded) == run.n_scored
    # ... contacted customers are on the list; held-out ones only in the ledger
    acted = recorded[recorded["action"] != "none"]
    assert (~acted["holdout"]).sum() == run.n_actions
    assert acted["holdout"].sum() == run.n_holdout
    assert not set(acted.loc[acted["holdout"], "customer_id"]) & set(listing["customer_id"])


@pytest.fixture(scope="module")
def service(engine, tmp_path_factory):
    """A real `bentoml serve` process on the engine's models, stores and ledger."""
    env = service_env(engine.settings, tmp_path_factory.mktemp("bentoml_home"))
    with bentoml_service(env, tmp_path_factory.mktemp("bento") / "serve.log") as base:
        yield base


def test_score_endpoint(engine, service):
    # the batch's scores carry the simulator's integer ids; the service answers their text
    scores = pd.read_parquet(engine.interventions.scores_path).astype({"customer_id": str}).set_index("customer_id")
    known = scores.index[:5].tolist()
    unknown = 10_000_000
    response = httpx.post(f"{service}/score", json={"customer_ids": [*known, unknown]}, timeout=30, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["customer_id"] for s in body["scores"]] == known
    assert body["errors"] == [{"customer_id": "10000000", "error": "unknown customer: the online store has no features for this id"}]
    for item in body["scores"]:
        # online features (materialized at as_of) give the same score as the batch run from the offline store
        assert item["churn_probability"] == pytest.approx(scores.loc[item["customer_id"], "churn_probability"], rel=1e-9)
        assert item["segment"] == scores.loc[item["customer_id"], "segment"]
        assert item["model_version"] == scores.loc[item["customer_id"], "model_version"]
        # reason codes: at most three, strongest first, each worded and raising the risk
        assert 1 <= len(item["reasons"]) <= 3
        assert [r["contribution"] for r in item["reasons"]] == sorted((r["contribution"] for r in item["reasons"]), reverse=True)
        assert all(r["text"] and r["code"] and r["feature"] and r["contribution"] > 0 for r in item["reasons"])


def test_score_rejects_bad_input(service):
    empty = httpx.post(f"{service}/score", json={"customer_ids": []}, timeout=30, headers=AUTH)
    assert empty.status_code == 400
    assert "customer_ids" in empty.text
    wrong_type = httpx.post(f"{service}/score", json={"customer_ids": [""]}, timeout=30, headers=AUTH)
    assert wrong_type.status_code == 400
    assert "customer_ids" in wrong_type.text


@pytest.fixture(scope="module")
def fresh_service(engine, tmp_path_factory):
    """The same service, models, stores and clock, on a ledger of its own (empty: no cooldowns)."""
    home = tmp_path_factory.mktemp("fresh")
    env = service_env(engine.settings, home / "bentoml_home", CHURN_LEDGER_URL=f"sqlite:///{home / 'ledger.db'}")
    with bentoml_service(env, home / "serve.log") as base:
        yield base


def test_online_decisions_equal_the_batch_decisions_at_the_same_clock(engine, fresh_service):
    """Same models, features, catalog and clock (the service's CHURN_NOW is the batch run's): same actions.

    What may legitimately differ, and how the test allows for it:
    - cooldowns: the batch's own contacts hold its customers for 28 days in the batch's ledger, so
      this service has a ledger of its own (the cooldown across the two is the next test);
    - the budget and capacities bind over the batch's whole population, not over one request: a
      customer the batch left out "by the budget or a capacity" may get an action online. The
      expected online decisions are therefore the batch policy applied to the requested customers
      alone; for customers the batch did not leave out by the budget, that is the batch's own action.
    Anything else (online features other than the batch's, another clock, another catalog) fails.
    """
    settings = engine.settings
    ledger = Ledger(settings.resolved_ledger_url)
    batch = ledger.campaign_decisions(engine.interventions.campaign).set_index("customer_id")
    ledger.close()
    acted = batch.index[batch["action"] != "none"][:6].tolist()
    not_worth = batch.index[batch["reason"].str.startswith("no eligible action")][:4].tolist()
    left_out = batch.index[batch["reason"].str.startswith("left out by the budget")][:4].tolist()
    ids = [*acted, *not_worth, *left_out]
    assert len(acted) == 6 and len(not_worth) == 4
    response = httpx.post(
        f"{fresh_service}/interventions", json={"customer_ids": ids, "campaign": "e2e-fresh"}, timeout=30, headers=AUTH
    )
    assert response.status_code == 200, response.text
    decisions = response.json()["decisions"]
    online = {d["customer_id"]: d["action"] for d in decisions}
    assert {pd.Timestamp(d["decided_at"]) for d in decisions} == {pd.Timestamp(settings.now)}
    assert {c: online[c] for c in [*acted, *not_worth]} == batch.loc[[*acted, *not_worth], "action"].to_dict()
    # the budget's customers: what the batch policy gives those customers alone, at that clock
    catalog = load_catalog(settings.actions_path)
    scores = pd.read_parquet(engine.interventions.scores_path).astype({"customer_id": str})
    scores = scores.set_index("customer_id").loc[ids].reset_index()
    alone = decide(scores, catalog, campaign="e2e-fresh").set_index("customer_id")["action"]
    assert online == alone.to_dict()


def test_interventions_endpoint_keeps_the_batch_cooldown_and_records_once(engine, service):
    """At the batch run's clock, the batch's contacts are in their cooldown: online gives them no action.

    A service deciding at the wall clock fails here once the wall clock is 28 days past the batch
    (as it did on 2026-11-29, when this test compared actions at two clocks).
    """
    settings, now = engine.settings, engine.settings.now
    ledger = Ledger(settings.resolved_ledger_url)
    batch = ledger.campaign_decisions(engine.interventions.campaign).set_index("customer_id")
    contacted = batch.index[batch["action"] != "none"][:3].tolist()
    unknown = 10_000_001
    payload = {"customer_ids": [*contacted, unknown], "campaign": "e2e-online"}
    first = httpx.post(f"{service}/interventions", json=payload, timeout=30, headers=AUTH)
    assert first.status_code == 200, first.text
    body = first.json()
    assert sorted(d["customer_id"] for d in body["decisions"]) == sorted(contacted)
    assert [e["customer_id"] for e in body["errors"]] == [str(unknown)]
    assert {d["action"] for d in body["decisions"]} == {"none"}
    assert {pd.Timestamp(d["decided_at"]) for d in body["decisions"]} == {pd.Timestamp(now)}
    # the same rule as the batch policy: cooldowns read from the ledger at the same clock
    catalog = load_catalog(settings.actions_path)
    recent = ledger.recent_actions(now - pd.Timedelta(days=max_cooldown_days(catalog)), now, exclude_campaign="e2e-online")
    assert cooldown_blocks(pd.Index(contacted).to_numpy(), recent, catalog, now).all()

    again = httpx.post(f"{service}/interventions", json=payload, timeout=30, headers=AUTH).json()
    assert [d["decided_at"] for d in again["decisions"]] == [d["decided_at"] for d in body["decisions"]]
    recorded = ledger.campaign_decisions("e2e-online")
    ledger.close()
    assert sorted(recorded["customer_id"]) == sorted(contacted)


@pytest.fixture(scope="module")
def learned_ledger(engine, tmp_path_factory):
    """A ledger with outcomes to learn from: three past campaigns of reengagement_message (synthetic, a large effect)."""
    from churn import clock

    from serving.batch import learn_effects
    from serving.holdout import assign_holdouts

    settings = engine.settings.model_copy(
        update={"ledger_url": f"sqlite:///{tmp_path_factory.mktemp('learned') / 'ledger.db'}"}
    )
    as_of = engine.as_of - pd.Timedelta(weeks=5)  # a snapshot whose 30-day horizon has ended
    scores = pd.read_parquet(engine.interventions.scores_path)
    rng = np.random.default_rng(5)
    ledger = Ledger(settings.resolved_ledger_url)
    for k in range(3):
        campaign = f"past-{k}"
        decided = scores[["customer_id", "segment", "risk_band", "churn_probability", "clv", "model_version"]].assign(
            action="reengagement_message", channel="push", cost=0.1, expected_value=0.0, reason="experiment"
        )
        decided = assign_holdouts(decided, campaign, 0.5)
        ledger.record(decided, campaign, decided_at=as_of, as_of=as_of)
        # contacted customers churn half as often as held-out ones: a large, learnable effect
        churned = rng.random(len(decided)) < np.where(decided["holdout"], 0.3, 0.15)
        outcomes = decided[["customer_id"]].assign(
            campaign=campaign, churned=churned, revenue=10.0, horizon_end=as_of + pd.Timedelta(days=30)
        )
        ledger.record_outcomes(outcomes, "synthetic", recorded_at=clock.now(settings))
    learned = learn_effects(settings, load_catalog(settings.actions_path), ledger)
    ledger.close()
    assert learned is not None and learned.n_learned == scores["segment"].nunique()
    return settings


def _expected(settings, scores: pd.DataFrame, ids: list, campaign: str) -> tuple[pd.DataFrame, str]:
    """What the batch rules decide for `ids` in a new `campaign` with the effects learned from the ledger now
    (action and expected_value by customer id), and the model_version's tag (`serving.batch.with_learned_effects`)."""
    from serving.batch import learn_effects, with_learned_effects

    catalog = load_catalog(settings.actions_path)
    ledger = Ledger(settings.resolved_ledger_url)
    learner = learn_effects(settings, catalog, ledger)
    ledger.close()
    mine = scores.astype({"customer_id": str}).set_index("customer_id").loc[[str(c) for c in ids]].reset_index()
    mine, effects = with_learned_effects(mine, learner, campaign)
    decided = decide(mine, catalog, effects=effects, campaign=campaign).set_index("customer_id")
    return decided[["action", "expected_value"]].sort_index(), mine["model_version"].iloc[0].split(";")[-1]


def _answered(response: httpx.Response) -> pd.DataFrame:
    return pd.DataFrame(response.json()["decisions"]).set_index("customer_id")[["action", "expected_value"]].sort_index()


def test_interventions_endpoint_decides_with_the_batch_runs_learned_effects(engine, learned_ledger, tmp_path_factory):
    """A service on a ledger with outcomes decides a campaign with the effects a batch run would use for it
    (the same Thompson draw, `serving.batch.with_learned_effects`), and learns outcomes recorded through
    `/outcomes` before its next decision (`learning.refresh_seconds` 0). A service on the priors, or one
    that does not learn again, or draws with another campaign's key, decides otherwise."""
    settings = learned_ledger
    home = tmp_path_factory.mktemp("learned_service")
    env = service_env(settings, home / "bentoml_home", CHURN_LEARNING__REFRESH_SECONDS="0")
    scores = pd.read_parquet(engine.interventions.scores_path)
    riskiest = scores.sort_values("churn_probability", ascending=False)["customer_id"]
    first_ids, second_ids = riskiest.head(40).tolist(), riskiest.iloc[40:80].tolist()
    with bentoml_service(env, home / "serve.log") as base:
        first = httpx.post(
            f"{base}/interventions", json={"customer_ids": first_ids, "campaign": "e2e-learned"}, timeout=60, headers=AUTH
        )
        assert first.status_code == 200, first.text
        expected, tag = _expected(settings, scores, first_ids, "e2e-learned")
        stale, _ = _expected(settings, scores, second_ids, "e2e-learned-2")  # what it would decide without learning
        # outcomes of those decisions arrive through the service; the next campaign learns from them
        outcomes = [
            {"campaign": "e2e-learned", "customer_id": d["customer_id"], "churned": True, "revenue": 0.0,
             "horizon_end": settings.now.isoformat()}
            for d in first.json()["decisions"]
        ]
        recorded = httpx.post(f"{base}/outcomes", json={"outcomes": outcomes}, timeout=60, headers=AUTH)
        assert recorded.status_code == 200 and recorded.json()["recorded"] == 40, recorded.text
        second = httpx.post(
            f"{base}/interventions", json={"customer_ids": second_ids, "campaign": "e2e-learned-2"}, timeout=60, headers=AUTH
        )
        assert second.status_code == 200, second.text
    assert tag == "effects:thompson(3/21 cells)"
    assert {d["model_version"].split(";")[-1] for d in first.json()["decisions"]} == {tag}
    pd.testing.assert_frame_equal(_answered(first), expected, rtol=1e-9)
    catalog = load_catalog(settings.actions_path)
    mine = scores.astype({"customer_id": str}).set_index("customer_id").loc[[str(c) for c in first_ids]].reset_index()
    priors = decide(mine, catalog, campaign="e2e-learned").set_index("customer_id")["action"].sort_index()
    assert (expected["action"] != priors).any(), "the learned effects change no decision: the check would not tell them apart"

    expected_second, tag_second = _expected(settings, scores, second_ids, "e2e-learned-2")
    assert {d["model_version"].split(";")[-1] for d in second.json()["decisions"]} == {tag_second}
    pd.testing.assert_frame_equal(_answered(second), expected_second, rtol=1e-9)
    # the 40 new outcomes move the posteriors of the cells they fall in, so the draws and expected values there
    moved = (expected_second["expected_value"] - stale["expected_value"]).abs()
    assert (moved > 1e-6).any(), "the new outcomes change nothing: the check would not tell learning again from not"
