"""The documented path on a company's own tables: `churn ingest --config` -> features -> train.

The "company" here is the session engine's simulated subscription business, described by a
config like any other (snapshot + events + transactions + cancellations, churn from
explicit cancellation dates), and run through the real CLI, Feast and MLflow.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from churn.cli import app
from churn.settings import load_settings
from training.calibration import apply_map
from training.dataset import to_matrix
from training.registry import load_champion


@pytest.fixture(scope="module")
def company(engine, tmp_path_factory):
    """A config over the simulator's raw Parquet tables, and an empty project folder."""
    root = tmp_path_factory.mktemp("byod")
    config = {
        "name": "subscriptions",
        "data_root": str(engine.settings.raw_dir),
        "sources": {
            "customers": {
                "shape": "snapshot",
                "path": "customers.parquet",
                "customer_id": "customer_id",
                "signup": "signup_at",
                "as_of": "2024-11-01",
                "ignore": ["region"],
            },
            "events": {"shape": "events", "path": "events.parquet", "customer_id": "customer_id", "timestamp": "event_time", "kind": "event_type", "values": ["value"]},
            "payments": {"shape": "transactions", "path": "transactions.parquet", "customer_id": "customer_id", "timestamp": "transaction_time", "amount": "amount", "kind": "kind"},
            "cancellations": {"shape": "cancellations", "path": "cancellations.parquet", "customer_id": "customer_id", "timestamp": "cancelled_at"},
        },
        "churn": {"definition": "cancellations", "horizon_days": 28, "active_days": 91},
        "evaluation": {"rolling_cutoffs": 1, "train_cutoffs": 4, "train_spacing_days": 14},
    }
    path = root / "company.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"CHURN_DATA_DIR": str(root / "data"), "CHURN_MLRUNS_DIR": str(root / "mlruns")}
    return path, root, env


def _run(args: list[str], env: dict) -> str:
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow  # about 2 minutes on 2 idle cores: an evaluation and a final fit, each a 5-setting search
def test_ingest_features_train_through_the_cli(company):
    path, root, env = company
    out = _run(["ingest", "--config", str(path)], env)
    assert "2,000 customers" in out
    _run(["features", "build"], env)
    out = _run(["features", "apply"], env)
    assert "subscriptions_churn_v1" in out and "subscriptions_events" in out
    out = _run(["train"], env)
    assert "subscriptions-churn" in out

    assert "subscriptions-clv" in out  # a transactions source: the value is a revenue model

    # the registered booster, loaded as the service loads it, ranks like the model that was evaluated
    settings = load_settings(data_dir=root / "data", mlruns_dir=root / "mlruns")
    model = load_champion(settings, "subscriptions-churn")
    assert load_champion(settings, "subscriptions-clv").extra["segment_edges"] == model.extra["segment_edges"]
    tables = root / "data" / "feast" / "tables"
    events = pd.read_parquet(tables / "subscriptions_events.parquet")
    payments = pd.read_parquet(tables / "subscriptions_payments.parquet")
    customers = pd.read_parquet(tables / "subscriptions_customers.parquet").drop(columns="event_timestamp")
    latest = events[events["event_timestamp"] == events["event_timestamp"].max()]
    frame = latest.merge(payments, on=["customer_id", "event_timestamp"], how="left").merge(customers, on="customer_id")
    scores = apply_map(model.extra["calibration"], model.booster.predict(to_matrix(frame, model.feature_names, model.categories)))
    assert len(scores) == len(frame) and ((scores >= 0) & (scores <= 1)).all()
    # customers who show no activity for weeks must look riskier than the most active ones
    idle = frame["events_recency_days"] >= 28
    assert idle.any() and scores[idle.to_numpy()].mean() > scores[~idle.to_numpy()].mean()


def test_a_failed_ingest_through_the_cli_names_the_problem(company, tmp_path):
    path, root, env = company
    bad = yaml.safe_load(path.read_text())
    bad["sources"]["payments"]["amount"] = "no_such_column"
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(yaml.safe_dump(bad))
    result = CliRunner().invoke(app, ["ingest", "--config", str(bad_path)], env=env)
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "column 'no_such_column' is required by the config but missing" in output
