"""Model metrics: ranking and calibration for churn, error and ranking for CLV."""

from __future__ import annotations

import numpy as np
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
