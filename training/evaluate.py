"""Model metrics: ranking and calibration for churn, error and ranking for CLV."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, mean_absolute_error, roc_auc_score


def top_decile_lift(y_true: np.ndarray, score: np.ndarray) -> float:
    """Churn rate among the 10% highest scores divided by the overall churn rate."""
    y_true = np.asarray(y_true, dtype=float)
    k = max(1, int(np.ceil(0.1 * len(y_true))))
    top = np.argsort(-np.asarray(score), kind="stable")[:k]
    base = y_true.mean()
    if base == 0:
        raise ValueError("top-decile lift is undefined when no row is positive")
    return float(y_true[top].mean() / base)


def churn_metrics(y_true: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC, Brier score, top-decile lift and the base rate."""
    return {
        "roc_auc": float(roc_auc_score(y_true, probability)),
        "pr_auc": float(average_precision_score(y_true, probability)),
        "brier": float(brier_score_loss(y_true, probability)),
        "top_decile_lift": top_decile_lift(y_true, probability),
        "churn_rate": float(np.mean(y_true)),
    }


def clv_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, Spearman rank correlation and predicted/actual total."""
    y_true = np.asarray(y_true, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    return {
        "mae": float(mean_absolute_error(y_true, predicted)),
        "rmse": float(np.sqrt(np.mean((y_true - predicted) ** 2))),
        "spearman": float(spearmanr(y_true, predicted).statistic),
        "total_ratio": float(predicted.sum() / y_true.sum()),
    }


def reliability_table(y_true: np.ndarray, probability: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Predicted vs observed churn rate in equal-count bins of the probability.

    Equal-count bins because churn probabilities crowd near zero: equal-width bins would put
    almost every customer in the first one and say nothing about the rest.
    Returns columns: bin, customers, mean_predicted, observed_rate, low, high.
    """
    y_true = np.asarray(y_true, dtype=float)
    probability = np.asarray(probability, dtype=float)
    order = np.argsort(probability, kind="stable")
    rows = []
    for k, part in enumerate(np.array_split(order, n_bins)):
        if len(part) == 0:
            continue
        rows.append(
            {
                "bin": k + 1,
                "customers": len(part),
                "mean_predicted": float(probability[part].mean()),
                "observed_rate": float(y_true[part].mean()),
                "low": float(probability[part].min()),
                "high": float(probability[part].max()),
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(y_true: np.ndarray, probability: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the customer-weighted mean gap between predicted and observed rate over the reliability bins."""
    table = reliability_table(y_true, probability, n_bins)
    gaps = (table["mean_predicted"] - table["observed_rate"]).abs()
    return float((gaps * table["customers"]).sum() / table["customers"].sum())


def gains_curve(y_true: np.ndarray, score: np.ndarray, points: int = 100) -> pd.DataFrame:
    """Cumulative gains and lift when contacting customers in decreasing score.

    Returns columns: contacted_share, churners_captured (share of all churners among the
    contacted), lift (captured share / contacted share), at `points` evenly spaced shares.
    """
    y_true = np.asarray(y_true, dtype=float)
    if y_true.sum() == 0:
        raise ValueError("gains are undefined when no row is positive")
    captured = np.cumsum(y_true[np.argsort(-np.asarray(score), kind="stable")]) / y_true.sum()
    shares = np.linspace(1 / points, 1.0, points)
    counts = np.maximum(1, np.round(shares * len(y_true)).astype(int))
    gains = captured[counts - 1]
    return pd.DataFrame({"contacted_share": counts / len(y_true), "churners_captured": gains, "lift": gains / (counts / len(y_true))})
