"""Why a customer scores as they do: SHAP contributions from LightGBM, turned into words.

LightGBM computes exact TreeSHAP values itself (`Booster.predict(..., pred_contrib=True)`):
one log-odds contribution per feature per customer, plus the base value; they sum to the
model's raw score. Reason codes are the features that push a customer's risk up the most,
each worded from the customer's own feature values ("activity down 60% vs the previous
weeks", "2 complaints in the last 28 days") so that an agent can act on them. The global
importance of a model is the mean absolute contribution over a population.

Features are grouped into reason codes (activity, complaints, payments, ...) because several
features describe one thing: the 7-day and 28-day activity counts are one reason for a reader.
"""

from __future__ import annotations

from collections.abc import Callable

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.reason import Reason


def contributions(booster: lgb.Booster, X: np.ndarray, feature_names: list[str], num_iteration: int | None = None) -> pd.DataFrame:
    """Per-row SHAP contributions (log-odds) of each feature; the column `base` is the expected value."""
    raw = booster.predict(X, pred_contrib=True, num_iteration=num_iteration)
    return pd.DataFrame(raw, columns=[*feature_names, "base"])


def global_importance(contrib: pd.DataFrame) -> pd.DataFrame:
    """Mean absolute contribution per feature, largest first, with its share of the total.

    Returns columns: feature, mean_abs_shap, share.
    """
    mean_abs = contrib.drop(columns="base").abs().mean().sort_values(ascending=False)
    return pd.DataFrame(
        {"feature": mean_abs.index, "mean_abs_shap": mean_abs.to_numpy(), "share": (mean_abs / mean_abs.sum()).to_numpy()}
    )


def _change(recent: float, earlier: float) -> float | None:
    """Relative change of a rate, or None when there is no earlier rate to compare with."""
    return None if earlier <= 0 else recent / earlier - 1.0


def _activity_week(row: dict) -> str:
    change = _change(row["active_days_7d"], row["active_days_28d"] / 4)
    if change is not None and change < -0.05:
        return f"activity down {-change:.0%} this week vs the weekly average of the last 4 weeks"
    return f"active on {int(row['active_days_7d'])} of the last 7 days"


def _activity_month(row: dict) -> str:
    change = _change(row["active_days_28d"], row["active_days_91d"] * 28 / 91)
    if change is not None and change < -0.05:
        return f"activity down {-change:.0%} in the last 28 days vs the last 91 days"
    return f"active on {int(row['active_days_28d'])} of the last 28 days"


def _count(what: str, feature: str, days: int) -> Callable[[dict], str]:
    def text(row: dict) -> str:
        n = int(row[feature])
        return f"{n} {what}{'' if n == 1 else 's'} in the last {days} days"

    return text


def _nps(row: dict) -> str:
    value = row["last_nps"]
    return "never answered an NPS survey" if pd.isna(value) else f"last NPS answer {value:.0f}/10"


# feature -> (reason code, wording from the row's values)
_REASONS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "active_days_7d": ("activity", _activity_week),
    "sessions_7d": ("activity", _activity_week),
    "activity_trend_7d_28d": ("activity", _activity_week),
    "active_days_28d": ("activity", _activity_month),
    "sessions_28d": ("activity", _activity_month),
    "activity_trend_28d_91d": ("activity", _activity_month),
    "active_days_91d": ("activity", _activity_month),
    "sessions_91d": ("activity", _activity_month),
    "days_since_last_activity": ("activity", lambda r: f"no activity for {int(r['days_since_last_activity'])} days"),
    "days_since_last_active": ("activity", lambda r: f"no activity for {int(r['days_since_last_active'])} days"),
    "complaints_28d": ("complaints", _count("complaint", "complaints_28d", 28)),
    "complaints_91d": ("complaints", _count("complaint", "complaints_91d", 91)),
    "tickets_28d": ("support", _count("support ticket", "tickets_28d", 28)),
    "tickets_91d": ("support", _count("support ticket", "tickets_91d", 91)),
    "payment_failures_28d": ("payments", _count("failed payment", "payment_failures_28d", 28)),
    "payment_failures_91d": ("payments", _count("failed payment", "payment_failures_91d", 91)),
    "downgrades_91d": ("downgrade", _count("plan downgrade", "downgrades_91d", 91)),
    "last_nps": ("satisfaction", _nps),
    "tenure_days": ("tenure", lambda r: f"customer for only {int(r['tenure_days'])} days"),
    "plan": ("plan", lambda r: f"on the {r['plan']} plan"),
    "price_tier": ("plan", lambda r: f"{r['price_tier']} price tier"),
    "monthly_price": ("plan", lambda r: f"pays {r['monthly_price']:.2f} a month"),
    "days_to_renewal": ("renewal", lambda r: f"renewal due in {int(r['days_to_renewal'])} days"),
    "channel": ("acquisition", lambda r: f"acquired through {str(r['channel']).replace('_', ' ')}"),
    "revenue_28d": ("value", lambda r: f"revenue {r['revenue_28d']:.2f} in the last 28 days"),
    "revenue_91d": ("value", lambda r: f"revenue {r['revenue_91d']:.2f} in the last 91 days"),
    "revenue_364d": ("value", lambda r: f"revenue {r['revenue_364d']:.2f} in the last 364 days"),
    "addon_revenue_91d": ("value", lambda r: f"add-on revenue {r['addon_revenue_91d']:.2f} in the last 91 days"),
    "addon_purchases_91d": ("value", _count("add-on purchase", "addon_purchases_91d", 91)),
}


def _wording(feature: str) -> tuple[str, Callable[[dict], str]]:
    # a feature added to a FeatureService without a wording still gets an honest, plain reason
    return _REASONS.get(feature, ("other", lambda r: f"{feature} = {r[feature]}"))


def reason_codes(features: pd.DataFrame, contrib: pd.DataFrame, top: int = 3) -> list[list[Reason]]:
    """For each row, up to `top` reasons, strongest first: one per reason code, risk-raising only.

    `features` holds the model's feature columns (raw values, not codes), row-aligned with
    `contrib` (from `contributions`). A code's contribution is the sum over its features;
    the reason is worded from its strongest feature.
    """
    if len(features) != len(contrib):
        raise ValueError(f"features has {len(features)} rows but contrib has {len(contrib)}")
    names = [c for c in contrib.columns if c != "base"]
    return reasons_from_records(features.to_dict("records"), contrib[names].to_numpy(), names, top)


def reasons_from_records(records: list[dict], values: np.ndarray, names: list[str], top: int = 3) -> list[list[Reason]]:
    """`reason_codes` on plain data: feature values per row as dicts, contributions as an array.

    `values` has one column per name in `names` (no base column). The service's request path
    uses this form, which needs no pandas.
    """
    codes = [_wording(f)[0] for f in names]
    out = []
    for i, record in enumerate(records):
        by_code: dict[str, float] = {}
        for code, value in zip(codes, values[i]):
            by_code[code] = by_code.get(code, 0.0) + float(value)
        reasons = []
        for code, total in sorted(by_code.items(), key=lambda kv: -kv[1])[:top]:
            total = round(total, 4)
            if total <= 0:  # lowers the risk, or too little to show at the reported precision
                break
            members = [j for j, c in enumerate(codes) if c == code]
            strongest = names[max(members, key=lambda j: values[i, j])]
            reasons.append(
                Reason(code=code, feature=strongest, text=_wording(strongest)[1](record), contribution=total)
            )
        out.append(reasons)
    return out
