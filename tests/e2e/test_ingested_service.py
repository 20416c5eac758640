"""One engine for every data set: ingest -> features -> train -> interventions -> `bentoml serve`, per shape.

Two small made-up companies, each run through the real CLI, Feast, MLflow, the ledger and a
real `bentoml serve` process, with text customer ids:
- a snapshot (one row per customer, a churn label, a monthly fee valued as fee x expected
  retained months, tenure in months), like IBM Telco;
- logs (a customers table of attributes since signup, activity events with tickets and
  complaints, monthly invoices; churn = no activity
  within 28 days), like a subscription app, valued by a CLV model of its invoices; failed card payments too.
Each must give an intervention list with several segments and actions, and a service that
scores (with reasons) and decides for ids taken from that list.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from serving.ledger import Ledger
from tests.e2e.ingested import check_list, check_service, cli, run_data_set
from tests.e2e.servers import AUTH, bentoml_service, service_env

def _snapshot_company(root) -> tuple[dict, datetime]:
    rng = np.random.default_rng(11)
    n = 1_500
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n, p=[0.55, 0.25, 0.2])
    tenure = rng.integers(0, 72, n)
    fee = rng.gamma(4.0, 16.0, n).round(2)
    logit = -1.2 + 1.5 * (contract == "Month-to-month") - 0.04 * tenure + 0.01 * (fee - 60)
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    pd.DataFrame(
        {
            "customerID": [f"{i:04d}-{''.join(rng.choice(list('ABCDEFGH'), 5))}" for i in range(n)],
            "Contract": contract,
            "tenure": tenure,
            "MonthlyCharges": fee,
            "Churn": np.where(churned, "Yes", "No"),
        }
    ).to_csv(root / "accounts.csv", index=False)
    config = {
        "name": "accounts",
        "data_root": str(root),
        "sources": {
            "customers": {
                "shape": "snapshot", "path": "accounts.csv", "customer_id": "customerID", "as_of": "2024-06-01",
                "label": "Churn", "positive": ["Yes"], "tenure": "tenure", "tenure_unit": "months",
                "columns": {"tenure": "int", "MonthlyCharges": "float"},
            }
        },
        "churn": {"definition": "label", "horizon_days": 30},
        "evaluation": {"folds": 3},
        "value": {"method": "charge", "column": "MonthlyCharges", "period_days": 30, "horizon_days": 365},
    }
    return config, datetime(2024, 6, 1, tzinfo=timezone.utc)


def _log_company(root) -> tuple[dict, datetime]:
    rng = np.random.default_rng(13)
    n, start, days = 900, datetime(2023, 1, 2, tzinfo=timezone.utc), 546
    ids = np.array([f"user-{i:04d}" for i in range(n)])
    signup = rng.integers(0, 200, n)
    life = rng.exponential(400, n).astype(int) + 30
    rate = rng.uniform(0.1, 0.7, n)
    events, invoices = [], []
    for i in range(n):
        last = min(days, signup[i] + life[i])
        day = np.arange(signup[i], last)
        # activity fades over the last 45 days before a customer leaves: an early warning
        fade = np.clip((last - day) / 45.0, 0.15, 1.0) if last < days else 1.0
        active = day[rng.random(len(day)) < rate[i] * fade]
        kinds = rng.choice(["login", "ticket", "complaint", "card_declined"], len(active), p=[0.83, 0.06, 0.05, 0.06])
        events.append(pd.DataFrame({"user": ids[i], "day": active, "type": kinds}))
        months = np.arange(signup[i], last, 30)
        invoices.append(pd.DataFrame({"user": ids[i], "day": months, "total": (rate[i] * 200 + 25).round(2)}))
    for name, frames in (("events", events), ("invoices", invoices)):
        table = pd.concat(frames, ignore_index=True)
        table["at"] = [(start + timedelta(days=int(d), hours=12)).isoformat() for d in table.pop("day")]
        table.to_csv(root / f"{name}.csv", index=False)
    # attributes fixed at signup (a customers source: known from each signup on, whatever its age)
    pd.DataFrame(
        {
            "user": ids,
            "joined": [(start + timedelta(days=int(d), hours=8)).isoformat() for d in signup],
            "plan": np.random.default_rng(99).choice(["basic", "pro"], n),
        }
    ).to_csv(root / "accounts.csv", index=False)
    config = {
        "name": "app",
        "data_root": str(root),
        "sources": {
            "accounts": {"shape": "customers", "path": "accounts.csv", "customer_id": "user", "signup": "joined"},
            "events": {
                "shape": "events", "path": "events.csv", "customer_id": "user", "timestamp": "at", "kind": "type",
                "signals": {
                    "activity": ["login"], "support_tickets": ["ticket"], "complaints": ["complaint"],
                    "failed_payments": ["card_declined"],
                },
            },
            "invoices": {"shape": "transactions", "path": "invoices.csv", "customer_id": "user", "timestamp": "at", "amount": "total"},
        },
        "churn": {"definition": "inactivity", "horizon_days": 28, "active_days": 91},
        "evaluation": {"rolling_cutoffs": 1, "train_cutoffs": 4, "train_spacing_days": 14},
        "value": {"method": "model", "horizon_days": 91},
    }
    return config, None


@pytest.fixture(scope="module", params=["snapshot", "logs"])
def company(request, tmp_path_factory):
    """One company through ingest, features, train and interventions."""
    root = tmp_path_factory.mktemp(request.param)
    config, now = (_snapshot_company if request.param == "snapshot" else _log_company)(root)
    (root / "company.yaml").write_text(yaml.safe_dump(config))
    settings, listing, out = run_data_set(root / "company.yaml", root, now)
    return settings, listing, out


def test_the_intervention_list_has_segments_actions_and_text_ids(company):
    _, listing, out = company
    check_list(listing, out)
    assert listing["customer_id"].str.contains(r"[A-Za-z-]").all()  # text ids kept as text


def test_the_service_scores_and_decides_for_ids_from_the_list(company, tmp_path):
    settings, listing, _ = company
    check_service(settings, listing, tmp_path)


def test_outcomes_of_the_first_campaign_teach_the_next_one_online_and_in_batch(company, tmp_path):
    """A data set with none of the simulator's signals learns from its outcomes: recorded from a file with
    `churn outcomes`, shown with their learned intervals by `churn measure`, and used by the service and by
    the next batch run alike (their model_version says how many cells were measured)."""
    settings, _, _ = company
    ledger = Ledger(settings.resolved_ledger_url)
    decided = ledger.campaign_decisions("first")
    ledger.close()
    acted = decided[decided["action"] != "none"]
    assert acted["holdout"].any() and (~acted["holdout"]).any()
    churned = np.random.default_rng(1).random(len(acted)) < np.where(acted["holdout"], 0.4, 0.2)
    outcomes = acted[["campaign", "customer_id"]].assign(churned=churned, revenue=10.0, horizon_end=settings.now.isoformat())
    outcomes.to_csv(tmp_path / "outcomes.csv", index=False)
    env = {
        "CHURN_DATA_DIR": str(settings.data_dir), "CHURN_MLRUNS_DIR": str(settings.mlruns_dir),
        "CHURN_NOW": settings.now.isoformat(), "CHURN_CONFIG": str(tmp_path / "absent.toml"),
    }
    assert f"{len(outcomes):,} new outcomes" in cli(["outcomes", "--from-file", str(tmp_path / "outcomes.csv")], env)
    cli(["measure"], env)
    measured = pd.read_csv(settings.outputs_dir / "measurement.csv")
    assert measured[["learned_effect", "learned_ci_low", "learned_ci_high"]].notna().all().all(), measured
    measured_cells = acted.groupby(["segment", "action"])["holdout"].nunique().eq(2).sum()
    tag = f";effects:thompson({measured_cells}/"

    ids = decided["customer_id"].head(5).tolist()
    with bentoml_service(service_env(settings, tmp_path / "bentoml_home"), tmp_path / "serve.log") as base:
        online = httpx.post(f"{base}/interventions", json={"customer_ids": ids, "campaign": "second"}, headers=AUTH, timeout=30)
    assert online.status_code == 200, online.text
    versions = {d["model_version"] for d in online.json()["decisions"]}
    assert len(versions) == 1 and tag in versions.pop(), online.json()
    assert f"action effects: {tag[1:]}" in cli(["interventions", "--campaign", "second"], env)
    ledger = Ledger(settings.resolved_ledger_url)
    second = ledger.campaign_decisions("second")
    ledger.close()
    assert second["model_version"].str.contains(tag, regex=False).all(), second["model_version"].unique()

