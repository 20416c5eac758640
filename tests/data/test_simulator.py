"""The embedded simulator: reproducible, inside the raw-data contract, and causally sane."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.raw import RAW_TABLES, validate_raw_dir
from churn.errors import DataError
from features.simulate import _NEVER, ACTIONS, CONFIG_FILE, SimulationResult, _new_world, simulate
from features.truth import SCENARIOS, customer_state, effect_matrix, untreated_outcomes, untreated_probability

N, DAYS = 300, 400
TRUTH_DATES = [date(2025, 9, 1), date(2025, 10, 1)]


def _read(raw_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(raw_dir / spec.file) for name, spec in RAW_TABLES.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, SimulationResult]:
    out = {}
    for key, seed in (("a", 11), ("a_again", 11), ("b", 12)):
        root = tmp_path_factory.mktemp(f"sim_{key}")
        out[key] = simulate(root / "raw", root / "truth", n_customers=N, days=DAYS, seed=seed, truth_dates=TRUTH_DATES)
    return out


@pytest.fixture(scope="module")
def tables(runs) -> dict[str, pd.DataFrame]:
    return _read(runs["a"].raw_dir)


@pytest.fixture(scope="module")
def large_run(tmp_path_factory) -> Path:
    """More customers, for the statistical checks (annual renewals, the truth's probabilities)."""
    root = tmp_path_factory.mktemp("sim_large")
    simulate(root / "raw", root / "truth", n_customers=2_000, days=DAYS, seed=5, truth_dates=TRUTH_DATES)
    return root


@pytest.fixture(scope="module")
def large(large_run) -> dict[str, pd.DataFrame]:
    return _read(large_run / "raw")


@pytest.fixture(scope="module")
def large_truth(large_run) -> tuple[Path, Path, np.ndarray]:
    return large_run / "raw", large_run / "truth", np.arange(1, 2_001)


def test_same_seed_same_tables(runs):
    first, again = _read(runs["a"].raw_dir), _read(runs["a_again"].raw_dir)
    for name in RAW_TABLES:
        pd.testing.assert_frame_equal(first[name], again[name], obj=name)
    for file in ("customers.parquet", "untreated.parquet"):
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


def test_truth_has_every_customer_and_an_effect_per_action_in_every_scenario(runs):
    hidden = pd.read_parquet(runs["a"].truth_dir / "customers.parquet")
    assert hidden["customer_id"].tolist() == list(range(1, N + 1))
    assert {f"noise_{a}" for a in ACTIONS} <= set(hidden.columns)
    state = customer_state(runs["a"].raw_dir, runs["a"].truth_dir, hidden["customer_id"].to_numpy(), datetime(2025, 9, 1, tzinfo=timezone.utc))
    for scenario in SCENARIOS:
        effects = effect_matrix(state, list(ACTIONS), scenario)
        assert effects.shape == (N, len(ACTIONS))
        assert np.isfinite(effects).all() and (effects >= -1).all() and (effects <= 1).all(), scenario
        # sleeping dogs are driven away by any contact, in every scenario
        assert (effects[state["sleeping_dog"].to_numpy()] < 0).all(), scenario


def test_scenarios_differ_as_documented(large_truth):
    raw_dir, truth_dir, ids = large_truth
    state = customer_state(raw_dir, truth_dir, ids, datetime(2025, 9, 1, tzinfo=timezone.utc))
    actions = list(ACTIONS)
    mean = {s: effect_matrix(state, actions, s).mean(axis=0) for s in SCENARIOS}
    discount, early = actions.index("discount_offer"), actions.index("early_warning_offer")
    # priors-wrong: the discount hurts, the early-warning offer works better than in priors-right
    assert mean["priors-wrong"][discount] < 0 < mean["priors-right"][discount]
    assert mean["priors-wrong"][early] > mean["priors-right"][early] + 0.1
    # heterogeneous: observable traits explain most of each action's variation
    explained = effect_matrix(state, actions, "heterogeneous", explained=True)
    full = effect_matrix(state, actions, "heterogeneous")
    r2 = 1 - ((full - explained) ** 2).sum(axis=0) / ((full - full.mean(axis=0)) ** 2).sum(axis=0)
    assert (r2 > 0.3).all(), dict(zip(actions, r2.round(2)))
    # lost causes answer no contact; others answer as in priors-right
    lost = state["lost"].to_numpy() & ~state["sleeping_dog"].to_numpy()
    assert lost.sum() > 20
    lc, pr = effect_matrix(state, actions, "lost-causes"), effect_matrix(state, actions, "priors-right")
    assert np.abs(lc[lost]).mean() < 0.05 < pr[lost].mean()
    assert np.array_equal(lc[~state["lost"].to_numpy()], pr[~state["lost"].to_numpy()])


def test_untreated_probability_is_calibrated_and_ranks_outcomes(large_truth):
    """The truth's untreated churn probability (from continuations of the world) matches what happened."""
    raw_dir, truth_dir, _ = large_truth
    table = pd.read_parquet(truth_dir / "untreated.parquet")
    for day in sorted(set(table["as_of"])):
        rows = table[table["as_of"] == day]
        as_of = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        y = untreated_outcomes(raw_dir, rows["customer_id"].to_numpy(), as_of, 30)["churned"].to_numpy()
        p = untreated_probability(truth_dir, rows["customer_id"].to_numpy(), as_of)
        assert y.sum() >= 30, day
        # the expected count of churners within four standard deviations of what happened
        assert abs(p.sum() - y.sum()) < 4 * np.sqrt((p * (1 - p)).sum()) + 3, (day, p.sum(), y.sum())
        assert roc_auc_score(y, p) > 0.75, day


def test_untreated_probability_only_at_truth_dates(runs):
    with pytest.raises(DataError, match="no untreated churn probabilities at 2025-09-02.*2025-09-01"):
        untreated_probability(runs["a"].truth_dir, np.array([1]), datetime(2025, 9, 2, tzinfo=timezone.utc))
    with pytest.raises(ValueError, match="outside the simulated span"):
        simulate(runs["a"].raw_dir.parent / "x", runs["a"].raw_dir.parent / "y", n_customers=N, days=DAYS, truth_dates=[date(2025, 12, 1)])


def test_a_one_day_fall_ends(tmp_path):
    """A decline of one day, begun today, ends tomorrow (it once never ended, freezing the customer at the floor)."""
    rng = np.random.default_rng(0)
    world = _new_world(rng, 50, DAYS)
    world.signup_day[:] = -100
    world.dis_start[:] = 10
    world.dis_len[:] = 1
    world.recovers[:] = np.arange(50) % 2 == 0
    world.live(11, rng, None)
    recovering = world.recovers & (world.cancel_day == _NEVER)
    assert (world.dis_start[recovering] == _NEVER).all()  # recovered: calm again
    assert (world.cancel_day[~world.recovers] < _NEVER).all()  # the others leave


def test_truth_is_kept_out_of_the_raw_folder(runs):
    raw_files = {p.name for p in runs["a"].raw_dir.iterdir()}
    # the tables, their manifest and their contract config (what `churn ingest` reads): no truth
    assert raw_files == {spec.file for spec in RAW_TABLES.values()} | {"manifest.json", CONFIG_FILE}
