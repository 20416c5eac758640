"""Model behaviour: what the models must do, whatever their exact numbers."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn.errors import ConfigError
from features.store import feature_store
from serving.scoring import Scorer
from training.dataset import cutoff_dates, label_frame, training_set
from training.train import train

from tests.conftest import make_settings


@pytest.fixture(scope="module")
def scorer(engine) -> Scorer:
    return Scorer.load(engine.settings)


@pytest.fixture(scope="module")
def scores(engine) -> pd.DataFrame:
    return pd.read_parquet(engine.interventions.scores_path)


def _collapse(engaged: pd.DataFrame) -> pd.DataFrame:
    """The same customers after their activity collapsed: nothing this week, a third of last month's."""
    collapsed = engaged.copy()
    collapsed["active_days_7d"] = 0
    collapsed["sessions_7d"] = 0.0
    collapsed["active_days_28d"] = (engaged["active_days_28d"] * 0.3).round().astype(int)
    collapsed["sessions_28d"] = engaged["sessions_28d"] * 0.3
    collapsed["activity_trend_7d_28d"] = 1.0 / (collapsed["active_days_28d"] / 4.0 + 1.0)
    collapsed["activity_trend_28d_91d"] = (collapsed["active_days_28d"] + 1.0) / (
        engaged["active_days_91d"] * 4.0 / 13.0 + 1.0
    )
    collapsed["days_since_last_activity"] = 12
    return collapsed


def test_collapsing_activity_raises_risk(scorer, scores):
    """Take engaged customers, make their activity collapse: every one must score riskier."""
    engaged = scores[scores["active_days_28d"] >= 15].head(50).copy()
    collapsed = _collapse(engaged)
    before = scorer.score(engaged)["churn_probability"].to_numpy()
    after = scorer.score(collapsed)["churn_probability"].to_numpy()
    assert len(engaged) == 50
    assert (after > before).mean() >= 0.95
    assert np.median(after / before) > 2


def test_collapsed_activity_is_the_top_reason(scorer, scores):
    """Issue acceptance: a customer whose activity collapsed gets an activity-related top reason."""
    engaged = scores[scores["active_days_28d"] >= 15].head(50).copy()
    reasons = scorer.reasons(_collapse(engaged))
    top = [r[0] for r in reasons]
    assert np.mean([r.code == "activity" for r in top]) >= 0.9
    worded = [r.text for r in top if r.code == "activity"]
    assert any(text.startswith("activity down") or text.startswith("no activity for 12 days") for text in worded)
    # at most three reasons, strongest first, each raising the risk
    for why in reasons:
        contributions = [r.contribution for r in why]
        assert 1 <= len(why) <= 3 and contributions == sorted(contributions, reverse=True) and min(contributions) > 0


def test_complaints_and_failed_payments_raise_risk(scorer, scores):
    calm = scores[(scores["complaints_28d"] == 0) & (scores["payment_failures_28d"] == 0)].head(50).copy()
    troubled = calm.assign(
        complaints_28d=2, complaints_91d=calm["complaints_91d"] + 2, payment_failures_28d=1,
        payment_failures_91d=calm["payment_failures_91d"] + 1,
    )
    before = scorer.score(calm)["churn_probability"].to_numpy()
    after = scorer.score(troubled)["churn_probability"].to_numpy()
    assert (after > before).mean() >= 0.9


def test_clv_grows_with_price(scorer, scores):
    """Same customer, premium price: the predicted 12-month value must not be lower on average."""
    base = scores[scores["price_tier"] == "basic"].head(100).copy()
    pricier = base.assign(
        monthly_price=39.99, revenue_28d=base["revenue_28d"] * 4, revenue_91d=base["revenue_91d"] * 4,
        revenue_364d=base["revenue_364d"] * 4,
    )
    assert scorer.score(pricier)["clv"].mean() > scorer.score(base)["clv"].mean() * 1.5


def test_scores_are_probabilities_and_segments_cover_all(scores):
    assert scores["churn_probability"].between(0, 1).all()
    assert (scores["clv"] >= 0).all()
    assert set(scores["segment"]) == {"low", "medium", "high"}
    # edges are the 50th and 80th percentiles of recent CLV: the top segment is a minority
    assert 0.1 < (scores["segment"] == "high").mean() < 0.35


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The demo's default population (20,000 customers), through features and training."""
    from features.build import build_feature_tables
    from features.simulate import simulate
    from features.store import apply_definitions

    settings = make_settings(tmp_path_factory.mktemp("default"))
    sim = settings.simulation
    simulate(settings.raw_dir, settings.truth_dir, n_customers=sim.n_customers, start=sim.start, days=sim.days, seed=sim.seed)
    build_feature_tables(settings.raw_dir, settings.feature_tables_dir)
    apply_definitions(settings)
    return settings, train(settings)


def test_default_demo_meets_the_quality_bar(default_run):
    """Issue acceptance: on the default demo data, validation ROC AUC >= 0.75 and top-decile lift >= 2.5."""
    _, result = default_run
    assert result.churn_metrics["roc_auc"] >= 0.75
    assert result.churn_metrics["top_decile_lift"] >= 2.5
    # and the CLV model ranks customers by value
    assert result.clv_metrics["spearman"] >= 0.5


def test_default_demo_is_calibrated_on_the_latest_cutoff(default_run):
    """Issue acceptance: expected calibration error <= 0.02 on the latest cutoff, and the report shows it."""
    _, result = default_run
    assert result.churn_metrics["ece"] <= 0.02
    latest = result.backtest.iloc[-2]
    assert latest["ece"] == result.churn_metrics["ece"]
    assert f"<b>{latest['ece']:.4f}</b> after" in result.report_path.read_text()
    # the backtest holds up over time: every fold ranks risk well, not only the latest
    folds = result.backtest[result.backtest["test_cutoff"] != "all"]
    assert len(folds) == 3 and (folds["roc_auc"] >= 0.75).all()
    assert result.churn_metrics["empc"] > 0 and 0 < result.churn_metrics["empc_contact_share"] < 0.2


def test_model_holds_in_every_clv_segment(default_run):
    """Slices: the churn model ranks risk within each CLV segment, not only across them."""
    settings, result = default_run
    from features.build import raw_as_of

    scorer = Scorer.load(settings)
    as_of = raw_as_of(settings.raw_dir)
    latest = cutoff_dates(as_of, settings.training.horizon_days, settings.training.n_cutoffs, 28)[-1]
    labels = label_frame(settings.raw_dir, [latest], settings.training.horizon_days, 365)
    frame = training_set(settings, labels, settings.training.feature_service)
    scored = scorer.score(frame)
    for segment, part in scored.groupby("segment"):
        assert part["churned"].sum() >= 10, segment
        assert roc_auc_score(part["churned"], part["churn_probability"]) >= 0.7, segment


def test_serving_refuses_a_model_whose_feature_service_is_not_served(engine, tmp_path):
    """A copy of the engine's Feast registry without churn_model_v1: the champion cannot be served from it."""
    settings = engine.settings.model_copy(update={"data_dir": tmp_path / "data"})
    shutil.copytree(engine.settings.feature_repo_dir, settings.feature_repo_dir)
    feature_store(settings).delete_feature_service(settings.training.feature_service)
    with pytest.raises(ConfigError, match=r"trained on feature service 'churn_model_v1', which the feature store does not serve"):
        Scorer.load(settings)
