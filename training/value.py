"""What a customer is worth: the value that segments customers and weighs retention actions.

One function for training (segment edges, EMPC) and serving (every score). How a data set is
valued is its registered churn model's `extra["value"]` (docs/data-contract.md, "Value"):
- `model`: the CLV model's prediction (revenue over the next `horizon_days`), floored at 0;
- `charge`: a recurring charge `column` per `period_days`, times the periods the customer is
  expected to stay within `horizon_days`, from the churn model's calibrated hazard;
- `column`: a declared value column, as it is;
- `constant`: one `amount` for everybody (segments then hold one value).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from churn.errors import DataError


def value_method(model) -> str:
    """The value method of a registered churn model (the simulator's models: its CLV model)."""
    return model.extra.get("value", {"method": "model"})["method"]


def value_columns(spec: dict) -> list[str]:
    """The features a value reads."""
    return [spec["column"]] if spec["method"] in ("charge", "column") else []


def retained_periods(probability: np.ndarray, period_days: int, horizon_days: int, churn_horizon_days: int) -> np.ndarray:
    """Expected charged periods within `horizon_days` of a customer whose churn probability over
    `churn_horizon_days` is `probability`, at a constant hazard: sum_{m<M} (1 - q)^m with
    M = horizon_days / period_days and q = 1 - (1 - p)^(period_days / churn_horizon_days)."""
    p = np.clip(np.asarray(probability, dtype=float), 0.0, 1.0 - 1e-9)
    stay = (1.0 - p) ** (period_days / churn_horizon_days)  # 1 - q
    periods = horizon_days / period_days
    q = 1.0 - stay
    return np.where(q > 1e-12, (1.0 - stay**periods) / np.maximum(q, 1e-12), periods)


def customer_value(
    spec: dict, columns: Mapping[str, np.ndarray], probability: np.ndarray, clv_prediction: np.ndarray | None
) -> np.ndarray:
    """Each customer's value under `spec` (non-negative; see the module docstring)."""
    method = spec["method"]
    n = len(probability)
    if method == "model":
        if clv_prediction is None:
            raise DataError("value method 'model' needs the CLV model's predictions")
        return np.maximum(np.asarray(clv_prediction, dtype=float), 0.0)
    if method == "constant":
        return np.full(n, float(spec["amount"]))
    column = spec["column"]
    values = np.asarray(columns[column], dtype=float)
    if np.isnan(values).any():
        # a customer without a value would land in a segment by accident: refuse, do not guess
        raise DataError(
            f"value column {column!r} has no value for {int(np.isnan(values).sum())} of {n} customers; "
            "declare a column that every customer has (or `value.method: constant`)"
        )
    if method == "column":
        return np.maximum(values, 0.0)
    if method == "charge":
        periods = retained_periods(probability, spec["period_days"], spec["horizon_days"], spec["churn_horizon_days"])
        return np.maximum(values, 0.0) * periods
    raise DataError(f"value method must be model, charge, column or constant; got {method!r}")
