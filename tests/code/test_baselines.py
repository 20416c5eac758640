"""The baselines `churn train` measures beside the engine: each feature alone, and models that may fail to fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from training.baselines import BASELINES, Baselines, SingleFeatures, best_single_feature, comparison, comparison_summary
from training.evaluate import top_decile_lift
from training.model import NotFittedError


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Churn driven up by `risk`, down by `loyalty`, by plan 'basic'; `nps` missing for a third; `noise` unrelated."""
    rng = np.random.default_rng(seed)
    risk, loyalty = rng.normal(size=n), rng.normal(size=n)
    plan = rng.choice(["basic", "plus", "pro"], size=n)
    logit = -1.0 + 1.5 * risk - 0.7 * loyalty + 1.0 * (plan == "basic")
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    nps = np.where(rng.random(n) < 1 / 3, np.nan, rng.integers(0, 11, n).astype(float))
    return pd.DataFrame({"risk": risk, "loyalty": loyalty, "plan": plan, "nps": nps, "noise": rng.normal(size=n), "churned": churned})


NAMES, CATEGORICAL = ["risk", "loyalty", "plan", "nps", "noise"], ["plan"]


def test_a_category_scores_by_its_churn_rate_on_the_fit_rows_and_missing_ranks_lowest():
    fit = pd.DataFrame({"plan": ["a", "a", "b", "b", "b", "c"], "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "churned": [1, 1, 0, 0, 1, 0]})
    rows = pd.DataFrame({"plan": ["b", "a", "new", None], "x": [2.5, np.nan, -4.0, 7.0]})
    scores = SingleFeatures(["plan", "x"], ["plan"]).fit(fit, fit["churned"].to_numpy()).scores(rows)
    # a category by its churn rate on the fit rows (a: 1, b: 1/3); unseen and missing below every seen one
    np.testing.assert_allclose(scores["plan"][:2], [1 / 3, 1.0])
    assert scores["plan"][2] == scores["plan"][3] < scores["plan"][:2].min()
    # a number as it is; missing one below the smallest
    np.testing.assert_allclose(scores["x"], [2.5, -5.0, -4.0, 7.0])


def test_a_feature_never_present_in_the_rows_is_a_constant_score():
    fit = pd.DataFrame({"plan": ["a", "b"], "churned": [1, 0]})
    scores = SingleFeatures(["plan"], ["plan"]).fit(fit, fit["churned"].to_numpy()).scores(pd.DataFrame({"plan": ["z", None]}))
    np.testing.assert_array_equal(scores["plan"], [0.0, 0.0])


def test_the_best_single_feature_is_taken_in_its_better_direction():
    frame = _frame(4_000)
    y = frame["churned"].to_numpy()
    scores = SingleFeatures(NAMES, CATEGORICAL).fit(frame, y).scores(frame)
    best = best_single_feature(y, scores)
    assert best["feature"] == "risk" and best["customers"] == len(frame)
    assert best["roc_auc"] == pytest.approx(roc_auc_score(y, frame["risk"]))
    # a feature that lowers churn counts reversed: loyalty alone, minus its AUC, is what it reaches
    alone = best_single_feature(y, {"loyalty": scores["loyalty"]})
    assert roc_auc_score(y, frame["loyalty"]) < 0.5
    assert alone["roc_auc"] == pytest.approx(1 - roc_auc_score(y, frame["loyalty"]))
    assert alone["top_decile_lift"] == pytest.approx(top_decile_lift(y, -frame["loyalty"].to_numpy()))


def test_baselines_are_fitted_on_the_fit_rows_and_measured_on_others():
    frame = _frame(3_000)
    fit, test = frame.iloc[:2_000], frame.iloc[2_000:]
    measured = Baselines(NAMES, CATEGORICAL).fit(fit, fit["churned"].to_numpy()).measure(test, test["churned"].to_numpy())
    assert list(measured) == list(BASELINES)
    for key, m in measured.items():
        assert m["customers"] == 1_000 and "error" not in m, key
        assert 0.6 < m["roc_auc"] < 1.0 and m["top_decile_lift"] > 1.5, (key, m)
    # the logistic regression sees all the signal the data was made with: ahead of any one feature
    assert measured["logistic_regression"]["roc_auc"] > measured["best_single_feature"]["roc_auc"]


def test_a_baseline_that_cannot_fit_says_why_and_the_others_are_still_measured():
    frame = _frame(400)
    fit = frame[frame["churned"] == 0].head(50)  # one class only: no logistic regression fits that
    measured = Baselines(NAMES, CATEGORICAL).fit(fit, fit["churned"].to_numpy()).measure(frame, frame["churned"].to_numpy())
    error = measured["logistic_regression"]["error"]
    assert error.startswith("could not fit on 50 training rows (0 churned): ") and "class" in error
    assert "roc_auc" in measured["best_single_feature"]
    table = comparison(["fold 1"], [{"roc_auc": 0.9, "top_decile_lift": 4.0}], [measured])
    row = table.set_index("model").loc["logistic regression"]
    assert np.isnan(row["roc_auc"]) and row["note"] == error
    summary = comparison_summary(table).set_index("model")
    assert summary.loc["logistic regression", "splits"] == 0 and summary.loc["engine", "splits"] == 1


def test_comparison_gives_the_engine_margin_per_split_and_over_splits():
    engine = [{"roc_auc": 0.80, "top_decile_lift": 4.0}, {"roc_auc": 0.90, "top_decile_lift": 5.0}]
    single = {"roc_auc": 0.70, "top_decile_lift": 3.0, "feature": "risk", "lift_feature": "risk", "customers": 10}
    model = {"roc_auc": 0.85, "top_decile_lift": 4.5, "customers": 10}
    baselines = [
        {"best_single_feature": single, "logistic_regression": model, "lightgbm_defaults": model},
        {"best_single_feature": single | {"lift_feature": "nps"}, "logistic_regression": model, "lightgbm_defaults": model},
    ]
    table = comparison(["a", "b"], engine, baselines)
    assert list(table["model"].unique()) == ["engine", *BASELINES.values()]
    assert table.loc[table["model"] == "best single feature", "note"].tolist() == ["risk", "risk (lift: nps)"]
    summary = comparison_summary(table).set_index("model")
    assert summary.loc["engine", "roc_auc_mean"] == pytest.approx(0.85)
    assert summary.loc["engine", "roc_auc_sd"] == pytest.approx(0.05)
    assert summary.loc["best single feature", "margin_mean"] == pytest.approx(0.15)
    assert summary.loc["logistic regression", "margin_min"] == pytest.approx(-0.05)


def test_unfitted_baselines_say_so():
    frame = _frame(10)
    with pytest.raises(NotFittedError, match="Baselines is not fitted yet, call fit first"):
        Baselines(NAMES, CATEGORICAL).measure(frame, frame["churned"])
    with pytest.raises(NotFittedError, match="SingleFeatures is not fitted yet, call fit first"):
        SingleFeatures(NAMES, CATEGORICAL).scores(frame)
