"""Allocation: at most one action per customer, maximising total expected value under limits.

The limits are the run's total budget (sum of contact costs) and each action's capacity
(contacts per run). Without limits every customer simply gets their best positive action.
With them the choice is a multiple-choice knapsack with side constraints:
- `allocate` (what the engine uses) is the classic greedy on the convex hull of each
  customer's (cost, value) options (Sinha & Zoltners 1979): upgrades are taken in order
  of value gained per unit of cost, which is optimal for the LP relaxation up to one item;
- `exact_allocate` solves the integer program with HiGHS (`scipy.optimize.milp`); it is
  the yardstick that shows the greedy near-optimal (tests, `benchmarks/policy.py`), too
  slow (seconds per thousand customers) for every run.
Both end in `_enforce_limits`, which checks the limits in exact arithmetic.
"""

from __future__ import annotations

import numpy as np

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
    if n == 0 or m == 0 or not (values > 0).any():
        return np.full(n, NONE)
    best = np.where((values > 0).any(axis=1), values.argmax(axis=1), NONE)
    if _within_limits(best, costs, budget, capacities):
        return best
    priced = values - _capacity_prices(values, capacities)
    choice = _hull_greedy(np.where(values > 0, priced, -np.inf), costs, budget, capacities)
    return _enforce_limits(choice, values, costs, budget, capacities)


def explore(
    choice: np.ndarray,
    allowed: np.ndarray,
    draws: np.ndarray,
    share: float,
    costs: np.ndarray,
    budget: float | None,
    capacities: list[int | None],
) -> tuple[np.ndarray, np.ndarray]:
    """Give a `share` of the customers without an action a random allowed one, within the limits left.

    Why: effects are learned only from customers someone contacted or held out; if those
    are always the policy's own picks, it never learns about anyone else. `draws` (uniform,
    one per customer) pick who explores (draw < share) and, rescaled, which allowed action.
    Returns the new choice and a mask of the explored customers.
    """
    choice = choice.copy()
    spent = costs[choice[choice != NONE]].sum()
    used = np.bincount(choice[choice != NONE], minlength=len(costs))
    explored = np.zeros(len(choice), bool)
    candidates = np.flatnonzero((choice == NONE) & allowed.any(axis=1) & (draws < share))
    for i in candidates[np.argsort(draws[candidates], kind="stable")]:
        options = np.flatnonzero(allowed[i])
        j = options[min(int(draws[i] / share * len(options)), len(options) - 1)]
        if (capacities[j] is not None and used[j] >= capacities[j]) or (budget is not None and spent + costs[j] > budget):
            continue
        choice[i], explored[i], spent, used[j] = j, True, spent + costs[j], used[j] + 1
    return choice, explored


def _capacity_prices(values: np.ndarray, capacities: list[int | None], rounds: int = 3) -> np.ndarray:
    """A price per contact of each capped action, so that about `capacity` customers still prefer it.

    Without it, the first customers to reach a capped action take it even when they have an
    almost-as-good alternative and later customers have none (a Lagrangian price on the
    capacity constraint, found by a few rounds of fixed-point updates).
    """
    prices = np.zeros(values.shape[1])
    for _ in range(rounds):
        for j, cap in enumerate(capacities):
            if cap is None:
                continue
            others = np.delete(values - prices, j, axis=1)
            alternative = np.maximum(others.max(axis=1, initial=0.0), 0.0)
            advantage = np.sort((values[:, j] - alternative)[values[:, j] > 0])[::-1]
            # the first customer beyond capacity should be (just) indifferent
            prices[j] = max(advantage[cap], 0.0) * (1 + 1e-9) + 1e-12 if len(advantage) > cap else 0.0
    return prices


def exact_allocate(
    values: np.ndarray,
    costs: np.ndarray,
    budget: float | None = None,
    capacities: list[int | None] | None = None,
) -> np.ndarray:
    """The optimal allocation (integer program, HiGHS); arguments as `allocate`."""
    n, m = values.shape
    capacities = list(capacities) if capacities is not None else [None] * m
    candidates = np.argwhere(values > 0)
    if n == 0 or m == 0 or len(candidates) == 0:
        return np.full(n, NONE)
    choice = _solve(values, costs, budget, capacities, candidates)
    return _enforce_limits(choice, values, costs, budget, capacities)


def _hull_greedy(
    values: np.ndarray, costs: np.ndarray, budget: float | None, capacities: list[int | None]
) -> np.ndarray:
    """Upgrades along each customer's (cost, value) hull, best value per cost first."""
    n, m = values.shape
    steps = []  # (ratio, customer, from action, to action, extra cost)
    for i in np.flatnonzero((values > 0).any(axis=1)):
        options = [j for j in np.argsort(costs, kind="stable") if values[i, j] > 0]
        here_cost, here_value, here = 0.0, 0.0, NONE
        while options:
            gains = [(values[i, j] - here_value) / max(costs[j] - here_cost, 1e-12) for j in options]
            k = int(np.argmax(gains))
            if gains[k] <= 0:
                break
            j = options[k]
            steps.append((gains[k], i, here, j, costs[j] - here_cost))
            here_cost, here_value, here = costs[j], values[i, j], j
            options = [o for o in options[k + 1 :] if values[i, o] > here_value]
    steps.sort(key=lambda s: -s[0])
    choice = np.full(n, NONE)
    frozen = np.zeros(n, bool)
    used = np.zeros(m, int)
    spent = 0.0
    for _, i, start, j, extra in steps:
        if frozen[i] or choice[i] != start:
            continue
        if (capacities[j] is not None and used[j] >= capacities[j]) or (budget is not None and spent + extra > budget):
            frozen[i] = True  # later upgrades of this customer build on this one
            continue
        if start != NONE:
            used[start] -= 1
        choice[i], used[j], spent = j, used[j] + 1, spent + extra
    # budget or capacity left over: the best single contacts that still fit
    rest = np.argwhere((values > 0) & (choice == NONE)[:, None])
    for i, j in rest[np.argsort(-values[rest[:, 0], rest[:, 1]], kind="stable")]:
        if choice[i] != NONE or (capacities[j] is not None and used[j] >= capacities[j]):
            continue
        if budget is not None and spent + costs[j] > budget:
            continue
        choice[i], used[j], spent = j, used[j] + 1, spent + costs[j]
    return choice


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
    # imported here: the service imports this module and never solves the exact program
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_array, vstack

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
