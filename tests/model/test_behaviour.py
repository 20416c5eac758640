"""Model behaviour: what the models must do, whatever their exact numbers."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn.errors import ConfigError
from features.definitions import feature_names
from features.store import feature_store
from serving.scoring import Scorer
from training.backtest import split_at
from training.baselines import OneHotLogistic
from training.dataset import label_frame, training_set
from training.evaluate import top_decile_lift
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


@pytest.fixture(scope="module")
def default_rows(default_run) -> tuple[list[pd.Timestamp], pd.DataFrame]:
    """The registered churn model's cutoffs (as the registry records them) and their labelled rows with features."""
    settings, _ = default_run
    spec = Scorer.load(settings).churn.extra
    cutoffs = [pd.Timestamp(c, tz="UTC") for c in (*spec["fit_cutoffs"], spec["calibration_cutoff"], spec["test_cutoff"])]
    labels = label_frame(settings.raw_dir, cutoffs, settings.training.horizon_days, settings.training.clv_horizon_days)
    return cutoffs, training_set(settings, labels, settings.training.feature_service)


def _single_feature_scores(fit: pd.DataFrame, rows: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """Each feature on its own as a risk score of `rows`: a number as it is, a category by its churn rate on `fit`.

    A missing value (last_nps of a customer never surveyed, a category unseen in `fit`) ranks
    lowest, so no row is dropped and every feature is judged on the same rows as the engine.
    """
    out = {}
    for name in names:
        if pd.api.types.is_numeric_dtype(rows[name]):
            score = rows[name].astype(float).to_numpy()
        else:
            score = rows[name].map(fit.groupby(name)["churned"].mean()).astype(float).to_numpy()
        missing = np.isnan(score)
        out[name] = np.where(missing, np.nanmin(score) - 1.0, score) if missing.any() else score
    return out


def _baselines(fit: pd.DataFrame, test: pd.DataFrame, names: list[str]) -> dict:
    """The best single feature (by ROC AUC and by lift, each in its better direction) and a logistic regression.

    The logistic regression (one-hot categories, standardized numbers) is fitted on `fit`,
    the rows the engine's trees were fitted on, and scored on the held-out `test` rows.
    """
    y = test["churned"].to_numpy()
    auc, lift = {}, {}
    for name, score in _single_feature_scores(fit, test, names).items():
        a = roc_auc_score(y, score)
        auc[name] = max(a, 1.0 - a)
        lift[name] = top_decile_lift(y, score if a >= 0.5 else -score)
    categorical = [n for n in names if not pd.api.types.is_numeric_dtype(fit[n])]
    logistic = OneHotLogistic(names, categorical).fit(fit, fit["churned"].to_numpy()).predict(test)
    best_auc, best_lift = max(auc, key=auc.get), max(lift, key=lift.get)
    return {
        "feature_auc": (best_auc, auc[best_auc]),
        "feature_lift": (best_lift, lift[best_lift]),
        "logistic_auc": float(roc_auc_score(y, logistic)),
        "logistic_lift": top_decile_lift(y, logistic),
    }


@pytest.fixture(scope="module")
def fold_baselines(default_run, default_rows) -> dict[str, dict]:
    """Baselines of every backtest fold, on that fold's own fitting and test rows, by test cutoff."""
    settings, _ = default_run
    cutoffs, frame = default_rows
    names = feature_names(settings.training.feature_service)
    out = {}
    for k in range(len(cutoffs) - settings.training.backtest_folds, len(cutoffs)):
        fit, _, test = split_at(frame, cutoffs, k)
        out[f"{cutoffs[k]:%Y-%m-%d}"] = _baselines(fit, test, names) | {"customers": len(test)}
    return out


def _figures(engine_auc: float, engine_lift: float, base: dict) -> str:
    (f_auc, auc), (f_lift, lift) = base["feature_auc"], base["feature_lift"]
    return (
        f"on {base['customers']:,} held-out customers: engine ROC AUC {engine_auc:.4f}, lift {engine_lift:.2f}; "
        f"best single feature {f_auc} AUC {auc:.4f}, best lift {f_lift} {lift:.2f}; "
        f"logistic regression AUC {base['logistic_auc']:.4f}, lift {base['logistic_lift']:.2f}"
    )


# The engine must rank clearly better than any raw feature: 0.05 of ROC AUC is about half of
# today's smallest gap (0.079, fold 2026-08-02; sessions_7d alone has 0.784 on the latest
# cutoff), and a model reduced to sessions_7d falls below that feature, not 0.05 above it.
FEATURE_AUC_MARGIN = 0.05
# Top-decile lift over the best single feature's: today +1.54 on the latest cutoff (6.80 against 5.26).
FEATURE_LIFT_MARGIN = 0.5
# Against the logistic regression no margin: "not worse". Today the engine is ahead by 0.022 to
# 0.053 of ROC AUC over the folds, and by 0.88 of lift on the latest cutoff (6.80 against 5.92).


def test_default_demo_meets_the_quality_bar(default_run, default_rows, fold_baselines):
    """Issue acceptance: on the default demo data, validation ROC AUC >= 0.75 and top-decile lift >= 2.5.

    Those absolute figures are reached by one raw feature, so the bar is relative as well, on
    the same rows: the engine must beat the best single feature by a margin and be no worse
    than a logistic regression fitted on the rows the engine was fitted on, on the latest
    cutoff (the registered model) and on every backtest fold.
    """
    settings, result = default_run
    metrics = result.churn_metrics
    latest = fold_baselines[f"{default_rows[0][-1]:%Y-%m-%d}"]
    said = _figures(metrics["roc_auc"], metrics["top_decile_lift"], latest)
    assert metrics["roc_auc"] >= 0.75 and metrics["top_decile_lift"] >= 2.5, said
    assert metrics["roc_auc"] >= latest["feature_auc"][1] + FEATURE_AUC_MARGIN, said
    assert metrics["top_decile_lift"] >= latest["feature_lift"][1] + FEATURE_LIFT_MARGIN, said
    assert metrics["roc_auc"] >= latest["logistic_auc"], said
    assert metrics["top_decile_lift"] >= latest["logistic_lift"], said
    # the backtest holds up over time: every fold ranks risk well, not only the latest
    folds = result.backtest[result.backtest["test_cutoff"] != "all"]
    assert list(folds["test_cutoff"]) == list(fold_baselines), (list(folds["test_cutoff"]), list(fold_baselines))
    for _, fold in folds.iterrows():
        base = fold_baselines[fold["test_cutoff"]]
        said = f"fold {fold['test_cutoff']} " + _figures(fold["roc_auc"], fold["top_decile_lift"], base)
        assert fold["roc_auc"] >= 0.75, said
        assert fold["roc_auc"] >= base["feature_auc"][1] + FEATURE_AUC_MARGIN, said
        assert fold["roc_auc"] >= base["logistic_auc"], said
    # The baselines' rows are the rows training measured the engine on: the champion scored on
    # them gives the figure training recorded. (A run with shuffled labels records its figures
    # against the shuffled labels, so it would differ here too, had it passed the bar.)
    _, frame = default_rows
    test = frame[frame["event_timestamp"] == default_rows[0][-1]]
    scored = Scorer.load(settings).score(test)
    rescored = roc_auc_score(scored["churned"], scored["churn_probability"])
    assert rescored == pytest.approx(metrics["roc_auc"], abs=1e-9), (rescored, metrics["roc_auc"], len(test))
    # and the CLV model ranks customers by value
    assert result.clv_metrics["spearman"] >= 0.5


def test_default_demo_is_calibrated_on_the_latest_cutoff(default_run):
    """Issue acceptance: expected calibration error <= 0.02 on the latest cutoff, and the report shows it."""
    _, result = default_run
    assert result.churn_metrics["ece"] <= 0.02
    latest = result.backtest.iloc[-2]
    assert latest["ece"] == result.churn_metrics["ece"]
    assert f"<b>{latest['ece']:.4f}</b> after" in result.report_path.read_text()
    assert result.churn_metrics["empc"] > 0 and 0 < result.churn_metrics["empc_contact_share"] < 0.2


def test_model_holds_in_every_clv_segment(default_run, default_rows):
    """Slices: the churn model ranks risk within each CLV segment, not only across them, and beats any raw feature there."""
    settings, _ = default_run
    cutoffs, frame = default_rows
    fit, _, test = split_at(frame, cutoffs, len(cutoffs) - 1)
    scored = Scorer.load(settings).score(test)
    names = feature_names(settings.training.feature_service)
    for segment, part in scored.groupby("segment"):
        y = part["churned"].to_numpy()
        engine = roc_auc_score(y, part["churn_probability"])
        feature = {n: roc_auc_score(y, s) for n, s in _single_feature_scores(fit, part, names).items()}
        best = max(feature, key=lambda n: max(feature[n], 1.0 - feature[n]))
        best_auc = max(feature[best], 1.0 - feature[best])
        said = (
            f"segment {segment}, {len(part)} customers, {y.sum()} churned: "
            f"engine ROC AUC {engine:.4f}, best single feature {best} {best_auc:.4f}"
        )
        assert y.sum() >= 10, said
        assert engine >= 0.7, said
        # today 0.10-0.12 above the best feature of each segment (the high one: 0.715 against plan's 0.606)
        assert engine >= best_auc + FEATURE_AUC_MARGIN, said


def test_serving_refuses_a_model_whose_feature_service_is_not_served(engine, tmp_path):
    """A copy of the engine's Feast registry without churn_model_v1: the champion cannot be served from it."""
    settings = engine.settings.model_copy(update={"data_dir": tmp_path / "data"})
    shutil.copytree(engine.settings.feature_repo_dir, settings.feature_repo_dir)
    feature_store(settings).delete_feature_service(settings.training.feature_service)
    with pytest.raises(ConfigError, match=r"trained on feature service 'churn_model_v1', which the feature store does not serve"):
        Scorer.load(settings)
