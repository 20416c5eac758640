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
from training.baselines import SingleFeatures, best_single_feature
from training.backtest import TrainingData, training_data
from training.train import train

from tests.conftest import make_settings, prepared


@pytest.fixture(scope="module")
def scorer(engine) -> Scorer:
    return Scorer.load(engine.settings)


@pytest.fixture(scope="module")
def scores(engine) -> pd.DataFrame:
    return pd.read_parquet(engine.interventions.scores_path)


def _collapse(engaged: pd.DataFrame) -> pd.DataFrame:
    """The same customers after their activity collapsed: nothing this week, a third of last month's.

    Every feature the simulator's events give changes as the log would: the activity signal's own
    features and the generic ones of the events source (its counts, days, values and trend; most
    events are activity).
    """
    c = engaged.copy()
    c["active_days_7d"] = c["events_days_7d"] = c["events_count_7d"] = 0
    c["sessions_7d"] = c["events_value_7d"] = 0.0
    c["active_days_28d"] = (engaged["active_days_28d"] * 0.3).round().astype(int)
    c["events_days_28d"] = (engaged["events_days_28d"] * 0.3).round().astype(int)
    for name in ("sessions_28d", "events_value_28d", "events_count_28d", "events_event_type_activity_28d"):
        c[name] = (engaged[name] * 0.3).round() if name != "events_value_28d" else engaged[name] * 0.3
    c["activity_trend_7d_28d"] = 1.0 / (c["active_days_28d"] / 4.0 + 1.0)
    c["events_trend_28d_91d"] = (c["events_days_28d"] + 1.0) / (engaged["events_days_91d"] * 4.0 / 13.0 + 1.0)
    c["days_since_last_active"] = c["events_recency_days"] = 12
    return c


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
    """Two complaints and a failed payment in the last 28 days: the same customers must score riskier."""
    calm = scores[(scores["complaints_28d"] == 0) & (scores["payment_failures_28d"] == 0)].head(50).copy()
    troubled = calm.copy()
    for name, n in (("complaints", 2), ("payment_failures", 1)):
        kind = "complaint" if name == "complaints" else "payment_failed"
        for window in ("28d", "91d"):  # the signal and the events source's count of that kind
            troubled[f"{name}_{window}"] = calm[f"{name}_{window}"] + n
            troubled[f"events_event_type_{kind}_{window}"] = calm[f"events_event_type_{kind}_{window}"] + n
    for window in ("28d", "91d", "364d", "all"):
        troubled[f"events_count_{window}"] = calm[f"events_count_{window}"] + 3
    before = scorer.score(calm)["churn_probability"].to_numpy()
    after = scorer.score(troubled)["churn_probability"].to_numpy()
    assert (after > before).mean() >= 0.9, (after > before).mean()


def test_clv_grows_with_price(scorer, scores):
    """Same customers on the premium tier, paying four times as much: the predicted revenue must be clearly higher.

    Both change together, as they do in the data (a tier's price is what its customers pay): on
    2,000 customers the value model's trees split on the tier first, and payments four times a
    basic customer's with a basic tier are a combination its training rows never held.
    """
    base = scores[scores["price_tier"] == "basic"].head(100).copy()
    amounts = [c for c in scores.columns if c.startswith("payments_amount_")] + ["payments_monetary"]
    pricier = base.assign(price_tier="premium", **{c: base[c] * 4 for c in amounts})
    assert len(base) == 100 and len(amounts) == 6
    assert scorer.score(pricier)["clv"].mean() > scorer.score(base)["clv"].mean() * 1.5


def test_scores_are_probabilities_and_segments_cover_all(scores):
    assert scores["churn_probability"].between(0, 1).all()
    assert (scores["clv"] >= 0).all()
    assert set(scores["segment"]) == {"low", "medium", "high"}
    # edges are the 50th and 80th percentiles of recent CLV: the top segment is a minority
    assert 0.1 < (scores["segment"] == "high").mean() < 0.35


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The demo's default population (20,000 customers), through ingest, features and training.

    About four minutes of two cores (the self-tuning search): the tests reading it are `slow`,
    and CI runs them after the default suite (`make test-quality`).
    """
    settings, _ = prepared(make_settings(tmp_path_factory.mktemp("default")), settings_population=True)
    return settings, train(settings)


@pytest.fixture(scope="module")
def default_rows(default_run) -> TrainingData:
    """The labelled rows with their features, and the evaluation splits, exactly as training made them."""
    settings, _ = default_run
    return training_data(settings)


def _figures(engine: dict, base: dict) -> str:
    """The engine's and the baselines' figures of one split, as `churn train` measured them."""
    single, logistic = base["best_single_feature"], base["logistic_regression"]
    return (
        f"on {engine['customers']:,.0f} held-out customers: engine ROC AUC {engine['roc_auc']:.4f}, "
        f"lift {engine['top_decile_lift']:.2f}; best single feature {single['feature']} AUC {single['roc_auc']:.4f}, "
        f"best lift {single['lift_feature']} {single['top_decile_lift']:.2f}; logistic regression "
        + (logistic["error"] if "error" in logistic else f"AUC {logistic['roc_auc']:.4f}, lift {logistic['top_decile_lift']:.2f}")
    )


# The engine must rank clearly better than any raw feature: 0.05 of ROC AUC is about half of
# its smallest gap on the simulator of issue 15 (0.095: 0.804 against sessions_7d's 0.706 on
# average; 0.079 on the earlier simulator), and a model reduced to sessions_7d falls below that
# feature, not 0.05 above it.
FEATURE_AUC_MARGIN = 0.05
# Top-decile lift over the best single feature's: +0.99 on average on the simulator of issue 15
# (5.08 against 4.09; +1.54 on the earlier simulator's latest cutoff).
FEATURE_LIFT_MARGIN = 0.5
# Against the logistic regression no margin: "not worse". On the simulator of issue 15 the engine
# is ahead by 0.034 to 0.046 of ROC AUC over the cutoffs (0.022 to 0.053 on the earlier one).


@pytest.mark.slow
def test_default_demo_meets_the_quality_bar(default_run, default_rows):
    """Issue acceptance: on the default demo data, held-out ROC AUC >= 0.75 and top-decile lift >= 2.5.

    Those absolute figures are reached by one raw feature, so the bar is relative as well, on
    the same rows: on every evaluation split (a model fitted on earlier cutoffs only), the engine
    must beat the best single feature by a margin and be no worse than a logistic regression
    fitted on the rows the engine was fitted on; on the latest split its lift must beat the
    best single feature's by a margin too. The baselines are the ones `churn train` measured
    and printed in the same run (`training.baselines.Baselines`, in `evaluation.json`).
    """
    _, result = default_run
    assert len(result.baselines) == len(result.split_names) == len(result.per_split)
    assert default_rows.split_names == result.split_names
    for name, metrics, base, (_, test_rows) in zip(result.split_names, result.per_split, result.baselines, default_rows.splits):
        said = f"split {name} " + _figures(metrics, base)
        assert "error" not in base["logistic_regression"], said
        # the baselines' rows are the rows training measured the engine on: the split's test rows
        assert metrics["customers"] == base["best_single_feature"]["customers"] == base["logistic_regression"]["customers"], said
        assert base["best_single_feature"]["customers"] == len(test_rows), said
        assert metrics["roc_auc"] >= 0.75 and metrics["top_decile_lift"] >= 2.5, said
        assert metrics["roc_auc"] >= base["best_single_feature"]["roc_auc"] + FEATURE_AUC_MARGIN, said
        assert metrics["roc_auc"] >= base["logistic_regression"]["roc_auc"], said
    latest, base = result.per_split[-1], result.baselines[-1]
    said = _figures(latest, base)
    assert latest["top_decile_lift"] >= base["best_single_feature"]["top_decile_lift"] + FEATURE_LIFT_MARGIN, said
    assert latest["top_decile_lift"] >= base["logistic_regression"]["top_decile_lift"], said
    # the held-out predictions the result carries are the ones measured
    held = result.held_out[result.held_out["split"] == result.split_names[-1]]
    assert roc_auc_score(held["churned"], held["probability"]) == pytest.approx(latest["roc_auc"], abs=1e-12)
    # and the value model ranks customers by value
    assert result.clv_metrics["spearman"] >= 0.5


@pytest.mark.slow
def test_default_demo_is_calibrated(default_run):
    """Issue acceptance: expected calibration error <= 0.02 on every evaluation split, and the report shows the latest."""
    _, result = default_run
    assert all(m["ece"] <= 0.02 for m in result.per_split), [m["ece"] for m in result.per_split]
    latest = result.per_split[-1]
    assert f"<b>{latest['ece']:.4f}</b> after" in result.report_path.read_text()
    assert latest["empc"] > 0 and 0 < latest["empc_contact_share"] < 0.2


# The high-value segment is mostly annual plans, whose churn is timed by renewal and, a third of
# it, comes with no decline first (the simulator of issue 15): there the engine reached 0.648
# (plan alone 0.596) where the earlier, cleaner simulator gave over 0.7. The margin over the best
# single feature is the bar that means something; the floor only catches a model gone flat.
SEGMENT_AUC_FLOOR = 0.62


@pytest.mark.slow
def test_model_holds_in_every_value_segment(default_run, default_rows):
    """Slices: the churn model ranks risk within each value segment, not only across them, and beats any raw feature there.

    Held-out rows of every evaluation split, pooled (each scored by its own split's model), so
    that the top segment (a fifth of the customers, about 2 % of them churning per cutoff) holds
    enough churners for a margin of 0.05 to mean something.
    """
    settings, result = default_run
    data = default_rows
    held = result.held_out
    low, high = result.segment_edges
    segment = np.where(held["value"] >= high, "high", np.where(held["value"] >= low, "medium", "low"))
    rows = pd.concat([data.frame.iloc[test_rows] for _, test_rows in data.splits], ignore_index=True)
    assert (rows["customer_id"].to_numpy() == held["customer_id"].to_numpy()).all()
    fit = data.frame.iloc[np.unique(np.concatenate([train_rows for train_rows, _ in data.splits]))]
    # each feature alone, a category by its churn rate on the splits' training rows, as `churn train` judges them
    single = SingleFeatures(data.feature_names, data.categorical).fit(fit, fit["churned"].to_numpy())
    for name in ("low", "medium", "high"):
        part, y = rows[segment == name], held.loc[segment == name, "churned"].to_numpy()
        engine = roc_auc_score(y, held.loc[segment == name, "probability"])
        best = best_single_feature(y, single.scores(part))
        said = (
            f"segment {name}, {len(part)} rows, {y.sum()} churned: "
            f"engine ROC AUC {engine:.4f}, best single feature {best['feature']} {best['roc_auc']:.4f}"
        )
        assert y.sum() >= 30, said
        assert engine >= SEGMENT_AUC_FLOOR, said
        assert engine >= best["roc_auc"] + FEATURE_AUC_MARGIN, said


def test_serving_refuses_a_model_whose_feature_service_is_not_served(engine, tmp_path):
    """A copy of the engine's Feast registry without its feature service: the champion cannot be served from it."""
    settings = engine.settings.model_copy(update={"data_dir": tmp_path / "data"})
    shutil.copytree(engine.settings.feature_repo_dir, settings.feature_repo_dir)
    shutil.copytree(engine.settings.ingested_dir, settings.ingested_dir)
    feature_store(settings).delete_feature_service(engine.service)
    with pytest.raises(ConfigError, match=rf"trained on feature service '{engine.service}', which the feature store does not serve"):
        Scorer.load(settings)
