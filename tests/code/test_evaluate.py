"""Model metrics on hand-made cases, expected values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluate import (
    churn_metrics,
    clv_metrics,
    expected_calibration_error,
    gains_curve,
    reliability_table,
    top_decile_lift,
)


def test_top_decile_lift_by_hand():
    # 20 rows, 4 positives: base rate 0.2; the top decile is the 2 highest scores, one positive
    y = np.zeros(20)
    y[[0, 5, 9, 17]] = 1
    score = np.linspace(0, 1, 20)
    score[17], score[3] = 2.0, 1.5  # highest: row 17 (positive), then row 3 (negative)
    assert top_decile_lift(y, score) == pytest.approx(0.5 / 0.2)


def test_top_decile_lift_of_a_perfect_ranking():
    # 50 rows, 5 positives with the 5 highest scores: the top decile is all churners, lift 1 / 0.1
    y = np.r_[np.ones(5), np.zeros(45)]
    score = -np.arange(50.0)
    assert top_decile_lift(y, score) == pytest.approx(10.0)


@pytest.mark.parametrize("n", [10, 20, 30, 70, 100])
def test_top_decile_is_exactly_a_tenth_of_the_rows(n):
    """With n a multiple of 10, the top decile is n/10 rows: here exactly the positives, so lift is 10."""
    k = n // 10
    y = np.r_[np.ones(k), np.zeros(n - k)]
    score = np.r_[np.full(k, 0.9), np.full(n - k, 0.1)]
    assert top_decile_lift(y, score) == pytest.approx(10.0)


def test_top_decile_of_few_rows_is_at_least_one_row():
    # 5 rows: ceil(0.5) = 1 row, the highest score, a positive; base rate 2/5
    assert top_decile_lift([0, 1, 0, 1, 0], [0.1, 0.9, 0.2, 0.3, 0.4]) == pytest.approx(1 / 0.4)


def test_top_decile_lift_without_positives():
    with pytest.raises(ValueError, match="top-decile lift is undefined when no row is positive"):
        top_decile_lift(np.zeros(10), np.linspace(0, 1, 10))


def test_churn_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    metrics = churn_metrics(y, p)
    assert set(metrics) == {"roc_auc", "pr_auc", "brier", "top_decile_lift", "churn_rate"}
    assert all(isinstance(v, float) for v in metrics.values())
    # pairs (pos, neg): (.35,.1) ok, (.35,.4) wrong, (.8,.1) ok, (.8,.4) ok -> 3/4
    assert metrics["roc_auc"] == pytest.approx(0.75)
    # ranked .8(1) .4(0) .35(1) .1(0): AP = .5 * 1 + .5 * 2/3
    assert metrics["pr_auc"] == pytest.approx(0.5 + 1 / 3)
    assert metrics["brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)
    # top decile of 4 rows is 1 row (the .8, a churner): 1 / 0.5
    assert metrics["top_decile_lift"] == pytest.approx(2.0)
    assert metrics["churn_rate"] == pytest.approx(0.5)


def test_clv_metrics_by_hand():
    y = np.array([0.0, 10.0, 20.0, 30.0])
    pred = np.array([5.0, 10.0, 35.0, 20.0])
    metrics = clv_metrics(y, pred)
    assert set(metrics) == {"mae", "rmse", "spearman", "total_ratio"}
    assert metrics["mae"] == pytest.approx((5 + 0 + 15 + 10) / 4)
    assert metrics["rmse"] == pytest.approx(math.sqrt((25 + 0 + 225 + 100) / 4))
    # ranks 1 2 3 4 vs 1 2 4 3: rho = 1 - 6 * 2 / (4 * 15)
    assert metrics["spearman"] == pytest.approx(0.8)
    assert metrics["total_ratio"] == pytest.approx(70 / 60)


def test_clv_metrics_of_a_perfect_prediction():
    y = [0.0, 3.0, 8.0, 100.0]
    metrics = clv_metrics(y, y)
    assert metrics == {"mae": 0.0, "rmse": 0.0, "spearman": pytest.approx(1.0), "total_ratio": 1.0}


def test_expected_calibration_error_by_hand():
    # two equal-count bins: predicted 0.1 (observed 0/2) and 0.5 (observed 2/2) -> (2*0.1 + 2*0.5) / 4 = 0.3
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.1, 0.5, 0.5])
    table = reliability_table(y, p, n_bins=2)
    assert table["observed_rate"].tolist() == [0.0, 1.0]
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.3)


def test_gains_curve_by_hand():
    # 2 churners among 10; the best two scores are one churner and one stayer
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    score = np.array([0.9, 0.8, 0.1, 0.1, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1])
    gains = gains_curve(y, score, points=5)
    assert gains["contacted_share"].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert gains["churners_captured"].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5, 1.0])
    assert gains["lift"].iloc[0] == pytest.approx(2.5)
