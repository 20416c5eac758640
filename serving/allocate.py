"""Allocation: at most one action per customer, maximising total expected value under limits.

The limits are the run's total budget (sum of contact costs) and each action's capacity
(contacts per run). Without limits every customer simply gets their best positive action;
with them the choice is a small integer program (a multiple-choice knapsack with side
constraints) solved exactly by HiGHS through `scipy.optimize.milp`. Whatever the solver
returns, `_enforce_limits` checks the limits in exact arithmetic afterwards, so a limit is
never exceeded by a rounding of the solver's tolerances.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array, vstack

NONE = -1
# Seconds HiGHS may search before it returns its best solution so far.
_TIME_LIMIT = 30.0


def allocate(
    values: np.ndarray,
    costs: np.ndarray,
    budget: float | None = None,
    capacities: list[int | None] | None = None,
) -> np.ndarray:
    """Index of the action each customer gets, or -1 for none.

    - values: (customers x actions) expected incremental value; -inf where not allowed
    - costs: cost per contact of each action
    - budget: most total cost (None: no limit)
    - capacities: most contacts per action (None entries: no limit)

    Only positive values are ever chosen.
    """
    n, m = values.shape
    capacities = list(capacities) if capacities is not None else [None] * m
    choice = np.full(n, NONE)
    if n == 0 or m == 0:
        return choice
    candidates = np.argwhere(values > 0)
    if len(candidates) == 0:
        return choice
    best = np.where((values > 0).any(axis=1), values.argmax(axis=1), NONE)
    if _within_limits(best, costs, budget, capacities):
        return best
    choice = _solve(values, costs, budget, capacities, candidates)
    return _enforce_limits(choice, values, costs, budget, capacities)


def greedy_allocate(
    values: np.ndarray,
    costs: np.ndarray,
    budget: float | None = None,
    capacities: list[int | None] | None = None,
) -> np.ndarray:
    """Greedy baseline: take (customer, action) pairs by value per unit cost while they fit.

    Used to show that the exact allocation is at least as good; the engine uses `allocate`.
    """
    n, m = values.shape
    capacities = list(capacities) if capacities is not None else [None] * m
    choice = np.full(n, NONE)
    pairs = np.argwhere(values > 0)
    ratio = values[pairs[:, 0], pairs[:, 1]] / np.maximum(costs[pairs[:, 1]], 1e-9)
    spent, used = 0.0, np.zeros(m, int)
    for i, j in pairs[np.lexsort((-values[pairs[:, 0], pairs[:, 1]], -ratio))]:
        if choice[i] != NONE or (capacities[j] is not None and used[j] >= capacities[j]):
            continue
        if budget is not None and spent + costs[j] > budget:
            continue
        choice[i], spent, used[j] = j, spent + costs[j], used[j] + 1
    return choice


def _within_limits(choice: np.ndarray, costs: np.ndarray, budget: float | None, capacities: list[int | None]) -> bool:
    taken = choice[choice != NONE]
    if budget is not None and costs[taken].sum() > budget:
        return False
    counts = np.bincount(taken, minlength=len(costs))
    return all(cap is None or counts[j] <= cap for j, cap in enumerate(capacities))


def _solve(
    values: np.ndarray,
    costs: np.ndarray,
    budget: float | None,
    capacities: list[int | None],
    candidates: np.ndarray,
) -> np.ndarray:
    """The integer program over the positive (customer, action) pairs."""
    n, m = values.shape
    k = len(candidates)
    rows, cols = candidates[:, 0], candidates[:, 1]
    columns = np.arange(k)
    # one action per customer
    blocks = [csr_array((np.ones(k), (rows, columns)), shape=(n, k))]
    upper = [np.ones(n)]
    if budget is not None:
        blocks.append(csr_array(costs[cols][None, :]))
        upper.append(np.array([budget]))
    capped = [j for j, cap in enumerate(capacities) if cap is not None]
    if capped:
        index = {j: r for r, j in enumerate(capped)}
        mask = np.isin(cols, capped)
        blocks.append(
            csr_array(
                (np.ones(mask.sum()), ([index[j] for j in cols[mask]], columns[mask])), shape=(len(capped), k)
            )
        )
        upper.append(np.array([capacities[j] for j in capped], dtype=float))

    constraints = LinearConstraint(vstack(blocks).tocsr(), -np.inf, np.concatenate(upper))
    result = milp(
        c=-values[rows, cols],
        constraints=constraints,
        integrality=np.ones(k),
        bounds=Bounds(0, 1),
        options={"time_limit": _TIME_LIMIT, "mip_rel_gap": 1e-4},
    )
    choice = np.full(n, NONE)
    if result.x is None:
        # no solution within the time limit: the greedy one is feasible by construction
        return greedy_allocate(values, costs, budget, capacities)
    taken = result.x > 0.5
    choice[rows[taken]] = cols[taken]
    return choice


def _enforce_limits(
    choice: np.ndarray, values: np.ndarray, costs: np.ndarray, budget: float | None, capacities: list[int | None]
) -> np.ndarray:
    """Drop the least valuable contacts until every limit holds exactly (solver tolerances)."""
    choice = choice.copy()
    taken = np.flatnonzero(choice != NONE)
    order = taken[np.argsort(values[taken, choice[taken]], kind="stable")]
    for j, cap in enumerate(capacities):
        if cap is None:
            continue
        of_j = order[choice[order] == j]
        if len(of_j) > cap:
            choice[of_j[: len(of_j) - cap]] = NONE
    if budget is not None:
        for i in order:
            if costs[choice[choice != NONE]].sum() <= budget:
                break
            choice[i] = NONE
    return choice
