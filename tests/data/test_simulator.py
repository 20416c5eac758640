"""The embedded simulator: reproducible, inside the raw-data contract, and causally sane."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from features.raw import RAW_TABLES, validate_raw_dir
from features.simulate import ACTIONS, CONFIG_FILE, SimulationResult, simulate

N, DAYS = 300, 400


def _read(raw_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(raw_dir / spec.file) for name, spec in RAW_TABLES.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, SimulationResult]:
    out = {}
    for key, seed in (("a", 11), ("a_again", 11), ("b", 12)):
        root = tmp_path_factory.mktemp(f"sim_{key}")
        out[key] = simulate(root / "raw", root / "truth", n_customers=N, days=DAYS, seed=seed)
    return out


@pytest.fixture(scope="module")
def tables(runs) -> dict[str, pd.DataFrame]:
    return _read(runs["a"].raw_dir)


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """More customers, for the statistical checks (annual renewals)."""
    root = tmp_path_factory.mktemp("sim_large")
    simulate(root / "raw", root / "truth", n_customers=1_500, days=DAYS, seed=5)
    return _read(root / "raw")


def test_same_seed_same_tables(runs):
    first, again = _read(runs["a"].raw_dir), _read(runs["a_again"].raw_dir)
    for name in RAW_TABLES:
        pd.testing.assert_frame_equal(first[name], again[name], obj=name)
    for file in ("responses.parquet", "customers.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(runs["a"].truth_dir / file), pd.read_parquet(runs["a_again"].truth_dir / file), obj=file
        )


def test_different_seed_different_tables(runs):
    first, other = _read(runs["a"].raw_dir), _read(runs["b"].raw_dir)
    for name in RAW_TABLES:
        assert not first[name].equals(other[name]), name


def test_tables_pass_the_contract(runs):
    validate_raw_dir(runs["a"].raw_dir)


def test_result_counts_match_the_files(runs, tables):
    result = runs["a"]
    assert result.n_customers == N == len(tables["customers"])
    assert result.n_events == len(tables["events"]) > 0
    assert result.n_transactions == len(tables["transactions"]) > 0
    assert result.n_cancellations == len(tables["cancellations"]) > 0
    assert result.as_of == datetime(2025, 12, 6, tzinfo=timezone.utc)  # 2024-11-01 + 400 days


def test_timestamps_are_utc_and_inside_the_simulated_span(runs, tables):
    end = pd.Timestamp(runs["a"].as_of)
    for name, spec in RAW_TABLES.items():
        column = tables[name][spec.time_column]
        assert str(column.dt.tz) == "UTC", name
        assert column.max() < end, name
    for name in ("events", "transactions", "cancellations"):
        assert tables[name][RAW_TABLES[name].time_column].min() >= pd.Timestamp("2024-11-01", tz="UTC"), name


def test_ids_and_categories(tables):
    customers = tables["customers"]
    assert customers["customer_id"].tolist() == list(range(1, N + 1))
    assert set(customers["plan"]) == {"monthly", "annual"}
    assert set(customers["price_tier"]) <= {"basic", "standard", "premium"}
    for name in ("events", "transactions", "cancellations"):
        assert set(tables[name]["customer_id"]) <= set(customers["customer_id"]), name
    # a customer cancels at most once
    assert not tables["cancellations"]["customer_id"].duplicated().any()
    assert set(tables["cancellations"]["reason"]) <= {"voluntary", "payment_failed"}


@pytest.mark.parametrize("table", ["events", "transactions", "cancellations"])
def test_nothing_happens_before_signup(tables, table):
    time_column = RAW_TABLES[table].time_column
    rows = tables[table].merge(tables["customers"][["customer_id", "signup_at"]], on="customer_id")
    early = rows[rows[time_column] < rows["signup_at"]]
    n_early = len(early)
    assert n_early == 0, (
        f"{n_early} {table} rows precede their customer's signup_at, e.g.\n"
        f"{early[['customer_id', 'signup_at', time_column]].head().to_string()}"
    )


@pytest.mark.parametrize("table", ["events", "transactions"])
@pytest.mark.parametrize("population", ["tables", "large"])
def test_nothing_happens_after_cancellation(request, population, table):
    data = request.getfixturevalue(population)
    time_column = RAW_TABLES[table].time_column
    rows = data[table].merge(data["cancellations"][["customer_id", "cancelled_at"]], on="customer_id")
    late = rows[rows[time_column] >= rows["cancelled_at"]]
    n_late = len(late)
    assert n_late == 0, (
        f"{n_late} {table} rows come at or after their customer's cancelled_at, e.g.\n"
        f"{late[['customer_id', 'cancelled_at', time_column]].head().to_string()}"
    )


def test_annual_customers_mostly_cancel_near_renewal(large):
    rows = large["cancellations"].merge(large["customers"], on="customer_id")
    days_in = (rows["cancelled_at"].dt.floor("D") - rows["signup_at"].dt.floor("D")).dt.days
    # renewal day, or up to four days after it (a failed renewal payment is retried 3 days later)
    near_renewal = (days_in % 365) <= 4
    annual = rows["plan"] == "annual"
    assert annual.sum() >= 20
    assert near_renewal[annual].mean() > 0.5
    # by chance, 5 days out of 365 would hold ~1.4%: monthly customers are not tied to the annual date
    assert near_renewal[~annual].mean() < 0.1


def test_monthly_customers_cancel_on_a_billing_day(large):
    rows = large["cancellations"].merge(large["customers"], on="customer_id")
    monthly = rows[(rows["plan"] == "monthly") & (rows["reason"] == "voluntary")]
    days_in = (monthly["cancelled_at"].dt.floor("D") - monthly["signup_at"].dt.floor("D")).dt.days
    assert len(monthly) >= 50
    assert (days_in % 30 == 0).mean() > 0.9


def test_truth_has_one_response_per_customer_per_action(runs):
    responses = pd.read_parquet(runs["a"].truth_dir / "responses.parquet")
    assert len(responses) == N * len(ACTIONS)
    assert set(responses["action"]) == set(ACTIONS)
    assert not responses.duplicated(["customer_id", "action"]).any()
    assert set(responses["customer_id"]) == set(range(1, N + 1))
    assert responses["true_effect"].between(-1, 1).all()


def test_truth_is_kept_out_of_the_raw_folder(runs):
    raw_files = {p.name for p in runs["a"].raw_dir.iterdir()}
    # the tables, their manifest and their contract config (what `churn ingest` reads): no truth
    assert raw_files == {spec.file for spec in RAW_TABLES.values()} | {"manifest.json", CONFIG_FILE}
