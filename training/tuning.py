"""A LightGBM classifier that picks its own settings: no hand-tuning per data set.

How (`AutoTunedModel.fit`):
1. Validation split that respects time: the rows at the latest `event_timestamp` when the
   frame holds several cutoffs, searched on rows at least `gap_days` older (the label
   horizon: otherwise a training label overlaps the validation period, and the search
   rewards trees that memorize customers across cutoffs); a stratified `validation_fraction` holdout when it holds
   one date only (a snapshot table, where there is no later period to hold out).
2. A small, bounded search: each candidate of `CANDIDATES` (from additive stumps to
   31-leaf trees) is trained with early stopping on the validation rows.
3. The `ensemble` best candidates (by validation ROC AUC) are refitted on all rows with
   their early-stopped number of rounds, scaled by the growth of the training set, and
   their probabilities averaged: a small ensemble is steadier than the single winner of a
   noisy validation set.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from churn.errors import DataError
from training.dataset import to_matrix
from training.model import NotFittedError

# The bounded search space, small enough to run in seconds on 2 cores.
CANDIDATES: tuple[dict, ...] = (
    {"num_leaves": 2, "min_data_in_leaf": 20, "learning_rate": 0.05},
    {"num_leaves": 4, "min_data_in_leaf": 50, "learning_rate": 0.05},
    {"num_leaves": 8, "min_data_in_leaf": 100, "learning_rate": 0.05, "feature_fraction": 0.5},
    {"num_leaves": 16, "min_data_in_leaf": 50, "learning_rate": 0.05},
    {"num_leaves": 31, "min_data_in_leaf": 20, "learning_rate": 0.05},
)
_BASE = {
    "objective": "binary",
    "metric": "auc",
    "feature_fraction": 0.8,
    "lambda_l2": 1.0,
    "deterministic": True,
    "num_threads": 2,
    "verbosity": -1,
}


class AutoTunedModel:
    """Churn classifier on named features that tunes itself (see the module docstring).

    Parameters
    ----------
    feature_names : model input columns, in order.
    categorical : which of them are categorical (kept categorical for LightGBM).
    max_rounds : upper bound on boosting rounds per candidate.
    early_stopping_rounds : rounds without improvement before a candidate stops.
    ensemble : how many of the best candidates are averaged.
    validation_fraction : holdout share when the frame has one date only.
    time_column : column holding the cutoff of each row.
    gap_days : days between the newest search-training cutoff and the validation cutoff (the label horizon).
    seed : seed of the holdout and of LightGBM.
    """

    def __init__(
        self,
        feature_names: list[str],
        categorical: list[str] = (),
        max_rounds: int = 1000,
        early_stopping_rounds: int = 50,
        ensemble: int = 3,
        validation_fraction: float = 0.2,
        time_column: str = "event_timestamp",
        gap_days: int = 0,
        seed: int = 0,
    ):
        self.feature_names = feature_names
        self.categorical = categorical
        self.max_rounds = max_rounds
        self.early_stopping_rounds = early_stopping_rounds
        self.ensemble = ensemble
        self.validation_fraction = validation_fraction
        self.time_column = time_column
        self.gap_days = gap_days
        self.seed = seed

    def _split(self, X: pd.DataFrame, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        stamps = X[self.time_column] if self.time_column in X else None
        if stamps is not None and stamps.nunique() > 1:
            latest = stamps.max()
            older = (stamps <= latest - pd.Timedelta(days=self.gap_days)).to_numpy()
            if not older.any():
                raise DataError(
                    f"no training cutoff is {self.gap_days} days older than the latest ({latest:%Y-%m-%d}); "
                    "add training cutoffs so that a time-respecting validation split exists"
                )
            return np.flatnonzero(older), np.flatnonzero((stamps == latest).to_numpy())
        return train_test_split(
            np.arange(len(X)), test_size=self.validation_fraction, stratify=y, random_state=self.seed
        )

    def _dataset(self, matrix: np.ndarray, y: np.ndarray) -> lgb.Dataset:
        categorical = [i for i, n in enumerate(self.feature_names) if n in self.categories_]
        return lgb.Dataset(matrix, label=y, feature_name=list(self.feature_names), categorical_feature=categorical)

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> AutoTunedModel:
        """Search, pick and refit on (X, y); X holds the features (and the time column)."""
        y = np.asarray(y)
        self.categories_ = {n: sorted(X[n].dropna().astype(str).unique().tolist()) for n in self.categorical}
        matrix = to_matrix(X, list(self.feature_names), self.categories_)
        fit_rows, val_rows = self._split(X, y)
        self.search_ = []
        for candidate in CANDIDATES:
            # a Dataset is bound to the parameters it was built with (linear_tree, min_data_in_leaf)
            train = self._dataset(matrix[fit_rows], y[fit_rows])
            valid = train.create_valid(matrix[val_rows], label=y[val_rows])
            booster = lgb.train(
                {**_BASE, **candidate, "seed": self.seed},
                train,
                num_boost_round=self.max_rounds,
                valid_sets=[valid],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
            )
            self.search_.append(
                {"params": candidate, "rounds": booster.best_iteration, "validation_auc": booster.best_score["valid_0"]["auc"]}
            )
        self.search_.sort(key=lambda c: -c["validation_auc"])
        # more rows support more rounds; capped, as cutoffs of the same customers are not independent rows
        growth = min(len(X) / len(fit_rows), 1.5)
        self.boosters_ = [
            lgb.train(
                {**_BASE, **c["params"], "seed": self.seed},
                self._dataset(matrix, y),
                num_boost_round=max(1, round(c["rounds"] * growth)),
            )
            for c in self.search_[: self.ensemble]
        ]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Churn probability of each row: the mean of the ensemble's probabilities."""
        if not hasattr(self, "boosters_"):
            raise NotFittedError("this model is not fitted yet; call fit first")
        matrix = to_matrix(X, list(self.feature_names), self.categories_)
        return np.mean([b.predict(matrix) for b in self.boosters_], axis=0)

    def validation_auc(self) -> float:
        """ROC AUC of the best candidate on the validation rows."""
        return float(self.search_[0]["validation_auc"])

