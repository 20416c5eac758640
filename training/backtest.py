"""Rolling-cutoff backtest of the churn model: does it hold up over time?

Cutoffs are weekly-aligned dates, oldest first. The fold that tests cutoff k:
- fits the trees on every cutoff before k - 1,
- stops early and fits the probability calibration on cutoff k - 1 (rows the trees never saw),
- and is scored on cutoff k, which no fitting step saw: train on the past, test on the next horizon.

The last `folds` cutoffs are each tested this way. The fold of the latest cutoff is the model
that training registers, so the backtest costs `folds - 1` extra fits, not `folds`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from churn.errors import DataError
from churn.settings import ProfitSettings
from training.calibration import ProbabilityCalibrator
from training.evaluate import churn_metrics, expected_calibration_error
from training.model import GradientBoostedModel
from training.profit import empc


@dataclass(frozen=True)
class Fold:
    """One backtest fold: its model, calibration and held-out predictions."""

    fit_cutoffs: list[datetime]
    calibration_cutoff: datetime
    test_cutoff: datetime
    model: GradientBoostedModel
    calibrator: ProbabilityCalibrator
    test: pd.DataFrame
    raw_probability: np.ndarray
    probability: np.ndarray
    n_fit_rows: int


@dataclass(frozen=True)
class Backtest:
    """Every fold, oldest test cutoff first, and the metrics table (one row per fold and one 'all')."""

    folds: list[Fold]
    table: pd.DataFrame

    @property
    def latest(self) -> Fold:
        return self.folds[-1]


def split_at(frame: pd.DataFrame, cutoffs: list[datetime], k: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(fit, calibration, test) rows of the fold that tests cutoff index `k`."""
    if k < 2:
        raise DataError(f"a backtest fold needs two earlier cutoffs (fit, calibrate); cutoff index {k} has {k}")
    stamps = pd.to_datetime(cutoffs, utc=True)
    fit = frame[frame["event_timestamp"] < stamps[k - 1]]
    calibration = frame[frame["event_timestamp"] == stamps[k - 1]]
    test = frame[frame["event_timestamp"] == stamps[k]]
    for name, part in (("fitting", fit), ("calibration", calibration), ("test", test)):
        if part.empty:
            raise DataError(f"the {name} cutoffs of the fold testing {stamps[k]:%Y-%m-%d} hold no active customer")
    return fit, calibration, test


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


def run_backtest(
    frame: pd.DataFrame,
    cutoffs: list[datetime],
    features: list[str],
    folds: int,
    rounds: int,
    clv_of: Callable[[pd.DataFrame], np.ndarray],
    profit: ProfitSettings,
    n_bins: int,
    make_model: Callable[[str], GradientBoostedModel] | None = None,
) -> Backtest:
    """Fit, calibrate and test one model per fold on the `folds` latest cutoffs.

    - frame: customer_id, event_timestamp (a cutoff), churned, and every feature in `features`
    - clv_of: predicted CLV of a frame's rows (for the CLV-weighted EMPC)
    - make_model: the estimator of each fold, given the task (default: `GradientBoostedModel`
      with `rounds`; `training.train.model_factory` gives the Dask one in Dask mode)
    """
    make_model = make_model or (lambda task: GradientBoostedModel(task=task, num_boost_round=rounds))
    results, rows = [], []
    for k in range(len(cutoffs) - folds, len(cutoffs)):
        fit, calibration, test = split_at(frame, cutoffs, k)
        model = make_model("churn").fit(
            fit, fit["churned"].to_numpy(), calibration, calibration["churned"].to_numpy(), features
        )
        calibrator = ProbabilityCalibrator().fit(model.predict(calibration), calibration["churned"].to_numpy())
        raw = model.predict(test)
        fold = Fold(
            fit_cutoffs=list(cutoffs[: k - 1]), calibration_cutoff=cutoffs[k - 1], test_cutoff=cutoffs[k],
            model=model, calibrator=calibrator, test=test, raw_probability=raw, probability=calibrator.predict(raw),
            n_fit_rows=len(fit),
        )
        results.append(fold)
        metrics = fold_metrics(test["churned"].to_numpy(), fold.probability, raw, clv_of(test), profit, n_bins)
        rows.append({"test_cutoff": f"{cutoffs[k]:%Y-%m-%d}", "calibration": calibrator.method_, **metrics})
    pooled = pd.concat([f.test for f in results])
    rows.append(
        {
            "test_cutoff": "all",
            "calibration": "per fold",
            **fold_metrics(
                pooled["churned"].to_numpy(),
                np.concatenate([f.probability for f in results]),
                np.concatenate([f.raw_probability for f in results]),
                clv_of(pooled),
                profit,
                n_bins,
            ),
        }
    )
    return Backtest(folds=results, table=pd.DataFrame(rows))
