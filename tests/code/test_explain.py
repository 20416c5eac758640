"""Reason codes: SHAP contributions grouped by reason and worded from the customer's values."""

from __future__ import annotations

import pandas as pd
import pytest

from training.explain import global_importance, reason_codes

CUSTOMER = {
    "active_days_7d": 1, "active_days_28d": 10, "active_days_91d": 40, "sessions_7d": 1.0,
    "complaints_28d": 2, "tenure_days": 400, "last_nps": float("nan"), "plan": "monthly",
}


def _contrib(**values: float) -> pd.DataFrame:
    row = {name: 0.0 for name in CUSTOMER}
    row.update(values)
    return pd.DataFrame([{**row, "base": -3.0}])


def test_activity_collapse_is_worded_from_the_values():
    # 1 active day this week vs 10 / 4 = 2.5 a week over the last 4 weeks: down 60%
    reasons = reason_codes(pd.DataFrame([CUSTOMER]), _contrib(active_days_7d=0.9, complaints_28d=0.4))[0]
    assert [r.code for r in reasons] == ["activity", "complaints"]
    assert reasons[0].text == "activity down 60% this week vs the weekly average of the last 4 weeks"
    assert reasons[1].text == "2 complaints in the last 28 days"


def test_features_of_one_reason_add_up_and_risk_lowering_ones_are_left_out():
    contrib = _contrib(active_days_7d=0.2, sessions_7d=0.3, complaints_28d=0.4, tenure_days=-0.5, last_nps=0.1)
    reasons = reason_codes(pd.DataFrame([CUSTOMER]), contrib, top=5)[0]
    assert [r.code for r in reasons] == ["activity", "complaints", "satisfaction"]
    assert reasons[0].contribution == pytest.approx(0.5)
    assert reasons[0].feature == "sessions_7d"
    assert reasons[2].text == "never answered an NPS survey"


def test_a_reason_too_small_to_show_at_the_reported_precision_is_left_out():
    # reported to 4 decimals: 0.00004 would read as a reason raising the risk by 0.0
    reasons = reason_codes(pd.DataFrame([CUSTOMER]), _contrib(complaints_28d=0.4, last_nps=0.00004))[0]
    assert [(r.code, r.contribution) for r in reasons] == [("complaints", 0.4)]


def test_rows_must_line_up():
    with pytest.raises(ValueError, match="features has 2 rows but contrib has 1"):
        reason_codes(pd.DataFrame([CUSTOMER, CUSTOMER]), _contrib())


def test_global_importance_is_mean_absolute_contribution():
    contrib = pd.DataFrame({"a": [1.0, -3.0], "b": [0.5, 0.5], "base": [-2.0, -2.0]})
    table = global_importance(contrib)
    assert table["feature"].tolist() == ["a", "b"]
    assert table["mean_abs_shap"].tolist() == pytest.approx([2.0, 0.5])
    assert table["share"].tolist() == pytest.approx([0.8, 0.2])
