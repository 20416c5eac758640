"""Training sets and honest evaluation for ingested data (`churn ingest` -> `churn features build`).

Labels by the config's churn definition:
- `label`: the snapshot's label, one row per customer at the snapshot's `as_of`;
- `inactivity`: at a cutoff, a customer active within `churn.active_days` before it has
  churned if no log row of theirs falls in [cutoff, cutoff + horizon_days);
- `cancellations`: a customer active and not yet cancelled at the cutoff has churned if
  their cancellation falls in [cutoff, cutoff + horizon_days).
Features come from Feast (point in time, as of each cutoff).

Evaluation splits, the same for every model measured on them:
- snapshot: `evaluation.folds` stratified folds;
- logs: rolling cutoffs. For each evaluation cutoff `e`, models train on the
  `evaluation.train_cutoffs` cutoffs whose labels are fully observed by `e` (cutoff +
  horizon <= e), so no training label looks past the evaluation date.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from churn import clock
from churn.errors import DataError
from churn.settings import ProfitSettings, Settings
from features.contract import LOG_SHAPES, Contract, Shape
from features.build import read_views
from features.definitions import service_name
from features.ingest import read_manifest
from features.store import historical_features
from training.dataset import sampled_customers, screen_features
from training.evaluate import churn_metrics, expected_calibration_error
from training.profit import empc
from training.tuning import REFIT_ROWS, AutoTunedModel

METRICS = ("roc_auc", "pr_auc", "top_decile_lift")


@dataclass(frozen=True)
class TrainingData:
    """An ingested data set ready for training: its contract, the training frame and its features."""

    contract: Contract
    frame: pd.DataFrame  # customer_id, event_timestamp, churned, features...
    feature_names: list[str]
    categorical: list[str]
    splits: list[tuple[np.ndarray, np.ndarray]]  # (train rows, test rows) per fold / evaluation cutoff
    split_names: list[str]
    final_rows: np.ndarray  # rows the model to register is trained on
    rfm: list[str] = field(default_factory=list)  # recency, frequency, monetary columns (logs)
    left_out: dict[str, str] = field(default_factory=dict)  # columns of the views no model uses, and why


def _weeks(days: int) -> int:
    return -(-days // 7)


def log_cutoffs(contract: Contract, data_end: datetime) -> tuple[list[datetime], dict[datetime, list[datetime]]]:
    """Evaluation cutoffs (oldest first) and, for each, its training cutoffs (oldest first)."""
    ev = contract.evaluation
    gap = timedelta(days=7 * _weeks(contract.churn.horizon_days))
    latest = data_end - gap
    evaluation = [latest - timedelta(days=ev.cutoff_spacing_days * k) for k in reversed(range(ev.rolling_cutoffs))]
    training = {
        e: [e - gap - timedelta(days=ev.train_spacing_days * k) for k in reversed(range(ev.train_cutoffs))]
        for e in evaluation
    }
    return evaluation, training


def final_cutoffs(contract: Contract, data_end: datetime) -> list[datetime]:
    """Cutoffs the registered model trains on: the latest fully labelled ones."""
    ev = contract.evaluation
    latest = data_end - timedelta(days=7 * _weeks(contract.churn.horizon_days))
    return [latest - timedelta(days=ev.train_spacing_days * k) for k in reversed(range(ev.train_cutoffs))]


def _label_frame(settings: Settings, contract: Contract, views: dict, cutoffs: list[datetime]) -> pd.DataFrame:
    """customer_id, event_timestamp (cutoff), churned for every customer in the population at each cutoff."""
    ingested = settings.ingested_dir
    if contract.churn.definition == "label":
        name, source = contract.snapshot
        table = pd.read_parquet(ingested / f"{name}.parquet", columns=["customer_id", "churned"])
        return table.assign(event_timestamp=pd.Timestamp(source.as_of, tz="UTC"))[["customer_id", "event_timestamp", "churned"]]
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.register("cutoffs", pd.DataFrame({"cutoff": pd.to_datetime(cutoffs, utc=True)}))
    tables = [settings.feature_tables_dir / f"{v}.parquet" for v in views["log_views"]]
    population = " UNION ".join(
        f"SELECT customer_id, event_timestamp FROM read_parquet('{p}') WHERE event_timestamp IN (SELECT cutoff FROM cutoffs)"
        for p in tables
    )
    horizon = contract.churn.horizon_days
    if contract.churn.definition == "inactivity":
        activity = " UNION ALL ".join(
            f"SELECT customer_id, event_time FROM read_parquet('{ingested / name}.parquet')"
            for name in contract.of_shape(*LOG_SHAPES)
        )
        sql = f"""
            WITH pop AS ({population}), act AS ({activity})
            SELECT p.customer_id, p.event_timestamp,
                CAST(NOT EXISTS (SELECT 1 FROM act a WHERE a.customer_id = p.customer_id
                    AND a.event_time >= p.event_timestamp
                    AND a.event_time < p.event_timestamp + to_days({horizon})) AS BIGINT) AS churned
            FROM pop p ORDER BY 2, 1"""
    else:
        cancels = " UNION ALL ".join(
            f"SELECT customer_id, event_time FROM read_parquet('{ingested / name}.parquet')"
            for name in contract.of_shape(Shape.CANCELLATIONS)
        )
        sql = f"""
            WITH pop AS ({population}),
            gone AS (SELECT customer_id, min(event_time) AS cancelled_at FROM ({cancels}) GROUP BY 1)
            SELECT p.customer_id, p.event_timestamp,
                CAST(coalesce(g.cancelled_at < p.event_timestamp + to_days({horizon}), false) AS BIGINT) AS churned
            FROM pop p LEFT JOIN gone g USING (customer_id)
            WHERE g.cancelled_at IS NULL OR g.cancelled_at >= p.event_timestamp
            ORDER BY 2, 1"""
    frame = con.execute(sql).df()
    con.close()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def training_labels(settings: Settings) -> pd.DataFrame:
    """customer_id, event_timestamp (cutoff), churned: the rows `training_data` joins features onto.

    Every cutoff the evaluation and the final model need (of the customers that
    `training.sample_customers` keeps, if set).
    """
    return _labels(settings, *_data_set(settings))


def training_end(settings: Settings, views: dict) -> datetime:
    """The end of what training learns from: the data's end, or the engine's clock when that is earlier.

    A clock set to a past date trains as the engine would have then: its labels' horizons and
    every cutoff end by that date (the policy benchmark trains before its campaigns this way).
    The end stays on the weekly grid of the feature snapshots (the data's end less whole weeks),
    so that the cutoffs counted back from it are snapshot dates.
    """
    data_end = datetime.fromisoformat(views["data_end"])
    now = clock.now(settings)
    if now >= data_end:
        return data_end
    return data_end - timedelta(weeks=-(-(data_end - now) // timedelta(weeks=1)))


def _data_set(settings: Settings) -> tuple[Contract, dict, datetime]:
    """The last ingest's contract, the feature views built from it, and the end of what training may use."""
    contract = Contract.model_validate(read_manifest(settings.ingested_dir)["contract"])
    views = read_views(settings.feature_tables_dir)
    return contract, views, training_end(settings, views)


def _labels(settings: Settings, contract: Contract, views: dict, data_end: datetime) -> pd.DataFrame:
    cutoffs = []
    if contract.churn.definition != "label":
        evaluation, training = log_cutoffs(contract, data_end)
        cutoffs = sorted({*evaluation, *(c for cs in training.values() for c in cs), *final_cutoffs(contract, data_end)})
    labels = sampled_customers(_label_frame(settings, contract, views, cutoffs), settings.training.sample_customers)
    if labels.empty:
        raise DataError(f"{contract.name}: no customer is in the population at any cutoff {[f'{c:%Y-%m-%d}' for c in cutoffs]}")
    return labels


def training_data(settings: Settings) -> TrainingData:
    """Labels at the cutoffs the evaluation and the final model need, with their features from Feast."""
    contract, views, data_end = _data_set(settings)
    is_snapshot = contract.churn.definition == "label"
    if not is_snapshot:
        evaluation, training = log_cutoffs(contract, data_end)
    labels = _labels(settings, contract, views, data_end)
    frame = historical_features(settings, labels, service_name(contract.name), lean=True)
    fields = [f for v in views["views"].values() for f in v]
    left_out = screen_features(frame, [c for c, _, _ in fields], [c for c, kind, _ in fields if kind == "string"])
    names = [c for c, _, _ in fields if c not in left_out]
    categorical = [c for c, kind, _ in fields if kind == "string" and c not in left_out]
    if is_snapshot:
        folds = StratifiedKFold(contract.evaluation.folds, shuffle=True, random_state=contract.evaluation.seed)
        splits = list(folds.split(frame, frame["churned"]))
        split_names = [f"fold {k + 1}" for k in range(len(splits))]
        final = np.arange(len(frame))
    else:
        stamps = frame["event_timestamp"]
        splits, split_names = [], []
        for e in evaluation:
            train_rows = np.flatnonzero(stamps.isin(pd.to_datetime(training[e], utc=True)).to_numpy())
            test_rows = np.flatnonzero((stamps == pd.Timestamp(e)).to_numpy())
            if len(train_rows) == 0 or len(test_rows) == 0:
                raise DataError(
                    f"{contract.name}: evaluation cutoff {e:%Y-%m-%d} has {len(test_rows)} rows and "
                    f"{len(train_rows)} training rows; use fewer or closer cutoffs in `evaluation`"
                )
            splits.append((train_rows, test_rows))
            split_names.append(f"cutoff {e:%Y-%m-%d}")
        final = np.flatnonzero(stamps.isin(pd.to_datetime(final_cutoffs(contract, data_end), utc=True)).to_numpy())
    rfm = []
    for name in contract.of_shape(Shape.TRANSACTIONS):
        rfm = [f"{name}_recency_days", f"{name}_frequency", f"{name}_monetary"]
        break
    return TrainingData(contract, frame, names, categorical, splits, split_names, final, rfm, left_out)


Model = Callable[[], object]  # a factory of objects with fit(X, y) -> self and predict(X) -> scores


def held_out_predictions(
    data: TrainingData, make: Model, fit_labels: np.ndarray | None = None, models: list | None = None
) -> list[tuple[object, np.ndarray]]:
    """Each split's model (fitted on its training rows) and its scores of its own test rows, split by split.

    `fit_labels` replaces the labels the models are fitted on (not those they are scored on).
    `models`: the splits' models, already fitted on their training rows (Dask mode fits them
    on the cluster); default: fitted here, one after another.
    """
    y = data.frame["churned"].to_numpy() if fit_labels is None else fit_labels
    fitted = []
    for k, (train_rows, test_rows) in enumerate(data.splits):
        model = models[k] if models is not None else make().fit(data.frame.iloc[train_rows], y[train_rows])
        fitted.append((model, model.predict(data.frame.iloc[test_rows])))
    return fitted


def fold_metrics(
    y_true: np.ndarray, probability: np.ndarray, raw_probability: np.ndarray, clv: np.ndarray, profit: ProfitSettings, n_bins: int
) -> dict[str, float]:
    """Ranking, calibration (before and after) and campaign-profit metrics of one set of predictions."""
    costs = {"offer_cost": profit.offer_cost, "contact_cost": profit.contact_cost, "alpha": profit.accept_alpha, "beta": profit.accept_beta}
    constant = empc(y_true, probability, profit.clv, **costs)
    valued = empc(y_true, probability, clv, **costs)
    return {
        **churn_metrics(y_true, probability),
        "brier_raw": churn_metrics(y_true, raw_probability)["brier"],
        "ece": expected_calibration_error(y_true, probability, n_bins),
        "ece_raw": expected_calibration_error(y_true, raw_probability, n_bins),
        "empc": constant.empc,
        "empc_contact_share": constant.contact_share,
        "empc_clv": valued.empc,
        "empc_clv_contact_share": valued.contact_share,
        "customers": float(len(y_true)),
    }


def summarize(results: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each metric over the splits."""
    return {k: (float(np.mean([r[k] for r in results])), float(np.std([r[k] for r in results]))) for k in results[0]}


def engine_model(data: TrainingData, refit_rows: int | None = REFIT_ROWS, refit_threads: int = 1) -> AutoTunedModel:
    """The engine's own churn model for `data`: validation `horizon_days` after its search data.

    `refit_rows`, `refit_threads`: how a refit on millions of rows grows its trees (`AutoTunedModel`; setting `training.refit_rows`).
    """
    gap = 0 if data.contract.churn.definition == "label" else data.contract.churn.horizon_days
    return AutoTunedModel(
        data.feature_names, data.categorical, gap_days=gap, refit_rows=refit_rows, refit_threads=refit_threads,
        seed=data.contract.evaluation.seed,
    )
