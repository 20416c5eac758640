"""The simulator's hidden truth: what each customer would have done, contacted or not.

Only evaluation reads this (outcomes of simulated campaigns, benchmarks), never a model.

A customer's outcome without contact is what the raw tables show: cancelled within the
horizon after the scoring date or not (the same rule as the training labels). With
contact, the customer's true effect e of that action (`truth/responses.parquet`, a
relative reduction of churn probability) applies:
- e > 0: a customer who would have left stays with probability e;
- e < 0 (sleeping dogs): a customer who would have stayed leaves with probability
  |e| x r, where r = base rate / (1 - base rate) of the campaign's customers, so that
  the churn probability rises by |e| relative on average.
The random part is a hash of (campaign, customer), so outcomes are reproducible.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from churn.draws import uniform_draw
from churn.errors import DataError
from features.raw import RAW_TABLES, raw_as_of


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


def true_effects(truth_dir: Path, customer_ids: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Each customer's true relative effect of the given action (0 for no action)."""
    path = Path(truth_dir) / "responses.parquet"
    if not path.exists():
        raise DataError(f"{path} is missing: outcomes from the simulator need its hidden truth")
    table = pd.read_parquet(path).pivot(index="customer_id", columns="action", values="true_effect")
    effects = np.zeros(len(customer_ids))
    ids = np.asarray(customer_ids, dtype="int64")
    for action in pd.unique(np.asarray(actions)):
        rows = np.asarray(actions) == action
        if action == "none":
            continue
        if action not in table.columns:
            raise DataError(f"action {action!r} has no true effect in {path} (it knows {sorted(table.columns)})")
        looked_up = table[action].reindex(ids[rows])
        if looked_up.isna().any():
            raise DataError(f"customers {ids[rows][looked_up.isna().to_numpy()][:5].tolist()} are not in {path}")
        effects[rows] = looked_up.to_numpy()
    return effects


def churn_change(untreated_churned: np.ndarray, effect: np.ndarray, base_rate: float) -> np.ndarray:
    """Expected change of each customer's churn (treated minus untreated), given the untreated outcome."""
    odds = base_rate / max(1.0 - base_rate, 1e-9)
    y0 = np.asarray(untreated_churned, dtype=float)
    return -y0 * np.clip(effect, 0, 1) + (1 - y0) * np.clip(-effect, 0, None) * odds


def simulated_outcomes(
    raw_dir: Path,
    truth_dir: Path,
    decisions: pd.DataFrame,
    campaign: str,
    as_of: datetime,
    horizon_days: int,
) -> pd.DataFrame:
    """Outcomes of one campaign's decisions, as the simulated customers would have lived them.

    `decisions` columns: customer_id, action ('none' or an action), holdout (bool).
    Returns customer_id, churned, revenue, true_change (expected change of churn had the
    customer been contacted, given the untreated outcome; 0 without an action).
    """
    base = untreated_outcomes(raw_dir, decisions["customer_id"].to_numpy(), as_of, horizon_days)
    actions = decisions["action"].to_numpy()
    effect = true_effects(truth_dir, decisions["customer_id"].to_numpy(), actions)
    base_rate = float(base["churned"].mean()) if len(base) else 0.0
    change = churn_change(base["churned"].to_numpy(), effect, base_rate)
    treated = (actions != "none") & ~decisions["holdout"].to_numpy(dtype=bool)
    u = uniform_draw(decisions["customer_id"].to_numpy(), campaign, purpose="outcome")
    y0 = base["churned"].to_numpy()
    saved = treated & y0 & (u < np.clip(effect, 0, 1))
    driven_away = treated & ~y0 & (u < np.clip(-effect, 0, None) * base_rate / max(1 - base_rate, 1e-9))
    churned = (y0 & ~saved) | driven_away
    months = horizon_days / 30.0
    revenue = np.where(saved, base["revenue"] + base["monthly_price"] * months, base["revenue"])
    revenue = np.where(driven_away, 0.0, revenue)
    return pd.DataFrame(
        {
            "customer_id": base["customer_id"],
            "churned": churned,
            "revenue": revenue,
            "true_change": np.where(decisions["action"].to_numpy() != "none", change, 0.0),
        }
    )
