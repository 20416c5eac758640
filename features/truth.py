"""The simulator's hidden truth: what each customer would have done, contacted or not.

Only evaluation reads this (outcomes of simulated campaigns, benchmarks), never a model.

Without contact, a customer's outcome is what the raw tables show: cancelled within the
horizon after the decision date or not (the same rule as the training labels); at the truth
dates the simulator also wrote each customer's true probability of that
(`untreated_probability`, from continuations of the simulated world).

With contact, action a multiplies the customer's churn probability by 1 - e, e their true
effect of a at the decision date (`true_effects`): e > 0 saves a would-be leaver with
probability e; e < 0 (contact drives them away) makes a would-be stayer leave with
probability |e| x p / (1 - p), p their untreated probability (the campaign's churn rate
where the truth has no p for that date), so that churn rises by |e| relative.

What e is depends on the scenario (`SCENARIOS`, setting `simulation.scenario`), computed from
the customer's state at the decision date: observable traits (plan, price tier, channel,
tenure then), hidden ones (responsiveness to contact in general, a sleeping dog whom any
contact drives away, each action's unexplained part) and whether their departure was already
under way (the lost causes). The scenarios, documented with their numbers in
docs/architecture.md ("The simulator's scenarios"):
- `priors-right`: every action does about what the catalog's prior says;
- `priors-wrong`: some actions are useless or harmful, others better than their prior;
- `heterogeneous`: each action works for some observable kinds of customer and not others;
- `lost-causes`: as priors-right, but a customer whose departure is under way (most of the
  highest-risk) answers no contact (Ascarza 2018).
Every scenario has its sleeping dogs (about 5 % of customers, more among the engaged).
The random part of an outcome is a hash of (campaign, customer): outcomes are reproducible.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from churn.draws import uniform_draw
from churn.errors import DataError
from features.raw import RAW_TABLES, raw_as_of

SCENARIOS = ("priors-right", "priors-wrong", "heterogeneous", "lost-causes")

# The mean effect of each action when nothing else is known, per scenario (priors-right is
# set near the catalog's priors: that scenario is defined as the catalog being right).
_FLAT = {
    "priors-right": {
        "onboarding_activation": 0.20, "advisor_call": 0.28, "discount_offer": 0.15, "reengagement_message": 0.06,
        "service_recovery": 0.25, "payment_rescue": 0.30, "early_warning_offer": 0.10,
    },
    # wrong where the priors policy leans (its cheap, broad nudges), and wrong both ways
    "priors-wrong": {
        "onboarding_activation": 0.0, "advisor_call": 0.0, "discount_offer": -0.12, "reengagement_message": -0.04,
        "service_recovery": 0.45, "payment_rescue": 0.35, "early_warning_offer": 0.35,
    },
}
_FLAT["lost-causes"] = _FLAT["priors-right"]
# how much of an effect varies between customers: shared responsiveness, and each action's own noise
RESPONSIVENESS_SD = 0.05
NOISE_SD = 0.05


def _heterogeneous(action: str, state: pd.DataFrame) -> np.ndarray:
    """Mean effect of `action` by observable traits at the decision date (heterogeneous scenario)."""
    monthly = (state["plan"] == "monthly").to_numpy()
    tier = state["price_tier"].to_numpy()
    tenure = state["tenure_days"].to_numpy()
    channel = state["channel"].to_numpy()
    if action == "onboarding_activation":  # habits form in the first month
        return np.select([tenure < 30, tenure < 90], [0.40, 0.15], 0.0)
    if action == "advisor_call":  # worth a call to premium customers, a nuisance to basic ones
        return np.select([tier == "premium", tier == "standard"], [0.45, 0.10], -0.05)
    if action == "discount_offer":  # price-sensitive: monthly basic and standard plans
        return np.where(monthly & (tier != "premium"), np.where(tier == "basic", 0.40, 0.20), -0.10)
    if action == "reengagement_message":  # reaches customers in their first year
        return np.where(tenure < 365, 0.25, 0.0)
    if action == "service_recovery":  # monthly customers can leave at any bill: fixing it matters
        return np.where(monthly, 0.45, 0.05)
    if action == "payment_rescue":
        return np.where(channel == "paid_search", 0.55, 0.20)
    if action == "early_warning_offer":  # organic and referred customers answer it
        return np.where(np.isin(channel, ["organic", "referral"]), 0.30, -0.05)
    raise DataError(f"action {action!r} has no true effect in the heterogeneous scenario")


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise DataError(f"unknown simulator scenario {scenario!r}; the scenarios are {list(SCENARIOS)}")


def customer_state(raw_dir: Path, truth_dir: Path, customer_ids: np.ndarray, as_of: datetime) -> pd.DataFrame:
    """What the truth needs of each customer at `as_of`: traits, tenure then, hidden traits, and lost (departure under way).

    Ids as the simulator's integers or their text. One row per id, in order.
    """
    path = Path(truth_dir) / "customers.parquet"
    if not path.exists():
        raise DataError(f"{path} is missing: outcomes from the simulator need its hidden truth")
    ids = pd.Index(np.asarray(customer_ids).astype("int64"))
    hidden = pd.read_parquet(path).set_index("customer_id").reindex(ids)
    if hidden["responsiveness"].isna().any():
        raise DataError(f"customers {ids[hidden['responsiveness'].isna().to_numpy()][:5].tolist()} are not in {path}")
    traits = pd.read_parquet(
        Path(raw_dir) / RAW_TABLES["customers"].file, columns=["customer_id", "signup_at", "plan", "price_tier", "channel"]
    ).set_index("customer_id").reindex(ids)
    stamp = pd.Timestamp(as_of)
    state = pd.concat([traits, hidden], axis=1)
    state["tenure_days"] = (stamp - state["signup_at"]).dt.days.to_numpy()
    state["lost"] = (state["doomed_from"] < stamp).fillna(False).to_numpy(dtype=bool)
    return state.reset_index(names="customer_id")


def effect_matrix(state: pd.DataFrame, actions: list[str], scenario: str, explained: bool = False) -> np.ndarray:
    """(customers x actions) true effects for customers in `state` (from `customer_state`).

    `explained`: only the part observable traits explain (the heterogeneous scenario's trait
    means, a constant elsewhere), without the hidden parts, sleeping dogs and lost causes.
    """
    _check_scenario(scenario)
    out = np.empty((len(state), len(actions)))
    for j, action in enumerate(actions):
        if f"noise_{action}" not in state.columns:
            raise DataError(f"action {action!r} has no true effect in the simulator's truth (it knows other actions)")
        mean = _heterogeneous(action, state) if scenario == "heterogeneous" else np.full(len(state), _FLAT[scenario][action])
        if explained:
            out[:, j] = mean
            continue
        effect = mean + RESPONSIVENESS_SD * state["responsiveness"].to_numpy() + NOISE_SD * state[f"noise_{action}"].to_numpy()
        if scenario == "lost-causes":
            effect = np.where(state["lost"].to_numpy(), 0.02 * state[f"noise_{action}"].to_numpy(), effect)
        dogs = state["sleeping_dog"].to_numpy(dtype=bool)
        effect = np.where(dogs, -(0.15 + 0.05 * np.abs(state[f"noise_{action}"].to_numpy())), effect)
        out[:, j] = np.clip(effect, -1.0, 0.95)
    return out


def true_effects(
    raw_dir: Path, truth_dir: Path, customer_ids: np.ndarray, actions: np.ndarray, as_of: datetime, scenario: str
) -> np.ndarray:
    """Each customer's true effect of the action given on their row ('none': 0) at `as_of`."""
    actions = np.asarray(actions)
    effects = np.zeros(len(actions))
    given = actions != "none"
    if given.any():
        state = customer_state(raw_dir, truth_dir, np.asarray(customer_ids)[given], as_of)
        names = sorted(set(actions[given]))
        matrix = effect_matrix(state, names, scenario)
        effects[given] = matrix[np.arange(len(state)), np.searchsorted(names, actions[given])]
    return effects


def untreated_probability(truth_dir: Path, customer_ids: np.ndarray, as_of: datetime) -> np.ndarray:
    """Each customer's true probability of churning within the horizon from `as_of` uncontacted.

    Known at the truth dates the simulation was asked for (`simulate(truth_dates=...)`).
    """
    path = Path(truth_dir) / "untreated.parquet"
    day = pd.Timestamp(as_of).date()
    table = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["customer_id", "as_of", "churn_probability"])
    rows = table[table["as_of"] == day]
    if rows.empty:
        known = sorted({str(d) for d in table["as_of"]})
        raise DataError(
            f"the simulator's truth has no untreated churn probabilities at {day} ({path}); it has them at "
            f"{known or 'no date'}: simulate with truth_dates including {day}"
        )
    p = rows.set_index("customer_id")["churn_probability"].reindex(np.asarray(customer_ids).astype("int64"))
    if p.isna().any():
        raise DataError(
            f"customers {p.index[p.isna().to_numpy()][:5].tolist()} were not active at {day} in {path} "
            "(signed up before the day and not cancelled before it)"
        )
    return p.to_numpy()


def untreated_outcomes(raw_dir: Path, customer_ids: np.ndarray, as_of: datetime, horizon_days: int) -> pd.DataFrame:
    """Whether each customer cancelled within the horizon, and their revenue in it, per the raw tables.

    Returns customer_id, churned (bool), revenue, monthly_price.
    """
    raw_dir = Path(raw_dir)
    start = pd.Timestamp(as_of)
    end = start + pd.Timedelta(days=horizon_days)
    data_end = pd.Timestamp(raw_as_of(raw_dir))
    if end > data_end:
        raise DataError(
            f"outcomes of decisions scored at {start.date()} need {horizon_days} days of data, until {end.date()}; "
            f"the raw data in {raw_dir} ends at {data_end.date()}"
        )
    ids = pd.Index(np.asarray(customer_ids, dtype="int64"))
    cancels = pd.read_parquet(raw_dir / RAW_TABLES["cancellations"].file, columns=["customer_id", "cancelled_at"])
    first_cancel = cancels.groupby("customer_id")["cancelled_at"].min()
    cancelled_at = first_cancel.reindex(ids)
    churned = ((cancelled_at >= start) & (cancelled_at < end)).to_numpy()
    tx = pd.read_parquet(
        raw_dir / RAW_TABLES["transactions"].file,
        columns=["customer_id", "transaction_time", "amount"],
        filters=[("transaction_time", ">=", start), ("transaction_time", "<", end)],
    )
    revenue = tx.groupby("customer_id")["amount"].sum().reindex(ids).fillna(0.0)  # no transaction: no revenue
    customers = pd.read_parquet(raw_dir / RAW_TABLES["customers"].file, columns=["customer_id", "monthly_price"])
    price = customers.set_index("customer_id")["monthly_price"].reindex(ids)
    if price.isna().any():
        unknown = ids[price.isna().to_numpy()][:5].tolist()
        raise DataError(f"customers {unknown} are not in {raw_dir / RAW_TABLES['customers'].file}")
    return pd.DataFrame(
        {
            "customer_id": ids.to_numpy(),
            "churned": churned,
            "revenue": revenue.to_numpy(),
            "monthly_price": price.to_numpy(),
        }
    )


def churn_change(untreated_churned: np.ndarray, effect: np.ndarray, odds: np.ndarray | float) -> np.ndarray:
    """Expected change of each customer's churn (treated minus untreated), given the untreated outcome.

    `odds`: p / (1 - p) of the customer's untreated churn (see the module docstring).
    """
    y0 = np.asarray(untreated_churned, dtype=float)
    return -y0 * np.clip(effect, 0, 1) + (1 - y0) * np.clip(np.clip(-effect, 0, None) * odds, 0, 1)


def _harm_odds(truth_dir: Path, customer_ids: np.ndarray, as_of: datetime, base_rate: float) -> np.ndarray:
    """p / (1 - p) per customer: the truth's untreated probability at `as_of`, else the campaign's churn rate."""
    try:
        p = untreated_probability(truth_dir, customer_ids, as_of)
    except DataError:
        p = np.full(len(customer_ids), base_rate)
    p = np.clip(p, 0.0, 0.999)
    return p / (1 - p)


def simulated_outcomes(
    raw_dir: Path,
    truth_dir: Path,
    decisions: pd.DataFrame,
    campaign: str,
    as_of: datetime,
    horizon_days: int,
    scenario: str = "priors-right",
) -> pd.DataFrame:
    """Outcomes of one campaign's decisions, as the simulated customers would have lived them.

    `decisions` columns: customer_id, action ('none' or an action), holdout (bool).
    Returns customer_id, churned, revenue, true_change (expected change of churn had the
    customer been contacted, given the untreated outcome; 0 without an action).
    """
    ids = decisions["customer_id"].to_numpy()
    base = untreated_outcomes(raw_dir, ids, as_of, horizon_days)
    actions = decisions["action"].to_numpy()
    effect = true_effects(raw_dir, truth_dir, ids, actions, as_of, scenario)
    base_rate = float(base["churned"].mean()) if len(base) else 0.0
    odds = _harm_odds(truth_dir, ids, as_of, base_rate)
    y0 = base["churned"].to_numpy()
    change = churn_change(y0, effect, odds)
    treated = (actions != "none") & ~decisions["holdout"].to_numpy(dtype=bool)
    u = uniform_draw(ids, campaign, purpose="outcome")
    saved = treated & y0 & (u < np.clip(effect, 0, 1))
    driven_away = treated & ~y0 & (u < np.clip(-effect, 0, None) * odds)
    churned = (y0 & ~saved) | driven_away
    months = horizon_days / 30.0
    revenue = np.where(saved, base["revenue"] + base["monthly_price"] * months, base["revenue"])
    revenue = np.where(driven_away, 0.0, revenue)
    return pd.DataFrame(
        {
            "customer_id": base["customer_id"],
            "churned": churned,
            "revenue": revenue,
            "true_change": np.where(actions != "none", change, 0.0),
        }
    )
