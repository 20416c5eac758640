"""A LightGBM classifier that picks its own settings: no hand-tuning per data set.

How (`AutoTunedModel.fit`); only the rows given to `fit` are ever seen, so an outer
evaluation fold never influences the search, the round counts or the ensemble.

Frames with several cutoffs (event and transaction logs):
1. Validation split that respects time: the rows at the latest `event_timestamp`,
   searched on rows at least `gap_days` older (the label horizon: otherwise a training label
   overlaps the validation period, and the search rewards trees that memorize customers
   across cutoffs).
2. A small, bounded search: each candidate of `CANDIDATES` (from additive stumps to
   31-leaf trees) is trained with early stopping on the validation rows, simple ones first;
   the search stops once `search_patience` candidates in a row have not beaten the best
   before them (more leaves stop paying once fewer did not).
   On a large frame the search sees a sample: at most `search_rows` training and as many
   validation rows (a 1,000,000-customer data set has about 800,000 rows per cutoff; the
   candidates' order and round counts do not need them all), while the refit below uses all.
3. The `ensemble` best candidates (by validation ROC AUC) are refitted on all rows with
   their early-stopped number of rounds, scaled by the growth of the training set, and
   their probabilities averaged. Above `refit_rows` rows each tree of a refit is grown on a
   random `refit_rows` of them, drawn anew every round, with `refit_threads` threads.

Frames with one date (a snapshot table: there is no later period to hold out):
1. Inner stratified `inner_folds`-fold cross-validation instead of one holdout: a 20 %
   holdout of a few thousand rows moves ROC AUC by about 0.01 between seeds, more than the
   candidates differ, so both the choice and the early-stopped round count were noise. Every
   row is validated once, so 3 folds choose as well as 5 at 60 % of the cost (Telco, same 5
   outer folds: ROC AUC 0.8502 with 3, 0.8501 with 5).
2. Each candidate runs at `snapshot_learning_rate` and stops on the mean ROC AUC over the
   inner folds. 0.05, as the time split's: 0.02 gave the same Telco ROC AUC (0.8500) at 2.3x
   the rounds.
3. CV bagging: the `ensemble` best candidates each keep their `inner_folds` fold models,
   cut at the common early-stopped round, and the model averages all of them (merged into
   one booster, as above); no refit and no guessed round count for the full data.

The model's probability is the sigmoid of the mean log-odds of its boosters: the merged
booster's own prediction, so the model evaluated is the model registered.

Held-out predictions for calibration (`held_out_rows_`, `held_out_probability_`), at the
scale of the fitted model and from the rows given to `fit` only: a snapshot's rows each
scored by the chosen candidates' inner-fold models that left it out; a frame with cutoffs,
the validation cutoff scored by the chosen candidates as searched (on the older cutoffs).
"""

from __future__ import annotations

import re

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from churn.errors import DataError
from training.dataset import MatrixRows, at_most, category_levels, model_input, to_matrix
from training.model import NotFittedError

def merged_booster(boosters: list[lgb.Booster]) -> lgb.Booster:
    """One booster whose raw score is the mean of the raw scores of `boosters` (a logit average).

    A booster's raw score is the sum of its trees' leaf values, so the trees of all boosters,
    each leaf (and internal) value divided by their number, sum to the mean. The result is a
    plain LightGBM model: the registry, the fast serving path and TreeSHAP (`pred_contrib`,
    also the mean of the parts') take it as they take any booster. All boosters must share
    their features and objective (the ensemble of `AutoTunedModel` does).
    """
    if not boosters:
        raise ValueError("merged_booster needs at least one booster")
    k = len(boosters)
    header, tail, trees = None, None, []
    for booster in boosters:
        head, rest = booster.model_to_string().split("\nTree=0\n", 1)
        body, after = ("Tree=0\n" + rest).split("\nend of trees\n", 1)
        if header is None:
            header, tail = head, after
        for tree in re.split(r"\n(?=Tree=\d+\n)", body.strip("\n")):
            trees.append([_divided(line, k) for line in tree.split("\n")])
    out = []
    for i, lines in enumerate(trees):
        lines[0] = f"Tree={i}"
        out.append("\n".join(lines))
    # tree_sizes gives byte offsets of the original trees; LightGBM parses without it
    header = "\n".join(line for line in header.split("\n") if not line.startswith("tree_sizes="))
    return lgb.Booster(model_str=header + "\n\n" + "\n\n".join(out) + "\n\nend of trees\n" + tail)


def _sigmoid(raw: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-raw))


def _divided(line: str, k: int) -> str:
    """A model-text line with its leaf or internal values divided by `k` (others unchanged)."""
    for key in ("leaf_value=", "internal_value="):
        if line.startswith(key):
            return key + " ".join(repr(float(v) / k) for v in line[len(key):].split())
    return line


# The bounded search space, small enough to run in seconds on 2 cores.
CANDIDATES: tuple[dict, ...] = (
    {"num_leaves": 2, "min_data_in_leaf": 20},
    {"num_leaves": 4, "min_data_in_leaf": 50},
    {"num_leaves": 8, "min_data_in_leaf": 100, "feature_fraction": 0.5},
    {"num_leaves": 16, "min_data_in_leaf": 50},
    {"num_leaves": 31, "min_data_in_leaf": 20},
)
_LEARNING_RATE = 0.05  # of every candidate, unless the snapshot search overrides it
# rows above which a refit bags its trees (`AutoTunedModel.refit_rows`, setting `training.refit_rows`)
REFIT_ROWS = 1_000_000
# a candidate "pays" when its validation ROC AUC beats the best before it by at least this much
MIN_GAIN = 0.0005
_BASE = {
    "objective": "binary",
    "learning_rate": _LEARNING_RATE,
    "metric": "auc",
    "feature_fraction": 0.8,
    "lambda_l2": 1.0,
    "deterministic": True,
    # one thread per fit: on small data, and on a shared machine, OpenMP threads mostly wait on
    # each other (an 800-row snapshot search: 2 s with 1 thread, 190 s with 2, on 2 busy cores;
    # Telco's search: 3.1 s with 1, 10.2 s with 2 on a quiet machine; the same models). The
    # cores are used by fitting several models at once instead (`training.fits.fit_models`).
    "num_threads": 1,
    "verbosity": -1,
}


class AutoTunedModel:
    """Churn classifier on named features that tunes itself (see the module docstring).

    Parameters
    ----------
    feature_names : model input columns, in order.
    categorical : which of them are categorical (kept categorical for LightGBM).
    max_rounds : upper bound on boosting rounds per candidate at learning rate 0.05 (scaled for
        the snapshot's lower rate: the same distance travelled).
    early_stopping_rounds : rounds without improvement before a candidate stops.
    ensemble : how many of the best candidates are averaged.
    inner_folds : cross-validation folds of the search when the frame has one date only.
    snapshot_learning_rate : learning rate of every candidate when the frame has one date only.
    time_column : column holding the cutoff of each row.
    gap_days : days between the newest search-training cutoff and the validation cutoff (the label horizon).
    search_rows : frames with several cutoffs: the search trains on at most this many of the older
        rows and validates on at most this many of the latest (random, seeded); the chosen
        candidates are then refitted on every row. None: every row.
    refit_rows : frames with several cutoffs: a refit on more rows than this grows each tree on
        `refit_rows` of them drawn at random anew every round (LightGBM's bagging: stochastic gradient
        boosting), so a round costs about what it costs on `refit_rows` while every row still shapes
        the model (5.5 M rows at 1,000,000 customers: about 25 minutes per fit with one thread on every
        row). Such a refit also bins its rows once for the whole ensemble. None: every tree sees every row.
    refit_threads : LightGBM threads of such a large refit; the search and smaller fits keep one (see
        `_BASE`): a tree on a million rows keeps several threads busy, a small one does not.
    search_patience : the search stops once this many candidates in a row have not beaten the best
        before them (by `MIN_GAIN` of validation ROC AUC); None searches every candidate.
    seed : seed of the inner folds and of LightGBM.
    """

    def __init__(
        self,
        feature_names: list[str],
        categorical: list[str] = (),
        max_rounds: int = 1000,
        early_stopping_rounds: int = 50,
        ensemble: int = 3,
        inner_folds: int = 3,
        snapshot_learning_rate: float = 0.05,
        time_column: str = "event_timestamp",
        gap_days: int = 0,
        search_patience: int | None = 2,
        search_rows: int | None = 250_000,
        refit_rows: int | None = REFIT_ROWS,
        refit_threads: int = 1,
        seed: int = 0,
    ):
        self.feature_names = feature_names
        self.categorical = categorical
        self.max_rounds = max_rounds
        self.early_stopping_rounds = early_stopping_rounds
        self.ensemble = ensemble
        self.inner_folds = inner_folds
        self.snapshot_learning_rate = snapshot_learning_rate
        self.time_column = time_column
        self.gap_days = gap_days
        self.search_patience = search_patience
        self.search_rows = search_rows
        self.refit_rows = refit_rows
        self.refit_threads = refit_threads
        self.seed = seed

    def _is_snapshot(self, stamps: pd.Series | None) -> bool:
        return stamps is None or stamps.nunique() <= 1

    def _time_split(self, stamps: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Positions (in `stamps`) of the rows searched on and of the validation rows."""
        latest = stamps.max()
        older = (stamps <= latest - pd.Timedelta(days=self.gap_days)).to_numpy()
        if not older.any():
            raise DataError(
                f"no training cutoff is {self.gap_days} days older than the latest ({latest:%Y-%m-%d}); "
                "add training cutoffs so that a time-respecting validation split exists"
            )
        return np.flatnonzero(older), np.flatnonzero((stamps == latest).to_numpy())

    def _dataset(self, matrix: np.ndarray | MatrixRows, y: np.ndarray, params: dict | None = None) -> lgb.Dataset:
        categorical = [i for i, n in enumerate(self.feature_names) if n in self.categories_]
        return lgb.Dataset(matrix, label=y, feature_name=list(self.feature_names), categorical_feature=categorical, params=params)

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        return to_matrix(X, list(self.feature_names), self.categories_)

    def fit(self, X: pd.DataFrame, y: np.ndarray, rows: np.ndarray | None = None) -> AutoTunedModel:
        """Search, pick and fit on (X, y); X holds the features (and the time column).

        `rows`: fit on these rows of X (positions) and their labels `y[rows]`, without a copy of
        them (a training frame of millions of rows holds every split's rows; `training/fits.py`).
        """
        rows = np.arange(len(X)) if rows is None else np.asarray(rows)
        y = np.asarray(y)[rows]
        self.categories_ = {n: category_levels(X[n].iloc[rows]) for n in self.categorical}
        stamps = X[self.time_column].iloc[rows].reset_index(drop=True) if self.time_column in X else None
        if self._is_snapshot(stamps):
            self._fit_cross_validated(self._matrix(X.iloc[rows]), y)
        else:
            self._fit_time_split(X, rows, stamps, y)
        self.booster_ = merged_booster(self.boosters_)
        return self

    def _searched_rows(self, rows: np.ndarray) -> np.ndarray:
        """At most `search_rows` of `rows`, drawn at random (seeded), in their order."""
        return at_most(rows, self.search_rows, self.seed)

    def _fit_time_split(self, X: pd.DataFrame, rows: np.ndarray, stamps: pd.Series, y: np.ndarray) -> None:
        """The search, the held-out predictions and the refit on `rows` of X (stamps and labels `y` of those rows)."""
        older, latest = self._time_split(stamps)
        # the search compares candidates and finds their round counts: a sample of rows does that as well
        fit_rows, val_rows = self._searched_rows(older), self._searched_rows(latest)
        fit_matrix, val_matrix = self._matrix(X.iloc[rows[fit_rows]]), self._matrix(X.iloc[rows[val_rows]])
        self.search_, searched = [], []
        for candidate in CANDIDATES:
            if self._search_stops([c["validation_auc"] for c in self.search_]):
                break
            # a Dataset is bound to the parameters it was built with (min_data_in_leaf)
            train = self._dataset(fit_matrix, y[fit_rows])
            valid = train.create_valid(val_matrix, label=y[val_rows])
            booster = lgb.train(
                {**_BASE, **candidate, "seed": self.seed},
                train,
                num_boost_round=self.max_rounds,
                valid_sets=[valid],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
            )
            self.search_.append(
                {"params": {**candidate, "learning_rate": _LEARNING_RATE}, "rounds": booster.best_iteration, "validation_auc": booster.best_score["valid_0"]["auc"]}
            )
            searched.append(booster)
        order = sorted(range(len(self.search_)), key=lambda i: -self.search_[i]["validation_auc"])
        self.search_ = [self.search_[i] for i in order]
        # held out: the chosen candidates, as searched (older cutoffs only), on the validation cutoff
        chosen = [searched[i] for i in order[: self.ensemble]]
        raw = np.mean([b.predict(val_matrix, raw_score=True, num_iteration=b.best_iteration) for b in chosen], axis=0)
        self.held_out_rows_, self.held_out_probability_ = val_rows, _sigmoid(raw)
        del fit_matrix, val_matrix, searched, chosen
        # more rows support more rounds; capped, as cutoffs of the same customers are not independent rows
        growth = min(len(rows) / len(older), 1.5)
        # every row: a large matrix is made a batch at a time as LightGBM bins it (`model_input`)
        every_row = model_input(X, list(self.feature_names), self.categories_, rows)
        shared, large = None, {}
        if self.refit_rows is not None and len(rows) > self.refit_rows:
            # binned once for every candidate (no pre-filter); each tree grown on `refit_rows` rows drawn anew
            shared = self._dataset(every_row, y, {"feature_pre_filter": False, "verbosity": -1})
            large = {"bagging_fraction": self.refit_rows / len(rows), "bagging_freq": 1, "num_threads": self.refit_threads}
        self.boosters_ = [
            lgb.train(
                {**_BASE, **c["params"], **large, "seed": self.seed},
                # else a Dataset per candidate: LightGBM's feature pre-filter binds it to its min_data_in_leaf
                shared if shared is not None else self._dataset(every_row, y),
                num_boost_round=max(1, round(c["rounds"] * growth)),
            )
            for c in self.search_[: self.ensemble]
        ]

    def _fit_cross_validated(self, matrix: np.ndarray, y: np.ndarray) -> None:
        if min(np.bincount(y, minlength=2)) < self.inner_folds:
            raise DataError(
                f"the snapshot has {int(y.sum())} churned and {int(len(y) - y.sum())} retained customers; "
                f"the search needs at least {self.inner_folds} of each for its {self.inner_folds} inner folds"
            )
        folds = list(StratifiedKFold(self.inner_folds, shuffle=True, random_state=self.seed).split(matrix, y))
        rate = self.snapshot_learning_rate
        # the same patience in "distance travelled" as the time split's early stopping
        patience = max(self.early_stopping_rounds, round(self.early_stopping_rounds * _LEARNING_RATE / rate))
        searched = []
        for candidate in CANDIDATES:
            if self._search_stops([entry["validation_auc"] for entry, _ in searched]):
                break
            params = {**_BASE, **candidate, "learning_rate": rate, "seed": self.seed}
            result = lgb.cv(
                params,
                self._dataset(matrix, y),
                num_boost_round=round(self.max_rounds * _LEARNING_RATE / rate),
                folds=folds,
                callbacks=[lgb.early_stopping(patience, verbose=False)],
                return_cvbooster=True,
            )
            bag = result["cvbooster"]
            rounds = bag.best_iteration
            searched.append(
                (
                    {"params": {**candidate, "learning_rate": rate}, "rounds": rounds, "validation_auc": float(result["valid auc-mean"][rounds - 1])},
                    [lgb.Booster(model_str=b.model_to_string(num_iteration=rounds)) for b in bag.boosters],
                )
            )
        searched.sort(key=lambda s: -s[0]["validation_auc"])
        self.search_ = [entry for entry, _ in searched]
        self.boosters_ = [b for _, boosters in searched[: self.ensemble] for b in boosters]
        # held out: each row scored by the chosen candidates' models of the inner fold that left it out
        raw = np.zeros(len(y))
        for _, boosters in searched[: self.ensemble]:
            for (_, val_rows), booster in zip(folds, boosters):
                raw[val_rows] += booster.predict(matrix[val_rows], raw_score=True)
        self.held_out_rows_, self.held_out_probability_ = np.arange(len(y)), _sigmoid(raw / min(self.ensemble, len(searched)))

    def _search_stops(self, aucs: list[float]) -> bool:
        """Whether the search ends before the next candidate: the last `search_patience` did not beat the best before them.

        Candidates go from simple to complex, so once two in a row stop paying, more leaves do not
        either. At least `ensemble` candidates are always searched.
        """
        k = self.search_patience
        if k is None or len(aucs) < max(self.ensemble, k + 1):
            return False
        return max(aucs[-k:]) < max(aucs[:-k]) + MIN_GAIN

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Churn probability of each row: the sigmoid of the ensemble's mean log-odds (`booster_`)."""
        if not hasattr(self, "booster_"):
            raise NotFittedError("this model is not fitted yet; call fit first")
        return self.booster_.predict(self._matrix(X))

    def validation_auc(self) -> float:
        """ROC AUC of the best candidate on the validation rows (mean over the inner folds of a snapshot)."""
        return float(self.search_[0]["validation_auc"])

