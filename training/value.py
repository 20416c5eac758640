"""What a customer of an ingested data set is worth (CLV), the same way in training and serving.

The config's `value` (features/contract.py `Value`, docs/data-contract.md) picks the method:
- `model`: a LightGBM regressor of each customer's revenue (the transactions sources'
  amounts) in [cutoff, cutoff + value.horizon_days), on the point-in-time features of the
  data set's FeatureService; registered as `<data set>-clv` (`fit_value_model`);
- `charge`: a recurring charge per `period_days` (a snapshot column), times the expected
  number of periods paid within `horizon_days` given the calibrated churn probability;
- `column`: a snapshot column taken as the value;
- `constant`: everybody is worth `amount` (default `settings.profit.clv`): one segment.

`customer_value` is the one function that turns a value spec (`value_spec`, stored in the
churn model's registered spec) into numbers; training (segment edges, value-weighted EMPC)
and `churn score` both call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import lightgbm as lgb
import numpy as np
import pandas as pd

from churn.errors import DataError
from churn.settings import Settings
from features.contract import Contract, Shape
from features.weekly import slug
from features.definitions import service_name
from features.store import historical_features
from training.dataset import category_levels, model_input, sampled_customers, to_matrix
from training.evaluate import clv_metrics
from training.model import GradientBoostedModel

# CLV segments: value quantiles of the recent population (below the median, median to 80th, top 20%).
SEGMENT_QUANTILES = (0.5, 0.8)


def value_spec(contract: Contract, settings: Settings) -> dict:
    """The value method of `contract` with its parameters, as stored in the churn model's spec.

    `column` is the feature name of the config's `value.column` (its slug, as the snapshot's
    feature table names it), so scoring reads it from the FeatureService like any feature.
    """
    value = contract.value
    return {
        "method": contract.value_method,
        "column": slug(value.column) if value.column else None,
        "source_column": value.column,
        "period_days": value.period_days,
        "horizon_days": value.horizon_days,
        "amount": float(value.amount if value.amount is not None else settings.profit.clv),
        "churn_horizon_days": contract.churn.horizon_days,
    }


def expected_periods(probability: np.ndarray, period_days: int, horizon_days: int, churn_horizon_days: int) -> np.ndarray:
    """Expected number of `period_days` charges paid within `horizon_days`.

    A churn probability p over `churn_horizon_days` is a constant per-period hazard
    q = 1 - (1 - p) ** (period_days / churn_horizon_days); the m-th charge (m = 0, 1, ...) is
    paid if the customer survived m periods, probability (1 - q) ** m. Over M = horizon_days /
    period_days periods: sum_{m=0}^{M-1} (1 - q) ** m = (1 - (1 - q) ** M) / q (M when q = 0).
    """
    p = np.clip(np.asarray(probability, dtype=float), 0.0, 1.0)
    stay = (1.0 - p) ** (period_days / churn_horizon_days)  # 1 - q
    periods = horizon_days / period_days
    q = 1.0 - stay
    with np.errstate(divide="ignore", invalid="ignore"):
        geometric = np.where(q > 1e-12, (1.0 - stay**periods) / q, periods)
    return geometric


def value_column(spec: dict) -> str | None:
    """The feature `customer_value` reads for `spec` (None if it reads none)."""
    return spec["column"] if spec["method"] in ("charge", "column") else None


def value_columns(spec: dict) -> list[str]:
    """The features `customer_value` reads for `spec`, as a list (empty when it reads none)."""
    column = value_column(spec)
    return [column] if column else []


def customer_value(
    spec: dict, columns: Mapping[str, np.ndarray], probability: np.ndarray, clv_prediction: np.ndarray | None
) -> np.ndarray:
    """Each customer's value (non-negative) by the method of `spec` (from `value_spec`).

    - columns: feature name -> values; must hold `value_column(spec)` for charge and column
    - probability: calibrated churn probability of each customer (charge reads it)
    - clv_prediction: the `<data set>-clv` model's prediction (model reads it)
    """
    method = spec["method"]
    n = len(probability)
    if method == "constant":
        return np.full(n, float(spec["amount"]))
    if method == "model":
        if clv_prediction is None:
            raise ValueError("value method 'model' needs the CLV model's predictions")
        return np.maximum(np.asarray(clv_prediction, dtype=float), 0.0)
    if method not in ("charge", "column"):
        raise ValueError(f"value method must be model, charge, column or constant; got {method!r}")
    name = spec["column"]
    values = np.asarray(columns[name], dtype=float)
    bad = np.isnan(values) | (values < 0)
    if bad.any():
        raise DataError(
            f"value.column {spec['source_column']!r} (feature {name!r}) must be a non-negative number for every "
            f"customer; {int(bad.sum())} of {n} are missing or negative (e.g. {values[bad][0]})"
        )
    if method == "column":
        return values
    periods = expected_periods(probability, spec["period_days"], spec["horizon_days"], spec["churn_horizon_days"])
    return values * periods


def segment_edges(value: np.ndarray) -> tuple[list[float], bool]:
    """The two segment edges (quantiles `SEGMENT_QUANTILES` of `value`), and whether value is constant.

    A constant value gives equal edges: every customer falls in one segment.
    """
    value = np.asarray(value, dtype=float)
    edges = [float(np.quantile(value, q)) for q in SEGMENT_QUANTILES]
    return edges, bool(np.ptp(value) == 0)


@dataclass(frozen=True)
class ValueModel:
    """The fitted `<data set>-clv` model: one booster, cut at its early-stopped round."""

    booster: lgb.Booster
    feature_names: list[str]
    categories: dict[str, list[str]]
    metrics: dict[str, float]  # on the held-out (latest) cutoff
    fit_cutoffs: list[str]
    test_cutoff: str
    n_fit_rows: int

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted revenue over the value horizon of each row."""
        return self.booster.predict(to_matrix(frame, self.feature_names, self.categories))


def value_cutoffs(contract: Contract, data_end: datetime) -> list[datetime]:
    """Cutoffs whose value horizon ends by the end of the data, oldest first (weekly, as the log features)."""
    ev = contract.evaluation
    latest = data_end - timedelta(days=7 * -(-contract.value.horizon_days // 7))
    return [latest - timedelta(days=ev.train_spacing_days * k) for k in reversed(range(ev.train_cutoffs))]


def revenue_labels(settings: Settings, contract: Contract, log_views: list[str], cutoffs: list[datetime]) -> pd.DataFrame:
    """customer_id, event_timestamp (cutoff), revenue: every customer in the log features at a cutoff
    and the sum of their transactions' amounts in [cutoff, cutoff + value.horizon_days)."""
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.register("cutoffs", pd.DataFrame({"cutoff": pd.to_datetime(cutoffs, utc=True)}))
    population = " UNION ".join(
        f"SELECT customer_id, event_timestamp FROM read_parquet('{settings.feature_tables_dir / v}.parquet') "
        "WHERE event_timestamp IN (SELECT cutoff FROM cutoffs)"
        for v in log_views
    )
    paid = " UNION ALL ".join(
        f"SELECT customer_id, event_time, \"{s.amount}\" AS amount FROM read_parquet('{settings.ingested_dir / n}.parquet')"
        for n, s in contract.of_shape(Shape.TRANSACTIONS).items()
    )
    horizon = contract.value.horizon_days
    frame = con.execute(
        f"""WITH pop AS ({population}), paid AS ({paid})
        SELECT p.customer_id, p.event_timestamp, coalesce(sum(t.amount), 0)::DOUBLE AS revenue
        FROM pop p LEFT JOIN paid t ON t.customer_id = p.customer_id
            AND t.event_time >= p.event_timestamp AND t.event_time < p.event_timestamp + to_days({horizon})
        GROUP BY 1, 2 ORDER BY 2, 1"""
    ).df()
    con.close()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def fit_value_model(
    settings: Settings, contract: Contract, log_views: list[str], data_end: datetime, feature_names: list[str], categorical: list[str]
) -> ValueModel:
    """Fit the revenue regressor on the value cutoffs but the latest, stopping early on (and measured on) the latest."""
    cutoffs = value_cutoffs(contract, data_end)
    labels = sampled_customers(revenue_labels(settings, contract, log_views, cutoffs), settings.training.sample_customers)
    present = sorted(labels["event_timestamp"].unique())
    if len(present) < 2:
        raise DataError(
            f"{contract.name}: value.horizon_days = {contract.value.horizon_days} leaves "
            f"{len(present)} cutoff with customers whose revenue horizon ends by the end of the data "
            f"({data_end:%Y-%m-%d}; cutoffs tried {[f'{c:%Y-%m-%d}' for c in cutoffs]}); the value model needs 2: "
            "use a shorter value.horizon_days, or another value.method"
        )
    frame = historical_features(settings, labels, service_name(contract.name), lean=True)
    latest = present[-1]
    stamps = frame["event_timestamp"]
    fit, test = np.flatnonzero((stamps < latest).to_numpy()), frame[(stamps == latest).to_numpy()]
    categories = {n: category_levels(frame[n].iloc[fit]) for n in categorical}
    revenue = frame["revenue"].to_numpy()
    train = lgb.Dataset(
        model_input(frame, feature_names, categories, fit), label=revenue[fit], feature_name=feature_names,
        categorical_feature=[i for i, n in enumerate(feature_names) if n in categories],
    )
    test_matrix = to_matrix(test, feature_names, categories)
    shape = GradientBoostedModel(task="clv")
    booster = lgb.train(
        shape.lgb_params(), train, num_boost_round=shape.num_boost_round,
        valid_sets=[train.create_valid(test_matrix, label=test["revenue"].to_numpy())],
        callbacks=[lgb.early_stopping(30, verbose=False)],
    )
    # registered cut at the best round, so that every reader predicts with the evaluated trees
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
    metrics = clv_metrics(test["revenue"].to_numpy(), booster.predict(test_matrix))
    return ValueModel(
        booster, list(feature_names), categories, metrics,
        [f"{c:%Y-%m-%d}" for c in present[:-1]], f"{latest:%Y-%m-%d}", len(fit),
    )

