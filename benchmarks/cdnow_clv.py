"""CLV model quality on real data: CDNOW, 39-week revenue forecast per customer vs two baselines.

The classic setting of Fader, Hardie & Lee (2005): the 2,357-customer CDNOW sample (first
purchase in 1997 Q1), calibration weeks 1-39, holdout weeks 40-78. Three forecasts of each
customer's holdout revenue, measured in the same run:

- engine: the engine's CLV estimator (`training.model.GradientBoostedModel`, task "clv":
  LightGBM, Tweedie loss) on RFM features of the transactions before a cutoff. No label may
  reach past week 39, so it is trained to forecast the next 13 weeks from cutoffs at weeks
  14, 18, 22 and 26 (labels end by week 39), then applied at week 39; its 13-week forecast
  times 3 is the 39-week forecast (this assumes no further decay, a known bias);
- rate: each customer's calibration-period average weekly spend (since their first purchase)
  carried forward for 39 weeks;
- population: every customer gets the population's average calibration-period spend.

Run from the project root: `python -m benchmarks.cdnow_clv [--datasets ../shared/datasets]`.
Prints MAE per customer and the predicted vs actual holdout total for each forecast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from churn.errors import DataError
from training.model import GradientBoostedModel

START = pd.Timestamp("1997-01-01")
WEEK = pd.Timedelta(weeks=1)
CALIBRATION_WEEKS = 39
HOLDOUT_WEEKS = 39
LABEL_WEEKS = 13
TRAIN_CUTOFF_WEEKS = (14, 18, 22, 26)
FEATURES = [
    "purchases", "revenue", "cds", "revenue_4w", "revenue_13w", "purchases_13w",
    "weeks_since_last", "weeks_since_first", "mean_order_value",
]


def load_sample(datasets: Path) -> pd.DataFrame:
    """CDNOW_sample.txt as customer_id, date, cds, amount (one row per purchase)."""
    path = Path(datasets) / "cdnow" / "CDNOW_sample.txt"
    if not path.exists():
        raise DataError(f"{path} not found; pass --datasets pointing at the folder that holds cdnow/")
    raw = pd.read_csv(path, sep=r"\s+", header=None, dtype=str)
    if raw.shape[1] != 5:
        raise DataError(f"{path}: expected 5 whitespace-separated columns (id, sample id, date, cds, dollars); got {raw.shape[1]}")
    return pd.DataFrame(
        {
            "customer_id": raw[0].astype(int),
            "date": pd.to_datetime(raw[2], format="%Y%m%d"),
            "cds": raw[3].astype(int),
            "amount": raw[4].astype(float),
        }
    )


def features_at(purchases: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """RFM features of every customer who bought before `cutoff`, from purchases before it only."""
    past = purchases[purchases["date"] < cutoff]
    recent = lambda weeks: past[past["date"] >= cutoff - weeks * WEEK].groupby("customer_id")  # noqa: E731
    grouped = past.groupby("customer_id")
    frame = pd.DataFrame(
        {
            "purchases": grouped.size(),
            "revenue": grouped["amount"].sum(),
            "cds": grouped["cds"].sum(),
            "weeks_since_last": (cutoff - grouped["date"].max()).dt.days / 7,
            "weeks_since_first": (cutoff - grouped["date"].min()).dt.days / 7,
        }
    )
    frame["revenue_4w"] = recent(4)["amount"].sum().reindex(frame.index).fillna(0.0)  # no purchase in the window: 0
    frame["revenue_13w"] = recent(13)["amount"].sum().reindex(frame.index).fillna(0.0)
    frame["purchases_13w"] = recent(13).size().reindex(frame.index).fillna(0).astype(float)
    frame["mean_order_value"] = frame["revenue"] / frame["purchases"]
    return frame.reset_index()


def revenue_between(purchases: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, ids: pd.Series) -> np.ndarray:
    """Each customer's revenue in [start, end), zero for customers without a purchase there."""
    window = purchases[(purchases["date"] >= start) & (purchases["date"] < end)]
    return window.groupby("customer_id")["amount"].sum().reindex(ids).fillna(0.0).to_numpy()


def engine_forecast(purchases: pd.DataFrame, at: pd.Timestamp, seed: int = 0) -> np.ndarray:
    """The engine's CLV estimator, trained on 13-week labels inside the calibration period, scaled to 39 weeks."""
    rows = []
    for week in TRAIN_CUTOFF_WEEKS:
        cutoff = START + week * WEEK
        frame = features_at(purchases, cutoff)
        frame["target"] = revenue_between(purchases, cutoff, cutoff + LABEL_WEEKS * WEEK, frame["customer_id"])
        rows.append(frame)
    train = pd.concat(rows, ignore_index=True)
    if (START + max(TRAIN_CUTOFF_WEEKS) * WEEK + LABEL_WEEKS * WEEK) > START + CALIBRATION_WEEKS * WEEK:
        raise DataError("a training label reaches past the calibration period")
    # early stopping on a fifth of the customers, never the same customer on both sides
    customers = train["customer_id"].unique()
    held = set(np.random.default_rng(seed).choice(customers, len(customers) // 5, replace=False))
    stop = train["customer_id"].isin(held)
    model = GradientBoostedModel(task="clv", num_boost_round=400, min_data_in_leaf=20, seed=seed).fit(
        train[~stop], train.loc[~stop, "target"].to_numpy(), train[stop], train.loc[stop, "target"].to_numpy(), FEATURES
    )
    at_cutoff = features_at(purchases, at)
    return np.maximum(model.predict(at_cutoff), 0.0) * (HOLDOUT_WEEKS / LABEL_WEEKS)


def compare(datasets: Path) -> pd.DataFrame:
    """MAE and holdout total of each forecast; one row per method."""
    purchases = load_sample(datasets)
    end_calibration = START + CALIBRATION_WEEKS * WEEK
    end_holdout = end_calibration + HOLDOUT_WEEKS * WEEK
    at = features_at(purchases, end_calibration)
    actual = revenue_between(purchases, end_calibration, end_holdout, at["customer_id"])
    weekly_rate = at["revenue"] / np.maximum(at["weeks_since_first"], 1.0)
    forecasts = {
        "engine (LightGBM Tweedie, 13 weeks x 3)": engine_forecast(purchases, end_calibration),
        "customer's calibration spend rate carried forward": (weekly_rate * HOLDOUT_WEEKS).to_numpy(),
        "population average calibration spend": np.full(len(at), at["revenue"].mean()),
    }
    rows = [
        {
            "method": name,
            "mae": float(np.mean(np.abs(forecast - actual))),
            "predicted_total": float(forecast.sum()),
            "actual_total": float(actual.sum()),
        }
        for name, forecast in forecasts.items()
    ]
    table = pd.DataFrame(rows)
    table["mae_vs_population"] = table["mae"] / table["mae"].iloc[-1]
    table.attrs["customers"] = len(at)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets")
    args = parser.parse_args()
    table = compare(args.datasets)
    print(f"CDNOW sample: {table.attrs['customers']:,} customers; holdout weeks 40-78")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))


if __name__ == "__main__":
    main()
