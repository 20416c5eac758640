"""Train the churn classifier and the CLV regressor, log them to MLflow, register both.

Time-based split over the cutoffs (oldest first): fit on all but the last two, stop
early on the second-to-last, report metrics on the latest, which no fitting step saw.
Both new versions are aliased `champion`.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass

import lightgbm as lgb
import mlflow
import mlflow.lightgbm
import numpy as np
import pandas as pd

from churn.errors import DataError
from churn.settings import Settings
from features.build import raw_as_of
from features.definitions import feature_names
from training.dataset import check_features, cutoff_dates, fingerprint, label_frame, training_set
from training.evaluate import churn_metrics, clv_metrics
from training.model import GradientBoostedModel
from training.model_dask import DaskGradientBoostedModel
from training.registry import CHAMPION, connect, experiment_id, spec_path

CLV_SERVICE = "clv_model_v1"
# CLV segments: value quantiles of the recent population (below the median, median to 80th, top 20%).
SEGMENT_QUANTILES = (0.5, 0.8)


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


def _split(frame: pd.DataFrame, cutoffs: list) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    stamps = pd.to_datetime(cutoffs, utc=True)
    train = frame[frame["event_timestamp"] < stamps[-2]]
    stop = frame[frame["event_timestamp"] == stamps[-2]]
    test = frame[frame["event_timestamp"] == stamps[-1]]
    for name, part in (("training", train), ("early-stopping", stop), ("validation", test)):
        if part.empty:
            raise DataError(f"the {name} cutoffs hold no active customer; simulate more days or fewer cutoffs")
    return train, stop, test


def _fit(task: str, frame: pd.DataFrame, target: str, cutoffs: list, features: list[str], rounds: int, client=None):
    train, stop, test = _split(frame, cutoffs)
    if client is None:
        model = GradientBoostedModel(task=task, num_boost_round=rounds)
    else:  # Dask mode: lightgbm.dask on the cluster's workers
        model = DaskGradientBoostedModel(client=client, task=task, num_boost_round=rounds)
    model = model.fit(
        train, train[target].to_numpy(), stop, stop[target].to_numpy(), features
    )
    return model, train, test


def train(settings: Settings, step: Callable[[str], None] = lambda _: None, client=None) -> TrainResult:
    """Build both training sets from Feast, fit, evaluate, log and register.

    `step` is called with a short description before each stage (for progress output).
    `client` (a `distributed.Client`) fits both models with `lightgbm.dask` on its workers.
    """
    cfg = settings.training
    as_of = raw_as_of(settings.raw_dir)
    churn_cutoffs = cutoff_dates(as_of, cfg.horizon_days, cfg.n_cutoffs, cfg.cutoff_spacing_days)
    clv_cutoffs = cutoff_dates(as_of, cfg.clv_horizon_days, cfg.n_cutoffs, cfg.cutoff_spacing_days)

    step("labels")
    labels = label_frame(settings.raw_dir, churn_cutoffs + clv_cutoffs, cfg.horizon_days, cfg.clv_horizon_days)
    churn_labels = labels[labels["event_timestamp"].isin(pd.to_datetime(churn_cutoffs, utc=True))]
    clv_labels = labels[labels["event_timestamp"].isin(pd.to_datetime(clv_cutoffs, utc=True))]

    step("point-in-time training sets (Feast)")
    churn_features = feature_names(cfg.feature_service)
    clv_features = feature_names(CLV_SERVICE)
    churn_frame = training_set(settings, churn_labels[["customer_id", "event_timestamp", "churned"]], cfg.feature_service)
    clv_frame = training_set(settings, clv_labels[["customer_id", "event_timestamp", "future_revenue"]], CLV_SERVICE)
    check_features(churn_frame, churn_features, f"churn training set ({cfg.feature_service})")
    check_features(clv_frame, clv_features, f"CLV training set ({CLV_SERVICE})")

    step("fit churn model")
    churn_model, churn_train, churn_test = _fit(
        "churn", churn_frame, "churned", churn_cutoffs, churn_features, cfg.num_boost_round, client
    )
    churn_scores = churn_model.predict(churn_test)
    c_metrics = churn_metrics(churn_test["churned"].to_numpy(), churn_scores)

    step("fit CLV model")
    clv_model, clv_train, clv_test = _fit(
        "clv", clv_frame, "future_revenue", clv_cutoffs, clv_features, cfg.num_boost_round, client
    )
    v_metrics = clv_metrics(clv_test["future_revenue"].to_numpy(), clv_model.predict(clv_test))
    # segment edges from the CLV of the most recent labelled population
    recent_clv = clv_model.predict(churn_test)
    edges = [float(np.quantile(recent_clv, q)) for q in SEGMENT_QUANTILES]

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
                "churn_best_iteration": churn_model.best_iteration_,
                "clv_best_iteration": clv_model.best_iteration_,
                "churn_train_rows": len(churn_train),
                "clv_train_rows": len(clv_train),
                **{f"lgb_{k}": v for k, v in churn_model.lgb_params().items() if k not in ("objective", "metric")},
            }
        )
        mlflow.log_metrics({f"churn_val_{k}": v for k, v in c_metrics.items()})
        mlflow.log_metrics({f"clv_val_{k}": v for k, v in v_metrics.items()})
        mlflow.set_tags(
            {
                "feature_service.churn": cfg.feature_service,
                "feature_service.clv": CLV_SERVICE,
                "data_fingerprint.churn": fingerprint(churn_frame),
                "data_fingerprint.clv": fingerprint(clv_frame),
                "lightgbm_version": lgb.__version__,
                "python_version": platform.python_version(),
            }
        )
        versions = {}
        for name, model, service, extra in (
            (cfg.churn_model_name, churn_model, cfg.feature_service, {}),
            (cfg.clv_model_name, clv_model, CLV_SERVICE, {"segment_edges": edges, "segment_quantiles": list(SEGMENT_QUANTILES)}),
        ):
            mlflow.log_dict(
                {
                    "feature_service": service,
                    "feature_names": model.feature_names_,
                    "categories": model.categories_,
                    "best_iteration": model.best_iteration_,
                    "extra": extra,
                },
                spec_path(name),
            )
            info = mlflow.lightgbm.log_model(model.booster_, name=name, registered_model_name=name)
            version = str(info.registered_model_version)
            client.set_model_version_tag(name, version, "feature_service", service)
            client.set_model_version_tag(name, version, "run_id", run.info.run_id)
            client.set_registered_model_alias(name, CHAMPION, version)
            versions[name] = version
    return TrainResult(
        run_id=run.info.run_id,
        churn_version=versions[cfg.churn_model_name],
        clv_version=versions[cfg.clv_model_name],
        churn_metrics=c_metrics,
        clv_metrics=v_metrics,
        n_train_rows=len(churn_train),
        segment_edges=edges,
    )
