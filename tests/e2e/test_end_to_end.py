"""The whole path on a small population, through a real `bentoml serve` process."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest

from serving.ledger import Ledger

from tests.e2e.servers import AUTH, bentoml_service, service_env

LIST_REQUIRED = [
    "customer_id", "segment", "churn_probability", "clv", "action", "channel", "cost", "reason",
    "model_version", "decided_at",
]


def test_intervention_list(engine):
    run = engine.interventions
    listing = pd.read_csv(run.list_csv)
    assert run.list_parquet.exists()
    assert set(LIST_REQUIRED) <= set(listing.columns)
    assert len(listing) == run.n_actions > 0
    assert listing["customer_id"].is_unique
    assert (listing["action"] != "none").all()
    assert (listing["expected_value"] > 0).all()
    assert listing["model_version"].str.contains(f"churn-risk/{engine.training.churn_version}").all()
    # every listed customer is an active customer that was scored
    scores = pd.read_parquet(run.scores_path)
    assert set(listing["customer_id"]) <= set(scores["customer_id"])
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
    scores = pd.read_parquet(engine.interventions.scores_path).set_index("customer_id")
    known = scores.index[:5].tolist()
    unknown = 10_000_000
    response = httpx.post(f"{service}/score", json={"customer_ids": [*known, unknown]}, timeout=30, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["customer_id"] for s in body["scores"]] == known
    assert body["errors"] == [{"customer_id": unknown, "error": "unknown customer: the online store has no features for this id"}]
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
    wrong_type = httpx.post(f"{service}/score", json={"customer_ids": ["abc"]}, timeout=30, headers=AUTH)
    assert wrong_type.status_code == 400
    assert "customer_ids" in wrong_type.text


def test_interventions_endpoint_records_once(engine, service):
    listing = pd.read_csv(engine.interventions.list_csv)
    ids = listing["customer_id"].head(3).tolist()
    unknown = 10_000_001
    payload = {"customer_ids": [*ids, unknown], "campaign": "e2e-online"}
    first = httpx.post(f"{service}/interventions", json=payload, timeout=30, headers=AUTH)
    assert first.status_code == 200, first.text
    body = first.json()
    assert sorted(d["customer_id"] for d in body["decisions"]) == sorted(ids)
    assert [e["customer_id"] for e in body["errors"]] == [unknown]
    # the same customers get the same actions online as in the batch list (same models, same features)
    batch_actions = dict(zip(listing["customer_id"], listing["action"]))
    # ... unless the batch campaign's contact still holds them in a cooldown (then 'none')
    assert all(d["action"] in (batch_actions[d["customer_id"]], "none") for d in body["decisions"])

    again = httpx.post(f"{service}/interventions", json=payload, timeout=30, headers=AUTH).json()
    assert [d["decided_at"] for d in again["decisions"]] == [d["decided_at"] for d in body["decisions"]]
    ledger = Ledger(engine.settings.resolved_ledger_url)
    recorded = ledger.campaign_decisions("e2e-online")
    ledger.close()
    assert sorted(recorded["customer_id"]) == sorted(ids)
