"""The uplift model recovers known effects; Qini and uplift@k behave as defined."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.errors import DataError
from serving.outcomes import read_outcome_file
from serving.uplift import TRAIT_SOURCES, UpliftModel, fit_uplift, qini, uplift_at_k


def _population(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "churn_probability": rng.beta(2.0, 5.0, n),
            "tenure_days": rng.integers(0, 800, n),
            "plan": rng.choice(["monthly", "annual"], n),
            "price_tier": rng.choice(["basic", "standard", "premium"], n),
            "channel": rng.choice(["organic", "paid_search", "referral", "partner"], n),
            "active_days_91d": rng.integers(0, 92, n),
            "activity_trend_7d_28d": rng.uniform(0, 2, n),
            "complaints_28d": rng.integers(0, 2, n),
            "payment_failures_28d": rng.integers(0, 2, n),
        }
    )


def _experiment(n: int = 30_000, seed: int = 0):
    """Two actions; 'call' works on premium customers only, 'mail' a little on everyone."""
    rng = np.random.default_rng(seed)
    frame = _population(n, seed)
    action = rng.choice(["call", "mail"], n)
    treated = rng.random(n) < 0.5
    true = np.where(action == "call", np.where(frame["price_tier"] == "premium", 0.6, 0.0), 0.15)
    churned = rng.random(n) < frame["churn_probability"] * (1 - treated * true)
    return frame, action, treated, churned, true


def test_learns_who_responds():
    frame, action, treated, churned, true = _experiment()
    model = UpliftModel(["call", "mail"], [0.3, 0.3]).fit(frame, action, treated, churned)
    effects = model.predict_effects(frame)
    premium = (frame["price_tier"] == "premium").to_numpy()
    assert effects[premium, 0].mean() == pytest.approx(0.6, abs=0.12)
    assert effects[~premium, 0].mean() == pytest.approx(0.0, abs=0.1)
    assert effects[:, 1].mean() == pytest.approx(0.15, abs=0.08)
    assert model.learned_ == ["call", "mail"]


def test_an_action_without_enough_outcomes_keeps_its_prior():
    frame, action, treated, churned, _ = _experiment(n=3_000)
    action = np.where(np.arange(len(action)) < 150, "rare", action)
    model = UpliftModel(["call", "mail", "rare"], [0.3, 0.3, 0.42], min_outcomes=100).fit(
        frame, action, treated, churned
    )
    assert "rare" not in model.learned_
    assert np.allclose(model.predict_effects(frame)[:, 2], 0.42)


def test_unfitted_model_says_so():
    with pytest.raises(DataError, match="not fitted yet; call fit first"):
        UpliftModel(["a"], [0.1]).predict_effects(_population(3, 0))


def test_missing_trait_is_named():
    frame, action, treated, churned, _ = _experiment(n=500)
    with pytest.raises(DataError, match=r"needs columns \['tenure_days'\]"):
        UpliftModel(["call", "mail"], [0.3, 0.3]).fit(frame.drop(columns="tenure_days"), action, treated, churned)


def test_outcomes_of_an_unknown_action_are_refused():
    frame, action, treated, churned, _ = _experiment(n=500)
    rows = frame.assign(action=action, holdout=~treated, churned=churned)
    with pytest.raises(DataError, match=r"outcomes for actions \['mail'\], which the catalog does not list"):
        fit_uplift(rows, ["call"], [0.3])


def test_qini_ranks_a_good_model_above_a_random_one():
    frame, action, treated, churned, true = _experiment()
    good = frame["churn_probability"].to_numpy() * true
    noise = np.random.default_rng(1).random(len(good))
    assert qini(good, treated, churned)[0] > 0
    assert qini(good, treated, churned)[0] > qini(noise, treated, churned)[0] + 0.001
    assert uplift_at_k(good, treated, churned, k=0.2) > uplift_at_k(noise, treated, churned, k=0.2)


def test_qini_curve_by_hand():
    # ranked: (treated, churned) = (T,0), (C,1), (T,1), (C,0)
    uplift = np.array([4, 3, 2, 1])
    treated = np.array([True, False, True, False])
    churned = np.array([False, True, True, False])
    coefficient, curve = qini(uplift, treated, churned)
    # Q(k) = Yc(k) * Nt(k) / Nc(k) - Yt(k): k=1: 0 (no control yet), k=2: 1*1/1-0 = 1, k=3: 1*2/1-1 = 1, k=4: 1*2/2-1 = 0
    assert curve.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert coefficient == pytest.approx(0.5)


def test_traits_cover_the_documented_sources():
    assert set(_population(2, 0).columns) == set(TRAIT_SOURCES)


# --- outcome files ---------------------------------------------------------------------------


def _outcome_csv(tmp_path, **overrides):
    frame = pd.DataFrame(
        {
            "campaign": ["c1", "c1"],
            "customer_id": [1, 2],
            "churned": ["true", "0"],
            "revenue": [0.0, 19.99],
            "horizon_end": ["2025-04-01", "2025-04-01"],
        }
    )
    for column, value in overrides.items():
        if value is None:
            frame = frame.drop(columns=column)
        else:
            frame[column] = value
    path = tmp_path / "outcomes.csv"
    frame.to_csv(path, index=False)
    return path


def test_outcome_file_values(tmp_path):
    frame = read_outcome_file(_outcome_csv(tmp_path))
    assert frame["churned"].tolist() == [True, False]
    assert str(frame["horizon_end"].dt.tz) == "UTC"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"revenue": None}, r"outcomes.csv lacks columns \['revenue'\]"),
        ({"churned": ["yes", "no"]}, r"column 'churned' in .*outcomes.csv has an invalid value 'yes' in row 1"),
        ({"revenue": [1.0, -5.0]}, r"column 'revenue' in .*outcomes.csv must be >= 0; got -5.0 in row 2"),
        ({"customer_id": [1, "x"]}, r"column 'customer_id' in .*outcomes.csv has an invalid value 'x' in row 2"),
        ({"horizon_end": ["2025-04-01", "soon"]}, r"column 'horizon_end' in .*outcomes.csv has an invalid value 'soon' in row 2"),
    ],
)
def test_bad_outcome_file_names_the_column_and_row(tmp_path, overrides, message):
    with pytest.raises(DataError, match=message):
        read_outcome_file(_outcome_csv(tmp_path, **overrides))


def test_missing_outcome_file(tmp_path):
    with pytest.raises(DataError, match=r"outcome file .*nope.csv does not exist"):
        read_outcome_file(tmp_path / "nope.csv")
