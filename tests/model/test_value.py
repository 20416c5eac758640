"""One engine's model family on ingested data: the merged booster, the value methods, the CLV model.

The transactions data set is small and synthetic (300 customers, a year of purchases, some
customers stop buying) so that `churn train` through the real CLI, Feast and MLflow takes
seconds; it must register `<name>-clv` beside `<name>-churn`, both loadable by the registry
readers the service uses.
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from churn.cli import app
from churn.errors import DataError
from features.contract import Contract, load_contract
from training.registered import load_fetched
from training.registry import fetch_alias
from training.tuning import merged_booster
from training.value import customer_value, expected_periods, segment_edges

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_merged_booster_scores_and_explains_as_the_mean_of_its_parts():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 4))
    X[:, 3] = rng.integers(0, 6, 2000)  # categorical
    y = (X[:, 0] + X[:, 1] * X[:, 2] + (X[:, 3] == 3) + rng.normal(size=2000) > 0.5).astype(int)
    parts = [
        lgb.train(
            {"objective": "binary", "num_leaves": leaves, "verbosity": -1, "seed": seed, "num_threads": 1},
            lgb.Dataset(X, y, categorical_feature=[3]), num_boost_round=rounds,
        )
        for seed, leaves, rounds in ((1, 2, 30), (2, 8, 50), (3, 31, 20))
    ]
    merged = merged_booster(parts)
    assert merged.num_trees() == sum(p.num_trees() for p in parts)
    raw = np.mean([p.predict(X, raw_score=True) for p in parts], axis=0)
    np.testing.assert_allclose(merged.predict(X, raw_score=True), raw, rtol=0, atol=1e-12)
    np.testing.assert_allclose(merged.predict(X), 1 / (1 + np.exp(-raw)), rtol=0, atol=1e-12)
    contrib = np.mean([p.predict(X, pred_contrib=True) for p in parts], axis=0)
    np.testing.assert_allclose(merged.predict(X, pred_contrib=True), contrib, rtol=0, atol=1e-12)
    # its saved text is a model LightGBM reads back the same
    reread = lgb.Booster(model_str=merged.model_to_string())
    np.testing.assert_allclose(reread.predict(X, raw_score=True), raw, rtol=0, atol=1e-12)


def _spec(method: str, **kw) -> dict:
    base = {"method": method, "column": None, "source_column": None, "period_days": 30, "horizon_days": 360, "amount": 100.0, "churn_horizon_days": 90}
    return base | kw


def test_a_charge_is_worth_its_expected_retained_periods():
    p = np.array([0.0, 0.1, 0.5, 0.99])
    charge = np.array([20.0, 50.0, 70.0, 100.0])
    spec = _spec("charge", column="monthlycharges", source_column="MonthlyCharges")
    value = customer_value(spec, {"monthlycharges": charge}, p, None)
    q = 1 - (1 - p) ** (30 / 90)
    expected = charge * np.array([sum((1 - qi) ** m for m in range(12)) for qi in q])
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert value[0] == 12 * 20.0  # nobody leaves: every one of the 12 charges is paid
    np.testing.assert_allclose(expected_periods(np.array([0.5]), 30, 90, 90), [1 + 0.5 ** (1 / 3) + 0.5 ** (2 / 3)])


def test_other_values_and_their_errors():
    p = np.array([0.2, 0.4])
    assert customer_value(_spec("constant"), {}, p, None).tolist() == [100.0, 100.0]
    assert customer_value(_spec("column", column="fee", source_column="Fee"), {"fee": np.array([3.0, 4.0])}, p, None).tolist() == [3.0, 4.0]
    assert customer_value(_spec("model"), {}, p, np.array([-1.0, 5.0])).tolist() == [0.0, 5.0]
    with pytest.raises(DataError, match=r"value.column 'Fee' \(feature 'fee'\) must be a non-negative number .* 1 of 2"):
        customer_value(_spec("column", column="fee", source_column="Fee"), {"fee": np.array([np.nan, 4.0])}, p, None)
    with pytest.raises(ValueError, match="needs the CLV model's predictions"):
        customer_value(_spec("model"), {}, p, None)


def test_a_constant_value_gives_one_segment():
    edges, constant = segment_edges(np.full(50, 200.0))
    assert constant and edges == [200.0, 200.0]
    edges, constant = segment_edges(np.arange(101.0))
    assert not constant and edges == [50.0, 80.0]


def test_existing_configs_validate_unchanged_and_default_their_value():
    configs = [p for p in EXAMPLES.iterdir() if not p.stem.endswith("_actions")]  # catalogs are not configs
    methods = {path.name: load_contract(path)[0].value_method for path in configs}
    assert methods == {"telco.yaml": "charge", "cdnow.toml": "model", "online_retail.yaml": "model"}


def _snapshot_config(**value) -> dict:
    source = {"shape": "snapshot", "path": "a.csv", "customer_id": "id", "as_of": "2024-06-01", "label": "Churn", "columns": {"plan": "categorical"}}
    return {"name": "x", "sources": {"customers": source}, "churn": {"definition": "label"}, "value": value}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"method": "charge"}, "value.method 'charge' needs value.column"),
        ({"method": "model"}, "value.method 'model' needs a transactions source"),
        ({"method": "column", "column": "plan"}, "value.column 'plan' must be a numeric column of the snapshot; it is declared categorical"),
        ({"method": "constant", "column": "fee"}, "value.column is read by the methods 'charge' and 'column' only"),
        ({"method": "constant", "amount": -1}, "greater than or equal to 0"),
    ],
)
def test_a_bad_value_key_is_named(value, message):
    with pytest.raises(ValidationError, match=message):
        Contract.model_validate(_snapshot_config(**value))


def _purchases(n: int, seed: int) -> pd.DataFrame:
    """A year of purchases; a third of the customers stop buying at a random day."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01")
    rows = []
    for i in range(n):
        rate = rng.uniform(0.03, 0.2)  # purchases a day
        basket = rng.uniform(10, 80)
        stop = rng.integers(60, 366) if rng.random() < 0.35 else 366
        days = np.cumsum(rng.exponential(1 / rate, 200))
        for day in days[days < stop]:
            rows.append((f"R{i:04d}", start + pd.Timedelta(days=float(day)), round(basket * rng.uniform(0.5, 1.5), 2)))
    return pd.DataFrame(rows, columns=["cust", "at", "total"])


@pytest.fixture(scope="module")
def retail(tmp_path_factory):
    root = tmp_path_factory.mktemp("retail")
    _purchases(300, seed=4).to_csv(root / "orders.csv", index=False)
    config = {
        "name": "shop",
        "data_root": str(root),
        "sources": {"orders": {"shape": "transactions", "path": "orders.csv", "customer_id": "cust", "timestamp": "at", "amount": "total"}},
        "churn": {"definition": "inactivity", "horizon_days": 28, "active_days": 91},
        "evaluation": {"rolling_cutoffs": 2, "cutoff_spacing_days": 14, "train_cutoffs": 4, "train_spacing_days": 14},
        "value": {"horizon_days": 56},
    }
    (root / "shop.yaml").write_text(yaml.safe_dump(config))
    # the engine's clock at the end of the data (weekly log features go stale after 14 days)
    env = {"CHURN_DATA_DIR": str(root / "data"), "CHURN_MLRUNS_DIR": str(root / "mlruns"), "CHURN_NOW": "2025-01-01T00:00:00+00:00"}
    for args in (["ingest", "--config", str(root / "shop.yaml")], ["features", "build"], ["features", "apply"], ["train"]):
        result = CliRunner().invoke(app, args, env=env, terminal_width=400)
        assert result.exit_code == 0, result.output
    return root, env, " ".join(result.output.split())


def test_a_transactions_data_set_registers_its_value_model(retail):
    from churn.settings import load_settings

    root, env, out = retail
    assert "value: model; segment edges" in out and "value model version 1: MAE" in out
    settings = load_settings(data_dir=root / "data", mlruns_dir=root / "mlruns")
    churn = load_fetched(fetch_alias(settings, "shop-churn", "champion"))
    clv = load_fetched(fetch_alias(settings, "shop-clv", "champion"))
    assert churn.feature_service == clv.feature_service == "shop_churn_v1"
    assert churn.extra["value"]["method"] == "model" and not churn.extra["value"]["constant"]
    assert clv.extra["segment_edges"] == churn.extra["segment_edges"] and clv.extra["horizon_days"] == 56
    low, high = churn.extra["segment_edges"]
    assert 0 < low < high
    assert churn.booster.num_trees() > 0 and clv.booster.num_trees() > 0

    # the run's HTML report, logged with the run, has every section, the CLV model's included
    from training.report import SECTIONS

    report = next((root / "data").rglob(f"train-{churn.run_id}.html")).read_text()
    assert all(f'id="{key}"' in report for key in SECTIONS)
    assert "Value: predicted revenue over 56 days" in report and "<h3>CLV model</h3>" in report
    assert mlflow.artifacts.list_artifacts(run_id=churn.run_id, artifact_path="report")

    result = CliRunner().invoke(app, ["score"], env=env, terminal_width=400)
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(next((root / "data").rglob("scores_*.parquet")))
    assert (scores["clv"] >= 0).all() and scores["churn_probability"].between(0, 1).all()
    assert set(scores["segment"]) == {"low", "medium", "high"}
    # a customer likelier to stay buys more over the value horizon: value ranks against risk
    assert np.corrcoef(scores["clv"], scores["churn_probability"])[0, 1] < 0


def test_promote_moves_the_value_model_with_the_churn_model(retail):
    root, env, _ = retail
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")

    def aliases(name: str) -> dict[str, str]:
        return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}

    for args in (["train"], ["promote"]):
        result = CliRunner().invoke(app, args, env=env, terminal_width=400)
        assert result.exit_code == 0, result.output
        if args == ["train"]:
            assert aliases("shop-churn") == aliases("shop-clv") == {"champion": "1", "challenger": "2"}
    assert "promoted" in " ".join(result.output.split())
    assert aliases("shop-churn") == aliases("shop-clv") == {"champion": "2"}


def test_a_value_horizon_longer_than_the_data_is_named(retail, tmp_path):
    root, env, _ = retail
    config = yaml.safe_load((root / "shop.yaml").read_text())
    config["value"]["horizon_days"] = 400
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(config))
    env = {"CHURN_DATA_DIR": str(tmp_path / "data"), "CHURN_MLRUNS_DIR": str(tmp_path / "mlruns")}
    for args in (["ingest", "--config", str(tmp_path / "long.yaml")], ["features", "build"], ["features", "apply"]):
        assert CliRunner().invoke(app, args, env=env).exit_code == 0
    result = CliRunner().invoke(app, ["train"], env=env, terminal_width=400)
    assert result.exit_code == 1
    assert "value.horizon_days = 400 leaves 0 cutoff" in " ".join(result.output.split())


def test_a_charge_value_is_scored_from_its_snapshot_column(tmp_path):
    rng = np.random.default_rng(5)
    n = 600
    fee = rng.uniform(20, 110, n).round(2)
    tenure = rng.integers(1, 72, n)
    churned = rng.random(n) < 1 / (1 + np.exp(-(0.5 - 0.05 * tenure + 0.01 * (fee - 60))))
    pd.DataFrame({"id": [f"T{i}" for i in range(n)], "tenure": tenure, "MonthlyFee": fee, "Churn": np.where(churned, "Yes", "No")}).to_csv(
        tmp_path / "t.csv", index=False
    )
    config = {
        "name": "tel",
        "data_root": str(tmp_path),
        "sources": {"customers": {"shape": "snapshot", "path": "t.csv", "customer_id": "id", "as_of": "2024-06-01", "label": "Churn", "positive": ["Yes"]}},
        "churn": {"definition": "label", "horizon_days": 30},
        "evaluation": {"folds": 2},
        "value": {"method": "charge", "column": "MonthlyFee", "period_days": 30, "horizon_days": 360},
    }
    (tmp_path / "tel.yaml").write_text(yaml.safe_dump(config))
    env = {"CHURN_DATA_DIR": str(tmp_path / "data"), "CHURN_MLRUNS_DIR": str(tmp_path / "mlruns")}
    for args in (["ingest", "--config", str(tmp_path / "tel.yaml")], ["features", "build"], ["features", "apply"], ["train"], ["score"]):
        result = CliRunner().invoke(app, args, env=env, terminal_width=400)
        assert result.exit_code == 0, result.output
    scores = pd.read_parquet(next((tmp_path / "data").rglob("scores_*.parquet")))
    truth = pd.read_csv(tmp_path / "t.csv").set_index("id").loc[scores["customer_id"].astype(str)]
    # value = fee x expected retained months of the next 12, at the served (calibrated) probability
    expected = truth["MonthlyFee"].to_numpy() * expected_periods(scores["churn_probability"].to_numpy(), 30, 360, 30)
    np.testing.assert_allclose(scores["clv"], expected, rtol=1e-9)
    assert set(scores["segment"]) == {"low", "medium", "high"}


def test_a_calibration_that_did_not_help_is_registered_as_the_identity():
    from training.calibration import apply_map
    from training.train import KeptRaw

    kept = KeptRaw(ece_raw=0.055, ece_calibrated=0.085)
    p = np.array([0.001, 0.2, 0.5, 0.93])
    assert np.allclose(apply_map(kept.to_dict(), p), p, atol=1e-9)  # what serving applies
    assert np.array_equal(kept.predict(p), p) and "0.0550 without calibration" in kept.to_dict()["why"]
