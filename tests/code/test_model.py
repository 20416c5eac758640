"""GradientBoostedModel keeps the scikit-learn estimator contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.errors import DataError
from training.model import GradientBoostedModel, NotFittedError

FEATURES = ["x", "plan"]
CATEGORICAL = ("plan",)


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A known signal: churn when x is high, more so on monthly plans."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    plan = rng.choice(["annual", "monthly"], size=n)
    logit = 2.5 * x + 1.0 * (plan == "monthly") - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"x": x, "plan": plan}), y


@pytest.fixture(scope="module")
def fitted() -> GradientBoostedModel:
    X, y = _frame(600, 0)
    X_val, y_val = _frame(200, 1)
    model = GradientBoostedModel(num_boost_round=40, min_data_in_leaf=10, num_leaves=7, categorical=CATEGORICAL)
    returned = model.fit(X, y, X_val, y_val, FEATURES)
    assert returned is model
    return model


def test_init_only_stores_arguments():
    model = GradientBoostedModel(
        task="clv", num_boost_round=12, learning_rate=0.2, num_leaves=5, min_data_in_leaf=3, seed=9, num_threads=2,
        categorical=CATEGORICAL,
    )
    assert vars(model) == {
        "task": "clv",
        "num_boost_round": 12,
        "learning_rate": 0.2,
        "num_leaves": 5,
        "min_data_in_leaf": 3,
        "seed": 9,
        "num_threads": 2,
        "categorical": CATEGORICAL,
    }


def test_init_does_not_validate():
    # validation belongs to fit (scikit-learn contract): constructing with a bad task is allowed
    model = GradientBoostedModel(task="survival")
    assert model.task == "survival"


def test_predict_before_fit():
    X, _ = _frame(5, 0)
    with pytest.raises(NotFittedError, match="not fitted yet; call fit first"):
        GradientBoostedModel().predict(X)


def test_invalid_task_in_params():
    with pytest.raises(ValueError, match=r"task must be 'churn' or 'clv'; got 'survival'"):
        GradientBoostedModel(task="survival").lgb_params()


def test_fit_with_invalid_task():
    X, y = _frame(100, 0)
    with pytest.raises(ValueError, match=r"task must be 'churn' or 'clv'; got 'survival'"):
        GradientBoostedModel(task="survival", categorical=CATEGORICAL).fit(X, y, X, y, FEATURES)


def test_params_by_task():
    assert GradientBoostedModel(task="churn").lgb_params()["objective"] == "binary"
    assert GradientBoostedModel(task="clv").lgb_params()["objective"] == "tweedie"
    params = GradientBoostedModel(learning_rate=0.1, num_leaves=9, min_data_in_leaf=4, seed=3).lgb_params()
    assert (params["learning_rate"], params["num_leaves"], params["min_data_in_leaf"], params["seed"]) == (0.1, 9, 4, 3)
    assert params["deterministic"] is True


def test_fit_learns_state_with_trailing_underscores(fitted):
    assert fitted.feature_names_ == FEATURES
    assert fitted.categories_ == {"plan": ["annual", "monthly"]}
    assert 1 <= fitted.best_iteration_ <= 40
    assert fitted.booster_.feature_name() == FEATURES


def test_predictions_are_probabilities_that_follow_the_signal(fitted):
    grid = pd.DataFrame({"x": [-2.0, 0.0, 2.0, -2.0, 0.0, 2.0], "plan": ["annual"] * 3 + ["monthly"] * 3})
    p = fitted.predict(grid)
    assert p.shape == (6,)
    assert ((p > 0) & (p < 1)).all()
    assert p[0] < p[1] < p[2]
    assert p[3] < p[4] < p[5]


def test_column_order_of_the_input_does_not_matter(fitted):
    X, _ = _frame(20, 2)
    np.testing.assert_array_equal(fitted.predict(X), fitted.predict(X[["plan", "x"]]))


def test_unseen_category_at_predict_is_scored_as_the_rare_ones(fitted):
    X = pd.DataFrame({"x": [0.0, 0.0], "plan": ["weekly", "quarterly"]})
    p = fitted.predict(X)
    assert np.isfinite(p).all() and p[0] == p[1]  # both unseen: one "other" category


def test_same_seed_same_model():
    X, y = _frame(300, 3)
    X_val, y_val = _frame(100, 4)
    a = GradientBoostedModel(num_boost_round=20, min_data_in_leaf=10, seed=5, categorical=CATEGORICAL).fit(X, y, X_val, y_val, FEATURES)
    b = GradientBoostedModel(num_boost_round=20, min_data_in_leaf=10, seed=5, categorical=CATEGORICAL).fit(X, y, X_val, y_val, FEATURES)
    np.testing.assert_array_equal(a.predict(X_val), b.predict(X_val))


def test_clv_task_predicts_non_negative_amounts():
    rng = np.random.default_rng(6)
    X, _ = _frame(400, 6)
    y = np.where(rng.random(400) < 0.3, 0.0, np.exp(1 + X["x"].to_numpy()))
    model = GradientBoostedModel(task="clv", num_boost_round=30, min_data_in_leaf=10, categorical=CATEGORICAL).fit(X, y, X, y, FEATURES)
    pred = model.predict(X)
    assert (pred >= 0).all()
    assert pred[X["x"].to_numpy() > 1].mean() > pred[X["x"].to_numpy() < -1].mean()
