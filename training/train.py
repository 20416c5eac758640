"""Train the churn classifier and the CLV regressor, log them to MLflow, register both.

Time-based split over the cutoffs (oldest first): fit on all but the last two, stop
early on the second-to-last, report metrics on the latest, which no fitting step saw.
The churn model is the latest fold of a rolling backtest (`training/backtest.py`) and carries
a probability calibration fitted on the early-stopping cutoff. Every run writes an HTML
report. Both new versions are aliased `challenger`; `churn promote` decides whether they
replace the champion (the very first versions become champion at once: there is nothing to
compare them with).
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd

from churn.errors import DataError
from churn.settings import Settings
from features.build import raw_as_of
from features.definitions import feature_names
from training.backtest import run_backtest
from training.dataset import check_features, cutoff_dates, fingerprint, label_frame, to_matrix, training_set
from training.evaluate import clv_metrics, gains_curve, reliability_table
from training.explain import contributions, global_importance
from training.model import GradientBoostedModel
from training.promote import promote
from training.registry import CHAMPION, connect, experiment_id, has_alias, log_booster
from training.report import TrainingReport, segment_metrics, write_report
from training.value import SEGMENT_QUANTILES, segment_edges

CLV_SERVICE = "clv_model_v1"
# Rows whose SHAP contributions make the report's global importance. TreeSHAP costs about
# 3 ms a row for these models (136 s for 40,000 rows at 20,000 customers): over a million
# customers' test cutoff it would take longer than everything else; the mean absolute
# contribution of a random sample of this size is stable to well under a percent of its share.
IMPORTANCE_SAMPLE_ROWS = 5_000


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    run_id: str
    churn_version: str
    clv_version: str
    churn_metrics: dict[str, float]
    clv_metrics: dict[str, float]
    n_train_rows: int
    segment_edges: list[float]
    backtest: pd.DataFrame
    report_path: Path
    promotion: str


def _split(frame: pd.DataFrame, cutoffs: list) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    stamps = pd.to_datetime(cutoffs, utc=True)
    train = frame[frame["event_timestamp"] < stamps[-2]]
    stop = frame[frame["event_timestamp"] == stamps[-2]]
    test = frame[frame["event_timestamp"] == stamps[-1]]
    for name, part in (("training", train), ("early-stopping", stop), ("validation", test)):
        if part.empty:
            raise DataError(f"the {name} cutoffs hold no active customer; simulate more days or fewer cutoffs")
    return train, stop, test


def sample_rows(frame: pd.DataFrame, rows: int = IMPORTANCE_SAMPLE_ROWS, seed: int = 0) -> pd.DataFrame:
    """At most `rows` rows of `frame`, drawn at random (reproducibly)."""
    return frame if len(frame) <= rows else frame.sample(rows, random_state=seed)


def model_factory(settings: Settings, client=None) -> Callable[[str], GradientBoostedModel]:
    """The estimator of every fit of a training run: one machine, or `lightgbm.dask` on `client`.

    Both have the same contract (`training/model_dask.py`), so the backtest, calibration,
    reports and registry do not change; on Dask, the training matrix is split into
    `dask.partitions` row blocks across the workers.
    """
    cfg = settings.training
    if client is None:
        return lambda task: GradientBoostedModel(task=task, num_boost_round=cfg.num_boost_round, num_threads=cfg.num_threads)
    from training.model_dask import DaskGradientBoostedModel

    return lambda task: DaskGradientBoostedModel(
        client=client, task=task, num_boost_round=cfg.num_boost_round, partitions=settings.dask.partitions
    )


def _fit(
    make_model: Callable[[str], GradientBoostedModel], task: str, frame: pd.DataFrame, target: str, cutoffs: list, features: list[str]
) -> tuple[GradientBoostedModel, int, pd.DataFrame]:
    """Fit on the early cutoffs, stop early on the second-to-last; return the model, its row count and the latest cutoff's rows."""
    train, stop, test = _split(frame, cutoffs)
    model = make_model(task).fit(
        train, train[target].to_numpy(), stop, stop[target].to_numpy(), features
    )
    return model, len(train), test


def _shuffled(labels: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Churn labels permuted within each cutoff: same base rates, no signal (a deliberately useless model)."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    for _, rows in out.groupby("event_timestamp").groups.items():
        out.loc[rows, "churned"] = rng.permutation(out.loc[rows, "churned"].to_numpy())
    return out


def train(
    settings: Settings, step: Callable[[str], None] = lambda _: None, shuffle_labels: bool = False, client=None
) -> TrainResult:
    """Build both training sets from Feast, backtest, fit, calibrate, evaluate, report, log and register.

    `step` is called with a short description before each stage (for progress output).
    `shuffle_labels` permutes the churn labels within each cutoff: a model that cannot be
    better than chance, to show (and test) that `churn promote` refuses it.
    `client`: a `distributed.Client` (Dask mode, `churn.cluster.dask_client`): every fit (the CLV
    model and each backtest fold, the latest of which is registered) runs on the cluster with
    `lightgbm.dask`; labels, training sets, calibration and reports stay here.
    """
    make_model = model_factory(settings, client)
    cfg = settings.training
    as_of = raw_as_of(settings.raw_dir)
    churn_cutoffs = cutoff_dates(as_of, cfg.horizon_days, cfg.n_cutoffs, cfg.cutoff_spacing_days)
    clv_cutoffs = cutoff_dates(as_of, cfg.clv_horizon_days, cfg.n_cutoffs, cfg.cutoff_spacing_days)

    step("labels")
    labels = label_frame(settings.raw_dir, churn_cutoffs + clv_cutoffs, cfg.horizon_days, cfg.clv_horizon_days)
    churn_labels = labels[labels["event_timestamp"].isin(pd.to_datetime(churn_cutoffs, utc=True))]
    clv_labels = labels[labels["event_timestamp"].isin(pd.to_datetime(clv_cutoffs, utc=True))]
    if shuffle_labels:
        churn_labels = _shuffled(churn_labels, settings.simulation.seed)

    # One training set at a time, each freed once its model is fitted: the CLV fit needs only
    # its own set, and the churn backtest needs the CLV model (its CLV-weighted profit metric).
    step("point-in-time training set for the CLV model (Feast)")
    churn_features = feature_names(cfg.feature_service)
    clv_features = feature_names(CLV_SERVICE)
    clv_frame = training_set(settings, clv_labels[["customer_id", "event_timestamp", "future_revenue"]], CLV_SERVICE)
    check_features(clv_frame, clv_features, f"CLV training set ({CLV_SERVICE})")
    clv_fingerprint = fingerprint(clv_frame)

    step("fit CLV model")
    clv_model, n_clv_train, clv_test = _fit(make_model, "clv", clv_frame, "future_revenue", clv_cutoffs, clv_features)
    del clv_frame
    v_metrics = clv_metrics(clv_test["future_revenue"].to_numpy(), clv_model.predict(clv_test))

    step("point-in-time training set for the churn model (Feast)")
    churn_frame = training_set(settings, churn_labels[["customer_id", "event_timestamp", "churned"]], cfg.feature_service)
    del labels, churn_labels, clv_labels
    check_features(churn_frame, churn_features, f"churn training set ({cfg.feature_service})")
    churn_fingerprint = fingerprint(churn_frame)

    def clv_of(frame: pd.DataFrame) -> np.ndarray:
        return np.maximum(clv_model.predict(frame), 0.0)

    step(f"backtest churn model over {cfg.backtest_folds} rolling cutoffs")
    backtest = run_backtest(
        churn_frame, churn_cutoffs, churn_features, cfg.backtest_folds, cfg.num_boost_round, clv_of,
        settings.profit, cfg.calibration_bins, make_model=make_model,
    )
    del churn_frame
    latest = backtest.latest
    churn_model, churn_test = latest.model, latest.test
    c_metrics = {k: float(v) for k, v in backtest.table.iloc[-2].items() if k not in ("test_cutoff", "calibration")}
    # segment edges from the CLV of the most recent labelled population
    recent_clv = clv_of(churn_test)
    edges, _ = segment_edges(recent_clv)

    step("explanations and report")
    contrib = contributions(
        churn_model.booster_, to_matrix(sample_rows(churn_test), churn_model.feature_names_, churn_model.categories_),
        churn_model.feature_names_, churn_model.best_iteration_,
    )
    clv_contrib = contributions(
        clv_model.booster_, to_matrix(sample_rows(clv_test), clv_model.feature_names_, clv_model.categories_),
        clv_model.feature_names_, clv_model.best_iteration_,
    )
    y_latest = churn_test["churned"].to_numpy()
    report = TrainingReport(
        title=f"Training run of {as_of:%Y-%m-%d}" + (" (shuffled labels)" if shuffle_labels else ""),
        backtest=backtest.table,
        reliability_raw=reliability_table(y_latest, latest.raw_probability, cfg.calibration_bins),
        reliability=reliability_table(y_latest, latest.probability, cfg.calibration_bins),
        calibration_method=latest.calibrator.method_,
        calibration_cv_log_loss=latest.calibrator.cv_log_loss_,
        gains=gains_curve(y_latest, latest.probability),
        importance=global_importance(contrib),
        importance_clv=global_importance(clv_contrib),
        segments=segment_metrics(y_latest, latest.probability, recent_clv, edges),
        clv_metrics=v_metrics,
        profit=settings.profit,
    )

    step("log and register in MLflow")
    client = connect(settings)
    exp = experiment_id(settings, client)
    with mlflow.start_run(experiment_id=exp, run_name=f"train-{as_of:%Y%m%d}") as run:
        mlflow.log_params(
            {
                "as_of": as_of.isoformat(),
                "horizon_days": cfg.horizon_days,
                "clv_horizon_days": cfg.clv_horizon_days,
                "churn_cutoffs": ",".join(f"{c:%Y-%m-%d}" for c in churn_cutoffs),
                "clv_cutoffs": ",".join(f"{c:%Y-%m-%d}" for c in clv_cutoffs),
                "backtest_folds": cfg.backtest_folds,
                "calibration_method": latest.calibrator.method_,
                "shuffled_labels": shuffle_labels,
                "trained_on": "dask" if client is not None else "one machine",
                "churn_best_iteration": churn_model.best_iteration_,
                "clv_best_iteration": clv_model.best_iteration_,
                "churn_train_rows": latest.n_fit_rows,
                "clv_train_rows": n_clv_train,
                **{f"profit_{k}": v for k, v in settings.profit.model_dump().items()},
                **{f"lgb_{k}": v for k, v in churn_model.lgb_params().items() if k not in ("objective", "metric")},
            }
        )
        mlflow.log_metrics({f"churn_val_{k}": v for k, v in c_metrics.items()})
        mlflow.log_metrics({f"clv_val_{k}": v for k, v in v_metrics.items()})
        overall = backtest.table.iloc[-1]
        mlflow.log_metrics({f"churn_backtest_{k}": float(overall[k]) for k in c_metrics})
        for i, row in backtest.table.iloc[:-1].iterrows():
            mlflow.log_metrics({f"churn_backtest_fold_{k}": float(row[k]) for k in c_metrics}, step=int(i))
        mlflow.log_table(backtest.table, "evaluation/backtest.json")
        mlflow.log_table(report.importance, "evaluation/importance.json")
        mlflow.log_table(report.importance_clv, "evaluation/importance_clv.json")
        mlflow.log_table(report.reliability, "evaluation/reliability.json")
        mlflow.log_table(report.segments, "evaluation/segments.json")
        report_path = write_report(report, settings.reports_dir / f"train-{run.info.run_id}.html")
        mlflow.log_artifact(str(report_path), "report")
        mlflow.set_tags(
            {
                "feature_service.churn": cfg.feature_service,
                "feature_service.clv": CLV_SERVICE,
                "data_fingerprint.churn": churn_fingerprint,
                "data_fingerprint.clv": clv_fingerprint,
                "lightgbm_version": lgb.__version__,
                "python_version": platform.python_version(),
            }
        )
        churn_extra = {
            "calibration": latest.calibrator.to_dict(),
            "fit_cutoffs": [f"{c:%Y-%m-%d}" for c in latest.fit_cutoffs],
            "calibration_cutoff": f"{latest.calibration_cutoff:%Y-%m-%d}",
            "test_cutoff": f"{latest.test_cutoff:%Y-%m-%d}",
        }
        versions = {}
        for name, model, service, extra in (
            (cfg.churn_model_name, churn_model, cfg.feature_service, churn_extra),
            (cfg.clv_model_name, clv_model, CLV_SERVICE, {"segment_edges": edges, "segment_quantiles": list(SEGMENT_QUANTILES)}),
        ):
            spec = {
                "feature_service": service,
                "feature_names": model.feature_names_,
                "categories": model.categories_,
                "best_iteration": model.best_iteration_,
                "extra": extra,
            }
            versions[name] = log_booster(client, model.booster_, name, spec, run.info.run_id)
    promotion = _bootstrap_champion(settings, client)
    return TrainResult(
        run_id=run.info.run_id,
        churn_version=versions[cfg.churn_model_name],
        clv_version=versions[cfg.clv_model_name],
        churn_metrics=c_metrics,
        clv_metrics=v_metrics,
        n_train_rows=latest.n_fit_rows,
        segment_edges=edges,
        backtest=backtest.table,
        report_path=report_path,
        promotion=promotion,
    )


def _bootstrap_champion(settings: Settings, client) -> str:
    """Promote the first models ever trained (no champion to compare with); else leave them challengers."""
    if has_alias(client, settings.training.churn_model_name, CHAMPION):
        return "challenger: run `churn promote` to compare it with the champion"
    return promote(settings).reason
