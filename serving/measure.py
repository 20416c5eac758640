"""The measurement report: what each action did, treated against randomised holdout.

Per segment x action (and per action over all segments): churn rates of contacted and
held-out customers, the difference with a confidence interval, and the incremental revenue
and retained value. Because holdouts are drawn at random within each cell, the difference
estimates the action's average effect on the customers it was chosen for.

Rankings of customers by predicted uplift are judged on held-out outcomes by the Qini
coefficient and uplift at k (Radcliffe 2007; Gutierrez & Gerardy 2017), "uplift" meaning
churn prevented (holdout minus treated).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ALL_SEGMENTS = "all"
# two-sided 95 % normal quantile
Z_95 = 1.959964


def difference_ci(churned_t: int, n_t: int, churned_h: int, n_h: int, z: float = Z_95) -> tuple[float, float, float]:
    """Difference of churn rates (treated - holdout) and its confidence interval.

    The interval is Agresti & Caffo's (2000): one churner and one stayer added to each arm
    before the Wald interval, which keeps its coverage near nominal for rare events and
    small arms, where the plain Wald interval collapses to zero width.
    """
    if n_t == 0 or n_h == 0:
        return np.nan, np.nan, np.nan
    diff = churned_t / n_t - churned_h / n_h
    pt, ph = (churned_t + 1) / (n_t + 2), (churned_h + 1) / (n_h + 2)
    center = pt - ph
    half = z * np.sqrt(pt * (1 - pt) / (n_t + 2) + ph * (1 - ph) / (n_h + 2))
    return diff, center - half, center + half


def measurement_report(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per segment x action and per action (segment 'all').

    `rows` columns (the ledger's decisions with outcomes, action != 'none'):
    - segment, action, holdout, churned, revenue, clv

    Returns segment, action, n_treated, n_holdout, churn_treated, churn_holdout, effect,
    ci_low, ci_high, incremental_revenue, incremental_value. `effect` is the change of the
    churn rate (negative: fewer churn); incremental revenue and value are per contacted
    customer times the number contacted.
    """
    cells = [rows.assign(segment=ALL_SEGMENTS), rows]
    report = [_cell(segment, action, group) for frame in cells for (segment, action), group in frame.groupby(["segment", "action"])]
    columns = [
        "segment", "action", "n_treated", "n_holdout", "churn_treated", "churn_holdout", "effect",
        "ci_low", "ci_high", "incremental_revenue", "incremental_value",
    ]
    return pd.DataFrame(report, columns=columns)


def with_learned(report: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The report with the learned posterior of each of its rows (`serving.learning.CellEffects.summary`).

    Adds learned_effect, learned_ci_low, learned_ci_high (the relative reduction of churn e:
    positive means fewer churn, unlike the report's own `effect`, a change of the churn rate)
    and holdout_needed. Rows of actions the catalog no longer lists have none (NaN).
    """
    learned = summary[["segment", "action", "effect", "ci_low", "ci_high", "holdout_needed"]].rename(
        columns={"effect": "learned_effect", "ci_low": "learned_ci_low", "ci_high": "learned_ci_high"}
    )
    return report.merge(learned, on=["segment", "action"], how="left", validate="one_to_one")


def _cell(segment: str, action: str, group: pd.DataFrame) -> dict:
    treated, held = group[~group["holdout"]], group[group["holdout"]]
    effect, low, high = difference_ci(
        int(treated["churned"].sum()), len(treated), int(held["churned"].sum()), len(held)
    )
    revenue_gain = treated["revenue"].mean() - held["revenue"].mean() if len(held) and len(treated) else np.nan
    return {
        "segment": segment,
        "action": action,
        "n_treated": len(treated),
        "n_holdout": len(held),
        "churn_treated": treated["churned"].mean() if len(treated) else np.nan,
        "churn_holdout": held["churned"].mean() if len(held) else np.nan,
        "effect": effect,
        "ci_low": low,
        "ci_high": high,
        "incremental_revenue": revenue_gain * len(treated),
        "incremental_value": -effect * treated["clv"].sum(),
    }


def qini(uplift: np.ndarray, treated: np.ndarray, churned: np.ndarray) -> tuple[float, np.ndarray]:
    """Qini coefficient and curve, for churn prevented, ranking customers by `uplift`.

    Q(k) = churners among the k top-ranked held-out customers scaled to the treated count,
    minus churners among the k top-ranked treated (Radcliffe 2007). The coefficient is the
    area between Q and the straight line of random targeting, per customer.
    """
    order = np.argsort(-np.asarray(uplift), kind="stable")
    t = np.asarray(treated, bool)[order]
    y = np.asarray(churned, float)[order]
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    y_t, y_c = np.cumsum(y * t), np.cumsum(y * ~t)
    curve = np.where(n_c > 0, y_c * n_t / np.maximum(n_c, 1), 0.0) - y_t
    random_line = curve[-1] * np.arange(1, len(curve) + 1) / len(curve)
    return float((curve - random_line).mean()), curve


def uplift_at_k(uplift: np.ndarray, treated: np.ndarray, churned: np.ndarray, k: float = 0.3) -> float:
    """Churn rate of held-out minus treated among the top `k` share ranked by `uplift`."""
    order = np.argsort(-np.asarray(uplift), kind="stable")[: max(1, int(round(k * len(uplift))))]
    t, y = np.asarray(treated, bool)[order], np.asarray(churned, float)[order]
    if t.all() or (~t).all():
        return float("nan")
    return float(y[~t].mean() - y[t].mean())
