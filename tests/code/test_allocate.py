"""Allocation never exceeds the budget, a capacity or one action per customer (property tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.allocate import NONE, allocate, exact_allocate, greedy_allocate
from serving.policy import NO_ACTION, ActionCatalog, decide, expected_values, load_catalog


@st.composite
def _problems(draw):
    """Random values (some not allowed), costs, budget and capacities."""
    n = draw(st.integers(0, 40))
    m = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = rng.normal(2.0, 5.0, (n, m))
    values[rng.random((n, m)) < 0.3] = -np.inf
    costs = np.round(rng.choice([0.0, 0.1, 1.0, 5.0, 25.0], m) * rng.uniform(0.5, 1.5, m), 2)
    budget = draw(st.one_of(st.none(), st.floats(0, 300, allow_nan=False)))
    capacities = [draw(st.one_of(st.none(), st.integers(0, 10))) for _ in range(m)]
    return values, costs, budget, capacities


def _check_limits(choice, values, costs, budget, capacities):
    taken = choice[choice != NONE]
    if budget is not None:
        assert costs[taken].sum() <= budget
    counts = np.bincount(taken, minlength=len(costs))
    for j, cap in enumerate(capacities):
        assert cap is None or counts[j] <= cap
    assert (values[np.flatnonzero(choice != NONE), taken] > 0).all()


@settings(max_examples=150, deadline=None)
@given(_problems())
def test_allocation_respects_budget_capacity_and_positive_value(problem):
    values, costs, budget, capacities = problem
    for allocator in (allocate, exact_allocate, greedy_allocate):
        choice = allocator(values, costs, budget, capacities)
        assert choice.shape == (len(values),)
        _check_limits(choice, values, costs, budget, capacities)


def _total(values, choice):
    rows = np.flatnonzero(choice != NONE)
    return values[rows, choice[rows]].sum()


@settings(max_examples=80, deadline=None)
@given(_problems())
def test_exact_allocation_is_at_least_as_good_as_the_heuristics(problem):
    values, costs, budget, capacities = problem
    exact = _total(values, exact_allocate(values, costs, budget, capacities))
    for allocator in (allocate, greedy_allocate):
        assert exact >= _total(values, allocator(values, costs, budget, capacities)) * (1 - 1e-4) - 1e-9


def test_hull_greedy_is_near_optimal_on_a_scored_population():
    """The packaged catalog on 2,000 customers, under a budget that binds."""
    rng = np.random.default_rng(5)
    n = 2_000
    scored = pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "churn_probability": rng.beta(1.2, 6.0, n),
            "clv": rng.gamma(2.0, 150.0, n),
            "segment": rng.choice(["low", "medium", "high"], n),
            "risk_band": rng.choice(["medium", "high"], n),
            "tenure_days": rng.integers(0, 800, n),
            "activity_trend_7d_28d": rng.uniform(0, 2, n),
            "complaints_28d": rng.integers(0, 2, n),
            "payment_failures_28d": rng.integers(0, 2, n),
        }
    )
    catalog = load_catalog().model_copy(update={"budget": 800.0})
    values = expected_values(scored, catalog)
    args = (values, catalog.costs, catalog.budget, catalog.capacities)
    best_each = _total(values, np.where((values > 0).any(axis=1), values.argmax(axis=1), NONE))
    exact = _total(values, exact_allocate(*args))
    assert exact < 0.9 * best_each  # the limits bind
    assert _total(values, allocate(*args)) >= 0.99 * exact
    # the plain ratio greedy is the strawman the hull greedy improves on
    assert _total(values, greedy_allocate(*args)) < 0.95 * exact


def test_without_limits_every_customer_gets_their_best_positive_action():
    values = np.array([[1.0, 3.0], [-1.0, -np.inf], [5.0, 4.0]])
    assert allocate(values, np.array([1.0, 1.0])).tolist() == [1, NONE, 0]


def test_budget_prefers_the_most_value_per_budget():
    # one expensive big win (cost 10, value 12) or two cheap ones (cost 5 each, value 7 each)
    values = np.array([[12.0, -np.inf], [-np.inf, 7.0], [-np.inf, 7.0]])
    assert allocate(values, np.array([10.0, 5.0]), budget=10.0).tolist() == [NONE, 1, 1]


def test_capacity_moves_customers_to_their_next_best_action():
    values = np.array([[10.0, 9.0], [8.0, 1.0]])
    assert allocate(values, np.array([1.0, 1.0]), capacities=[1, None]).tolist() == [1, 0]


# --- the same properties through `decide` on random catalogs ---------------------------------


@st.composite
def _catalogs(draw):
    m = draw(st.integers(1, 4))
    actions = [
        {
            "name": f"a{j}",
            "channel": "email",
            "cost": draw(st.sampled_from([0.0, 0.5, 2.0, 10.0, 30.0])),
            "effect": draw(st.floats(-0.2, 0.6)),
            "reason": "r",
            "segments": draw(st.lists(st.sampled_from(["low", "medium", "high"]), min_size=1, unique=True)),
            "risk_bands": ["low", "medium", "high"],
            "lifecycle_stages": draw(st.lists(st.sampled_from(["new", "lapsing", "at_risk", "established"]), min_size=1, unique=True)),
            "capacity": draw(st.one_of(st.none(), st.integers(0, 15))),
        }
        for j in range(m)
    ]
    budget = draw(st.one_of(st.none(), st.floats(0, 200, allow_nan=False)))
    explore = draw(st.sampled_from([0.0, 0.1, 0.5]))
    return ActionCatalog.model_validate(
        {"risk_bands": {"medium": 0.1, "high": 0.3}, "budget": budget, "explore_share": explore, "actions": actions}
    )


@settings(max_examples=60, deadline=None)
@given(_catalogs(), st.integers(0, 2**32 - 1))
def test_decide_never_exceeds_budget_or_capacity(catalog, seed):
    """With or without exploration: budget, capacities and cooldowns hold."""
    rng = np.random.default_rng(seed)
    n = 60
    scored = pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "churn_probability": rng.uniform(0, 1, n),
            "clv": rng.gamma(2.0, 100.0, n),
            "segment": rng.choice(["low", "medium", "high"], n),
            "risk_band": rng.choice(["low", "medium", "high"], n),
            "tenure_days": rng.integers(0, 900, n),
            "days_since_last_active": rng.integers(0, 60, n),
            "activity_trend_7d_28d": rng.uniform(0, 2, n),
        }
    )
    blocked = rng.random((n, len(catalog.actions))) < 0.2
    decisions = decide(scored, catalog, blocked=blocked, campaign=f"c{seed}")
    contacted = decisions[decisions["action"] != NO_ACTION]
    if catalog.budget is not None:
        assert contacted["cost"].sum() <= catalog.budget
    for action in catalog.actions:
        if action.capacity is not None:
            assert (contacted["action"] == action.name).sum() <= action.capacity
    index = {a.name: j for j, a in enumerate(catalog.actions)}
    for i, name in zip(contacted.index, contacted["action"], strict=True):
        assert not blocked[i, index[name]]
    # only exploration contacts someone whose expected value does not pay
    explored = contacted["reason"].str.startswith("exploration")
    assert (contacted.loc[~explored, "expected_value"] > 0).all()
    if catalog.explore_share == 0:
        assert not explored.any()


def test_exploration_is_reproducible_and_uses_only_unspent_budget():
    catalog = ActionCatalog.model_validate(
        {
            "risk_bands": {"medium": 0.1, "high": 0.3},
            "budget": 20.0,
            "explore_share": 0.5,
            "actions": [
                {"name": "mail", "channel": "email", "cost": 1.0, "effect": 0.1, "reason": "r",
                 "segments": ["low", "medium", "high"], "risk_bands": ["low", "medium", "high"]}
            ],
        }
    )
    n = 200
    scored = pd.DataFrame(
        {"customer_id": np.arange(n), "churn_probability": np.r_[np.full(5, 0.9), np.full(n - 5, 0.01)],
         "clv": 100.0, "segment": "low", "risk_band": "low"}
    )
    first = decide(scored, catalog, campaign="spring")
    assert first["action"].iloc[:5].eq("mail").all()  # the 5 worth it come first
    explored = first["reason"].str.startswith("exploration")
    assert explored.sum() == 15  # the budget left after them, at cost 1 each
    assert first["cost"].sum() == 20.0
    pd.testing.assert_frame_equal(first, decide(scored, catalog, campaign="spring"))
    assert not decide(scored, catalog)["reason"].str.startswith("exploration").any()  # no campaign, no exploration


def test_left_out_customers_are_told_why():
    catalog = ActionCatalog.model_validate(
        {
            "risk_bands": {"medium": 0.1, "high": 0.3},
            "budget": 10.0,
            "actions": [
                {"name": "call", "channel": "phone", "cost": 10.0, "effect": 0.5, "reason": "r",
                 "segments": ["high"], "risk_bands": ["high"]}
            ],
        }
    )
    scored = pd.DataFrame(
        {"customer_id": [1, 2], "churn_probability": 0.5, "clv": [400.0, 300.0], "segment": "high", "risk_band": "high"}
    )
    decisions = decide(scored, catalog)
    assert decisions["action"].tolist() == ["call", NO_ACTION]
    assert decisions["reason"][1].startswith("left out by the budget or a capacity")


@pytest.mark.parametrize("tenure, expected", [(10, "call"), (89, "call"), (90, NO_ACTION), (400, NO_ACTION)])
def test_lifecycle_stage_limits_an_action(tenure, expected):
    catalog = ActionCatalog.model_validate(
        {
            "risk_bands": {"medium": 0.1, "high": 0.3},
            "actions": [
                {"name": "call", "channel": "phone", "cost": 1.0, "effect": 0.5, "reason": "r",
                 "segments": ["high"], "risk_bands": ["high"], "lifecycle_stages": ["new"]}
            ],
        }
    )
    scored = pd.DataFrame(
        {"customer_id": [1], "churn_probability": 0.5, "clv": 400.0, "segment": "high", "risk_band": "high",
         "tenure_days": [tenure]}
    )
    assert decide(scored, catalog)["action"].tolist() == [expected]
