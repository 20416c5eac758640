"""`churn train`: evaluate honestly, then train, calibrate, log and register the data set's models.

1. Evaluation on the config's splits (stratified folds for a snapshot, rolling cutoffs for
   logs; see `training/backtest.py`), with the same auto-tuned model that gets registered.
   Each split's model is calibrated exactly as the registered one is (below), from its own
   training rows only, so the calibrated figures (Brier, ECE, EMPC) of its test rows are as
   honest as the ranking ones.
2. The model to register is fitted on the latest fully labelled cutoffs (or the whole
   snapshot), side by side with the splits' fits (`training/fits.py`: one fit per usable
   core, in worker processes, each single-threaded; the same models as one after another);
   columns no model should use (constant, id-like, free text) are left out before any fit
   and reported (`training.dataset.screen_features`); its boosters are merged into one
   (`training.tuning.merged_booster`); it is calibrated by a `ProbabilityCalibrator` (Platt) fitted on its own held-out predictions of
   its training rows (`AutoTunedModel.held_out_probability_`: inner folds of a snapshot, the
   validation cutoff of logs), and logged as a LightGBM booster registered as
   `<data set>-churn` with its spec (`training/registry.py`).
   Why not a calibrator fitted on the evaluation splits' predictions: those come from other
   models, whose scale differs (one split's search may pick a 9-round model that keeps every
   score near the base rate); on the 1,200-customer snapshot of the e2e test, split 1
   calibrated by split 2's predictions had an ECE of 0.23 against 0.045 uncalibrated.
3. The value of each customer (`training/value.py`, the config's `value`): with method
   `model`, a revenue regressor is fitted and registered as `<data set>-clv`. Segment edges
   are value quantiles of the latest labelled population.
Both new versions are aliased `challenger`, with the held-out evaluation as version tags;
`churn promote` gates them together (`training/promote.py`); the first models of a
data set become champion at once.
"""

from __future__ import annotations

import platform
from functools import partial
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd

from churn.errors import DataError
from churn.settings import Settings
from features.build import read_views
from features.definitions import service_name
from training.backtest import fold_metrics
from training.calibration import ProbabilityCalibrator
from training.backtest import TrainingData, engine_model, held_out_predictions, summarize, training_data, training_end
from training.baselines import Baselines, comparison
from training.fits import fit_models, fit_on_cluster, fits_at_once, usable_cores
from training.promote import (
    clv_model_name, churn_model_name, evaluation_fingerprint, held_out_tags, promote,
)
from training.dataset import at_most, fingerprint, to_matrix
from training.evaluate import gains_curve, reliability_table
from training.explain import contributions, global_importance
from training.registry import CHAMPION, connect, experiment_id, has_alias, log_booster
from training.report import TrainingReport, segment_metrics, write_report
from training.tuning import AutoTunedModel
from training.value import SEGMENT_QUANTILES, ValueModel, customer_value, fit_value_model, segment_edges, value_column, value_spec


# Platt scaling only: it is strictly increasing, so calibration leaves the ranking (the gate's
# ROC AUC, who is contacted first) as the booster made it. Isotonic steps fitted on a few
# thousand held-out predictions tie customers: on the 1,200-customer snapshot of
# tests/e2e/test_ingested_lifecycle.py isotonic won on log-loss with 16 distinct values, and the
# champion's ROC AUC on new customers fell from 0.777 to 0.728.
CALIBRATION_METHODS = ("platt",)
IMPORTANCE_SAMPLE_ROWS = 5_000
# The baselines of a split are fitted on at most this many of its training rows (drawn at random,
# seeded), as many as the engine's own search sees (`AutoTunedModel.search_rows`): a logistic
# regression or 100 default trees gain nothing measurable from more, and on a 1,000,000-customer
# data set (5.6 M rows per split) their float64 copies alone would take 6-10 GB. Said in the figures.
BASELINE_ROWS = 250_000


@dataclass(frozen=True)
class TrainResult:
    """What `churn train` did."""

    run_id: str
    model_name: str
    version: str
    split_names: list[str]
    per_split: list[dict[str, float]]
    summary: dict[str, tuple[float, float]]
    n_train_rows: int
    search: list[dict]
    promotion: str
    value: dict  # the value spec, with `constant`
    segment_edges: list[float]
    clv_version: str | None = None
    clv_metrics: dict[str, float] | None = None
    calibration: dict | None = None  # the registered map (`kept_raw` when calibrating did not help)
    report_path: Path | None = None  # the run's HTML report (also logged with the run)
    # every evaluation split's test rows: split, customer_id, event_timestamp, churned, raw and calibrated
    # probability of that split's model, value
    held_out: pd.DataFrame | None = None
    left_out: dict[str, str] | None = None  # columns of the views no model uses, and why (`screen_features`)
    # per split, each baseline's figures (`training.baselines.Baselines.measure`) on the split's test rows
    baselines: list[dict[str, dict]] | None = None


def search_table(search: list[dict]) -> pd.DataFrame:
    """The search of a fitted `AutoTunedModel`, best first: one row per candidate setting."""
    return pd.DataFrame([{**c["params"], "rounds": c["rounds"], "validation_roc_auc": c["validation_auc"]} for c in search])


def sample_rows(frame: pd.DataFrame, rows: int = IMPORTANCE_SAMPLE_ROWS, seed: int = 0) -> pd.DataFrame:
    """At most `rows` rows of `frame`, drawn at random (reproducibly)."""
    return frame if len(frame) <= rows else frame.sample(rows, random_state=seed)


def _shuffled(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """Churn labels permuted within each cutoff: same base rates, no signal (a deliberately useless model)."""
    rng = np.random.default_rng(seed)
    labels = frame["churned"].to_numpy().copy()
    for rows in frame.groupby("event_timestamp").indices.values():
        labels[rows] = rng.permutation(labels[rows])
    return labels


def _value_of(spec: dict, frame: pd.DataFrame, probability: np.ndarray, value_model: ValueModel | None) -> np.ndarray:
    """`customer_value` of the rows of a training frame."""
    column = value_column(spec)
    columns = {column: frame[column].to_numpy(dtype=np.float64, na_value=np.nan)} if column else {}  # (a lean frame's may be float32)
    clv = value_model.predict(frame) if value_model is not None else None
    return customer_value(spec, columns, probability, clv)


def calibrate(model: AutoTunedModel, y: np.ndarray, seed: int) -> ProbabilityCalibrator:
    """The calibration of a fitted model, from its own held-out predictions of its training rows.

    - y: the labels the model was fitted on (all its rows; `held_out_rows_` indexes them)
    """
    rows = model.held_out_rows_
    return ProbabilityCalibrator(CALIBRATION_METHODS, seed=seed).fit(model.held_out_probability_, y[rows])


class KeptRaw:
    """No calibration: what the registered model uses when calibrating worsened the held-out ECE.

    Its map is the identity (Platt with slope 1 and intercept 0), so serving reads it as any other.
    """

    method_ = "none"
    cv_log_loss_: dict[str, float] = {}

    def __init__(self, ece_raw: float, ece_calibrated: float):
        self.ece_raw, self.ece_calibrated = ece_raw, ece_calibrated

    def predict(self, probability: np.ndarray) -> np.ndarray:
        return np.asarray(probability, dtype=float)

    def to_dict(self) -> dict:
        return {
            "method": "platt", "slope": 1.0, "intercept": 0.0, "kept_raw": True,
            "why": f"held-out ECE {self.ece_raw:.4f} without calibration, {self.ece_calibrated:.4f} with it",
        }


@dataclass(frozen=True)
class _Split:
    """One evaluation split's test rows: truth, raw and calibrated probability, value."""

    y: np.ndarray
    raw: np.ndarray
    probability: np.ndarray
    value: np.ndarray


def _evaluate(
    settings: Settings, data: TrainingData, make: Callable[[], AutoTunedModel], fit_labels, spec: dict, value_model,
    models: list | None = None,
) -> tuple[list[dict[str, float]], list[_Split]]:
    """Per-split held-out metrics (and predictions), raw and calibrated: each split's model calibrated as the registered one is."""
    y = data.frame["churned"].to_numpy()
    fit_y = y if fit_labels is None else fit_labels
    seed = data.contract.evaluation.seed
    per_split, parts = [], []
    for (train_rows, test_rows), (model, raw) in zip(data.splits, held_out_predictions(data, make, fit_labels, models)):
        p = calibrate(model, fit_y[train_rows], seed).predict(raw)
        value = _value_of(spec, data.frame.iloc[test_rows], p, value_model)
        per_split.append(fold_metrics(y[test_rows], p, raw, value, settings.profit, settings.training.calibration_bins))
        parts.append(_Split(y[test_rows], raw, p, value))
    return per_split, parts


def _baselines(data: TrainingData, y: np.ndarray, client, n_jobs: int | None, step: Callable[..., None]) -> list[dict[str, dict]]:
    """Each split's baselines (`training.baselines.Baselines`), fitted on its training rows (labels `y`), measured on its test rows.

    Fitted as the engine's models are: side by side in worker processes, or as Dask tasks.
    """
    make = partial(Baselines, data.feature_names, data.categorical, data.contract.evaluation.seed)
    seed = data.contract.evaluation.seed
    rows = [at_most(train_rows, BASELINE_ROWS, seed) for train_rows, _ in data.splits]
    what = f"fit the baselines ({len(rows)} splits)"
    if client is not None:
        step(f"{what} on the Dask cluster")
        fitted = fit_on_cluster(client, make(), data.frame, y, rows)
    else:
        step(what, 0, len(rows))
        fitted = fit_models(make, data.frame, y, rows, n_jobs, progress=lambda done, total: step(what, done, total))
    truth = data.frame["churned"].to_numpy()
    measured = []
    for model, fit_rows, (train_rows, test_rows) in zip(fitted, rows, data.splits):
        figures = model.measure(data.frame.iloc[test_rows], truth[test_rows])
        if len(fit_rows) < len(train_rows):  # said beside the figures: the engine's final fit saw every row
            for key in ("logistic_regression", "lightgbm_defaults"):
                figures[key]["fitted_on"] = f"fitted on {len(fit_rows):,} of the {len(train_rows):,} training rows"
        measured.append(figures)
    return measured


def _report(
    settings: Settings, data: TrainingData, per_split: list[dict], parts: list[_Split], model: AutoTunedModel,
    calibrator: ProbabilityCalibrator, value_model: ValueModel | None, latest: pd.DataFrame, spec: dict, edges: list[float],
    title: str, baselines: pd.DataFrame,
) -> TrainingReport:
    """The HTML report of the run (`training/report.py`), from the evaluation splits and the registered model."""
    bins = settings.training.calibration_bins
    pooled = fold_metrics(
        *(np.concatenate([getattr(s, k) for s in parts]) for k in ("y", "probability", "raw", "value")), settings.profit, bins
    )
    table = pd.DataFrame(
        [{"test_cutoff": n, "calibration": calibrator.method_, **m} for n, m in zip(data.split_names, per_split)]
        + [{"test_cutoff": "all", "calibration": calibrator.method_, **pooled}]
    )
    last = parts[-1]
    sample = sample_rows(latest)
    importance = global_importance(
        contributions(model.booster_, to_matrix(sample, list(model.feature_names), model.categories_), list(model.feature_names))
    )
    importance_clv = None
    if value_model is not None:
        matrix = to_matrix(sample, value_model.feature_names, value_model.categories)
        importance_clv = global_importance(contributions(value_model.booster, matrix, value_model.feature_names))
    value_words = {
        "model": f"predicted revenue over {spec['horizon_days']} days (`<data set>-clv`)",
        "charge": f"{spec['source_column']} x expected retained periods of {spec['period_days']} days within {spec['horizon_days']} days",
        "column": f"the column {spec['source_column']}",
        "constant": f"a constant {spec['amount']:g} for every customer (one segment)",
    }
    return TrainingReport(
        title=title,
        backtest=table,
        reliability_raw=reliability_table(last.y, last.raw, bins),
        reliability=reliability_table(last.y, last.probability, bins),
        calibration_method=calibrator.method_,
        calibration_cv_log_loss=calibrator.cv_log_loss_,
        gains=gains_curve(last.y, last.probability),
        importance=importance,
        importance_clv=importance_clv,
        segments=segment_metrics(last.y, last.probability, last.value, edges),
        clv_metrics=value_model.metrics if value_model is not None else None,
        profit=settings.profit,
        backtest_note=(
            "Each row: a model fitted on the split's training rows only (stratified folds of the snapshot, or "
            "earlier cutoffs of the logs) and calibrated on its own held-out predictions of them, tested on the "
            "split's test rows. 'all' pools every split's test customers."
        ),
        calibration_note="Fitted on the registered model's own held-out predictions of its training rows; method",
        clv_note=f"Value: {value_words[spec['method']]}" + (f"; model measured on cutoff {value_model.test_cutoff}" if value_model else ""),
        latest=f"split {data.split_names[-1]}",
        importance_rows="the latest labelled population (the registered models)",
        left_out=data.left_out,
        search=search_table(model.search_),
        baselines=baselines,
    )


def train(
    settings: Settings, step: Callable[..., None] = lambda what, done=None, total=None: None, shuffle_labels: bool = False,
    client=None,
) -> TrainResult:
    """Evaluate, fit and register the churn model (and the value model) of the data set, as challengers.

    `step(what, done=None, total=None)` is called as each step starts, and with the count of
    its parts done out of `total` where a step has parts (the model fits).
    `shuffle_labels` fits on labels permuted within each cutoff (evaluation still scores the
    true labels): a model no better than chance, to show (and test) that the gate refuses it.
    `client`: a `distributed.Client` (Dask mode, `churn.cluster.dask_client`): the churn model's
    fits (one per split, and the model to register) run as Dask tasks at once, and give the
    same models (`training.fits.fit_on_cluster`); so do the splits' baselines.
    """
    step("labels and point-in-time training set (Feast)")
    data = training_data(settings)
    contract = data.contract
    fit_labels = _shuffled(data.frame, contract.evaluation.seed) if shuffle_labels else None
    spec = value_spec(contract, settings)
    column = value_column(spec)
    if column and column not in data.feature_names:
        raise DataError(
            f"{contract.name}: value.column {spec['source_column']!r} is not a numeric feature of the snapshot "
            f"(no feature {column!r}; numeric snapshot columns become features named by their slug)"
        )
    if column and column in data.categorical:
        raise DataError(f"{contract.name}: value.column {spec['source_column']!r} must be numeric; it is categorical")

    value_model = None
    if spec["method"] == "model":
        step(f"fit the value model (revenue over {spec['horizon_days']} days)")
        views = read_views(settings.feature_tables_dir)
        value_model = fit_value_model(
            settings, contract, views["log_views"], training_end(settings, views), data.feature_names, data.categorical
        )

    y = data.frame["churned"].to_numpy() if fit_labels is None else fit_labels
    # one model per evaluation split, and the model to register: independent fits, all at once
    rows = [train_rows for train_rows, _ in data.splits] + [data.final_rows]
    what = f"fit {len(rows)} models ({len(data.splits)} evaluation splits and the model to register)"
    jobs = 1 if client is not None else fits_at_once(data.frame, rows, settings.training.n_jobs)
    # a new unfitted model per fit; a refit of millions of rows gets the cores the fits side by side leave
    threads = 1 if client is not None else max(1, usable_cores() // jobs)
    make = partial(engine_model, data, refit_rows=settings.training.refit_rows, refit_threads=threads)
    if client is not None:
        step(f"{what} on the Dask cluster")
        models, trained_on = fit_on_cluster(client, make(), data.frame, y, rows), "dask"
    else:
        step(what, 0, len(rows))
        models = fit_models(make, data.frame, y, rows, jobs, progress=lambda done, total: step(what, done, total))
        trained_on = f"one machine, {jobs} fit(s) at a time"
    step(f"evaluate on {len(data.splits)} splits")
    per_split, parts = _evaluate(settings, data, make, fit_labels, spec, value_model, models[:-1])
    summary = summarize(per_split)
    baselines = _baselines(data, y, client, settings.training.n_jobs, step)
    compared = comparison(data.split_names, per_split, baselines)
    held_out = pd.concat(
        [
            data.frame.iloc[test_rows][["customer_id", "event_timestamp", "churned"]].assign(
                split=name, raw=part.raw, probability=part.probability, value=part.value
            )
            for name, (_, test_rows), part in zip(data.split_names, data.splits, parts)
        ],
        ignore_index=True,
    )

    step("calibrate the model to register")
    # the registered model's rows, column by column: a copy of them all would double a large frame
    final_column = lambda name: data.frame[name].iloc[data.final_rows]  # noqa: E731
    model = models[-1]
    calibrator = calibrate(model, y[data.final_rows], contract.evaluation.seed)
    if summary["ece"][0] > summary["ece_raw"][0]:
        # the evaluation says this way of calibrating makes probabilities worse on this data set (a
        # drifting churn rate over log cutoffs: Online Retail 0.055 -> 0.082, CDNOW 0.017 -> 0.030):
        # the raw probabilities are kept, and the spec says why
        calibrator = KeptRaw(summary["ece_raw"][0], summary["ece"][0])
    # segment edges: value quantiles of the latest labelled population
    stamps = final_column("event_timestamp")
    latest = data.frame.iloc[data.final_rows[(stamps == stamps.max()).to_numpy()]]
    edges, constant = segment_edges(_value_of(spec, latest, calibrator.predict(model.predict(latest)), value_model))

    step("log and register in MLflow")
    name = churn_model_name(contract.name)
    service = service_name(contract.name)
    client = connect(settings)
    with mlflow.start_run(experiment_id=experiment_id(settings, client), run_name=f"train-{contract.name}") as run:
        mlflow.log_params(
            {
                "data_set": contract.name,
                "churn_definition": contract.churn.definition,
                "horizon_days": contract.churn.horizon_days,
                "splits": "; ".join(data.split_names),
                "train_rows": len(data.final_rows),
                "shuffled_labels": shuffle_labels,
                "calibration_method": calibrator.method_,
                "value_method": spec["method"],
                "trained_on": trained_on,
                "chosen": str([c["params"] for c in model.search_[: model.ensemble]])[:500],
            }
        )
        for k, (mean, sd) in summary.items():
            mlflow.log_metrics({f"eval_{k}_mean": mean, f"eval_{k}_sd": sd})
        mlflow.log_dict(
            {
                "splits": data.split_names, "metrics": per_split, "baselines": baselines, "search": model.search_,
                "left_out": data.left_out,
            },
            "evaluation.json",
        )
        mlflow.set_tags(
            {
                "feature_service.churn": service,
                "data_fingerprint.churn": fingerprint(data.frame[["customer_id", "event_timestamp", "churned"]].iloc[data.final_rows]),
                "lightgbm_version": lgb.__version__,
                "python_version": platform.python_version(),
            }
        )
        quantiles = list(SEGMENT_QUANTILES)
        extra = {
            "calibration": calibrator.to_dict(),
            "value": {**spec, "constant": constant},
            "segment_edges": edges,
            "segment_quantiles": quantiles,
            "required": [n for n in data.feature_names if final_column(n).notna().all()],
            "search": model.search_,
        }
        churn_spec = {
            "feature_service": service, "feature_names": list(model.feature_names), "categories": model.categories_,
            "best_iteration": None, "extra": extra,
        }
        version = log_booster(client, model.booster_, name, churn_spec, run.info.run_id)
        report = _report(
            settings, data, per_split, parts, model, calibrator, value_model, latest, spec, edges,
            f"Training run of {contract.name}" + (" (shuffled labels)" if shuffle_labels else ""), compared,
        )
        report_path = write_report(report, settings.reports_dir / f"train-{run.info.run_id}.html")
        mlflow.log_artifact(str(report_path), "report")
        for table in ("backtest", "baselines", "reliability", "importance", "importance_clv", "segments"):  # the report's figures as data
            if getattr(report, table) is not None:
                mlflow.log_table(getattr(report, table), f"evaluation/{table}.json")
        tags = held_out_tags(summary, evaluation_fingerprint(data.frame, data.splits, data.split_names), data.split_names)
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        clv_version = None
        if value_model is not None:
            mlflow.log_metrics({f"clv_val_{k}": v for k, v in value_model.metrics.items()})
            clv_spec = {
                "feature_service": service, "feature_names": value_model.feature_names, "categories": value_model.categories,
                "best_iteration": None,
                "extra": {
                    "segment_edges": edges, "segment_quantiles": quantiles, "horizon_days": spec["horizon_days"],
                    "required": extra["required"],  # the same features, seen missing as the churn model saw them
                },
            }
            clv_name = clv_model_name(contract.name)
            clv_version = log_booster(client, value_model.booster, clv_name, clv_spec, run.info.run_id)
            for k, v in value_model.metrics.items():
                client.set_model_version_tag(clv_name, clv_version, f"held_out_{k}", repr(v))
            client.set_model_version_tag(clv_name, clv_version, "evaluated_on", f"cutoff {value_model.test_cutoff}")
    if has_alias(client, name, CHAMPION):
        promotion = "challenger: run `churn promote` to compare it with the champion"
    else:
        promotion = promote(settings).reason
    return TrainResult(
        run.info.run_id, name, version, data.split_names, per_split, summary, len(data.final_rows), model.search_, promotion,
        {**spec, "constant": constant}, edges, clv_version, value_model.metrics if value_model is not None else None,
        calibrator.to_dict(), report_path, held_out, data.left_out, baselines,
    )
