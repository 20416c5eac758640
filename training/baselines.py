"""The usual tools, as a benchmark measures them beside the engine on the same split.

- `OneHotLogistic`: logistic regression on one-hot categoricals and standardized numbers
  (median-imputed), the standard snapshot baseline.
- `RFMLogistic`: logistic regression on recency, frequency and monetary value (log1p, then
  standardized), the standard baseline for non-contractual logs.
- `DefaultLightGBM`: `lightgbm.LGBMClassifier()` with default parameters on the given
  columns, categoricals as pandas categories.
- `TunedLightGBM`: a small LightGBM tuned by hand once, the kind a practitioner writes in
  minutes (400 trees, learning rate 0.03, 15 leaves, min_child_samples 40, bagging 0.8,
  feature_fraction 0.7), on the same columns.
- `HistGradientBoosting`: scikit-learn's `HistGradientBoostingClassifier` with default
  parameters (its own early stopping on large data), categoricals as categories.
All have `fit(X, y, rows=None)` / `predict(X)` (a churn probability per row), like `AutoTunedModel`.

What `churn train` measures beside the engine on each evaluation split (`Baselines`, its
figures in the run's output, report and `evaluation.json`):
- the best single feature (`SingleFeatures`, `best_single_feature`): every feature alone as a
  risk score, in its better direction, the best one chosen on the split's test rows
  themselves. Chosen with hindsight, so no single feature of the data does better on those
  rows: the bar the engine must clear by a margin to be worth more than a sorted column;
- `OneHotLogistic` and `DefaultLightGBM` on the engine's features, fitted on the split's
  training rows (the engine's), scored on its test rows.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from training.evaluate import top_decile_lift
from training.model import NotFittedError


def rows_of(X: pd.DataFrame, y: np.ndarray, rows: np.ndarray | None) -> tuple[pd.DataFrame, np.ndarray]:
    """(X, y), or their `rows` (positions): what `fit(X, y, rows=None)` fits on (`training.fits.fit_models`)."""
    return (X, y) if rows is None else (X.iloc[rows], np.asarray(y)[rows])


class OneHotLogistic:
    """Logistic regression on one-hot `categorical` and standardized other `feature_names`."""

    def __init__(self, feature_names: list[str], categorical: list[str] = ()):
        self.feature_names = feature_names
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y: np.ndarray, rows: np.ndarray | None = None) -> OneHotLogistic:
        X, y = rows_of(X, y, rows)
        categorical = [c for c in self.feature_names if c in self.categorical]
        numeric = [c for c in self.feature_names if c not in self.categorical]
        columns = ColumnTransformer(
            [
                ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
                ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            ]
        )
        self.pipeline_ = Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=5000))])
        self.pipeline_.fit(_frame(X, self.feature_names, categorical), y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        categorical = [c for c in self.feature_names if c in self.categorical]
        return self.pipeline_.predict_proba(_frame(X, self.feature_names, categorical))[:, 1]


class RFMLogistic:
    """Logistic regression on the three RFM columns (named in `feature_names`)."""

    def __init__(self, feature_names: list[str]):
        self.feature_names = feature_names

    def fit(self, X: pd.DataFrame, y: np.ndarray, rows: np.ndarray | None = None) -> RFMLogistic:
        X, y = rows_of(X, y, rows)
        self.pipeline_ = make_pipeline(
            SimpleImputer(strategy="median"),
            FunctionTransformer(np.log1p),
            StandardScaler(),
            LogisticRegression(max_iter=5000),
        )
        self.pipeline_.fit(X[self.feature_names].astype(float), y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.pipeline_.predict_proba(X[self.feature_names].astype(float))[:, 1]


class DefaultLightGBM:
    """`LGBMClassifier()` with default parameters; categoricals as pandas categories.

    `n_jobs`: threads, both cores of the machine the benchmarks run on by default.
    """

    def __init__(self, feature_names: list[str], categorical: list[str] = (), seed: int = 0, n_jobs: int = 2):
        self.feature_names = feature_names
        self.categorical = categorical
        self.seed = seed
        self.n_jobs = n_jobs

    def _estimator(self):
        return lgb.LGBMClassifier(random_state=self.seed, verbosity=-1, n_jobs=self.n_jobs)

    def fit(self, X: pd.DataFrame, y: np.ndarray, rows: np.ndarray | None = None) -> DefaultLightGBM:
        X, y = rows_of(X, y, rows)
        self.categories_ = {c: sorted(X[c].dropna().astype(str).unique()) for c in self.categorical}
        self.model_ = self._estimator()
        self.model_.fit(self._frame(X), y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict_proba(self._frame(X))[:, 1]

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        out = X[self.feature_names].copy()
        for c in self.feature_names:
            if c in self.categories_:
                out[c] = pd.Categorical(out[c].astype("string"), categories=self.categories_[c])
            else:
                out[c] = pd.to_numeric(out[c]).astype(float)
        return out


class TunedLightGBM(DefaultLightGBM):
    """A small LightGBM with settings chosen by hand once (see the module docstring), no search."""

    def _estimator(self):
        return lgb.LGBMClassifier(
            n_estimators=400, learning_rate=0.03, num_leaves=15, min_child_samples=40, subsample=0.8, subsample_freq=1,
            colsample_bytree=0.7, random_state=self.seed, verbosity=-1, n_jobs=self.n_jobs,
        )


class HistGradientBoosting(DefaultLightGBM):
    """scikit-learn's `HistGradientBoostingClassifier()`, default parameters, categoricals as categories."""

    def _estimator(self):
        return HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=self.seed)


def _frame(X: pd.DataFrame, names: list[str], categorical: list[str]) -> pd.DataFrame:
    out = X[names].copy()
    for c in names:
        out[c] = out[c].astype(object).where(out[c].notna(), "missing") if c in categorical else pd.to_numeric(out[c]).astype(float)
    return out


# What `churn train` measures beside the engine, by key (as in `evaluation.json`) and label.
BASELINES = {
    "best_single_feature": "best single feature",
    "logistic_regression": "logistic regression",
    "lightgbm_defaults": "LightGBM defaults",
}
ENGINE = "engine"


class SingleFeatures:
    """Each feature on its own as a risk score of rows: a number as it is, a category by its churn rate on the fit rows.

    Why a category's training churn rate: a category has no order of its own, and the rate of
    the rows a model may learn from is the one order that uses no test label. A missing value
    (a customer never surveyed, a category not seen in the fit rows) ranks lowest, so every
    feature is judged on every row, as the engine is.
    """

    def __init__(self, feature_names: list[str], categorical: list[str] = ()):
        self.feature_names = feature_names
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> SingleFeatures:
        labels = pd.Series(np.asarray(y, dtype=float), index=X.index)
        self.rates_ = {c: labels.groupby(X[c].astype(object)).mean() for c in self.feature_names if c in self.categorical}
        return self

    def scores(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each feature's score of the rows of `X`, by feature name (higher: riskier if the feature's direction is up)."""
        if not hasattr(self, "rates_"):
            raise NotFittedError("SingleFeatures is not fitted yet, call fit first")
        out = {}
        for name in self.feature_names:
            if name in self.rates_:
                score = X[name].astype(object).map(self.rates_[name]).to_numpy(dtype=float, na_value=np.nan)
            else:
                score = pd.to_numeric(X[name]).to_numpy(dtype=float, na_value=np.nan)
            missing = np.isnan(score)
            if missing.all():
                score = np.zeros(len(score))
            elif missing.any():
                score = np.where(missing, np.nanmin(score) - 1.0, score)
            out[name] = score
        return out


def best_single_feature(y: np.ndarray, scores: dict[str, np.ndarray]) -> dict:
    """The best ROC AUC and the best top-decile lift any one of `scores` reaches on labels `y`, and which feature.

    Each feature in its better direction (ROC AUC below 0.5: the score reversed, for its lift
    too). The two bests may be two features: `feature` has the best ROC AUC, `lift_feature` the
    best lift.
    """
    y = np.asarray(y)
    auc, lift = {}, {}
    for name, score in scores.items():
        a = roc_auc_score(y, score)
        auc[name] = max(a, 1.0 - a)
        lift[name] = top_decile_lift(y, score if a >= 0.5 else -score)
    best_auc, best_lift = max(auc, key=auc.get), max(lift, key=lift.get)
    return {
        "roc_auc": float(auc[best_auc]), "top_decile_lift": float(lift[best_lift]),
        "feature": best_auc, "lift_feature": best_lift, "customers": len(y),
    }


class Baselines:
    """The baselines of one evaluation split (`BASELINES`), fitted on its training rows and measured on its test rows.

    One object per split, so `training.fits.fit_models` fits the splits' baselines side by side
    as it fits the engine's. A baseline that cannot fit these rows (a split too small, one class
    only) is recorded with why (`failed_`) and measured as such, instead of failing the run.
    LightGBM runs on one thread here, as the engine's fits do (`training/fits.py` says why).
    """

    def __init__(self, feature_names: list[str], categorical: list[str] = (), seed: int = 0):
        self.feature_names = feature_names
        self.categorical = categorical
        self.seed = seed

    def fit(self, X: pd.DataFrame, y: np.ndarray, rows: np.ndarray | None = None) -> Baselines:
        """Fit every baseline on (X, y), or on `rows` of them (positions)."""
        X, y = rows_of(X, y, rows)
        self.single_ = SingleFeatures(self.feature_names, self.categorical).fit(X, y)
        self.models_, self.failed_ = {}, {}
        candidates = {
            "logistic_regression": OneHotLogistic(self.feature_names, self.categorical),
            "lightgbm_defaults": DefaultLightGBM(self.feature_names, self.categorical, self.seed, n_jobs=1),
        }
        for key, model in candidates.items():
            try:
                self.models_[key] = model.fit(X, y)
            except (ValueError, lgb.basic.LightGBMError) as error:  # what scikit-learn and LightGBM raise on unfit data
                self.failed_[key] = f"could not fit on {len(X):,} training rows ({int(np.sum(y)):,} churned): {error}"
        return self

    def measure(self, X: pd.DataFrame, y: np.ndarray) -> dict[str, dict]:
        """ROC AUC, top-decile lift and customers of each baseline on rows `X` with labels `y`, by key of `BASELINES`.

        A baseline that could not fit has `error` (why) in place of its figures.
        """
        if not hasattr(self, "single_"):
            raise NotFittedError("Baselines is not fitted yet, call fit first")
        y = np.asarray(y)
        out = {"best_single_feature": best_single_feature(y, self.single_.scores(X))}
        for key in ("logistic_regression", "lightgbm_defaults"):
            if key in self.failed_:
                out[key] = {"error": self.failed_[key], "customers": len(y)}
                continue
            p = self.models_[key].predict(X)
            out[key] = {"roc_auc": float(roc_auc_score(y, p)), "top_decile_lift": top_decile_lift(y, p), "customers": len(y)}
        return out


def comparison(split_names: list[str], engine: list[dict], baselines: list[dict[str, dict]]) -> pd.DataFrame:
    """The engine and each baseline on every split: one row per model and split.

    - engine: the engine's metrics per split (`roc_auc`, `top_decile_lift`)
    - baselines: `Baselines.measure` per split
    Returns columns: model, split, roc_auc, top_decile_lift, engine_margin (the engine's ROC
    AUC minus the model's), note (the best single feature's names, or why a baseline has no
    figures).
    """
    rows = []
    for name, mine, theirs in zip(split_names, engine, baselines):
        rows.append({"model": ENGINE, "split": name, "roc_auc": mine["roc_auc"], "top_decile_lift": mine["top_decile_lift"],
                     "engine_margin": np.nan, "note": ""})
        for key, label in BASELINES.items():
            m = theirs[key]
            if "error" in m:
                rows.append({"model": label, "split": name, "roc_auc": np.nan, "top_decile_lift": np.nan,
                             "engine_margin": np.nan, "note": m["error"]})
                continue
            note = m.get("fitted_on", "")
            if key == "best_single_feature":
                note = m["feature"] if m["feature"] == m["lift_feature"] else f"{m['feature']} (lift: {m['lift_feature']})"
            rows.append({"model": label, "split": name, "roc_auc": m["roc_auc"], "top_decile_lift": m["top_decile_lift"],
                         "engine_margin": mine["roc_auc"] - m["roc_auc"], "note": note})
    return pd.DataFrame(rows)


def comparison_summary(table: pd.DataFrame) -> pd.DataFrame:
    """`comparison` over the splits: one row per model, in the order of the table.

    Returns columns: model, splits (measured on), roc_auc_mean, roc_auc_sd, lift_mean, lift_sd,
    margin_mean, margin_min (the engine's smallest ROC AUC margin over one split). Standard
    deviations over splits as `training.backtest.summarize` takes them (population, ddof 0).
    """
    grouped = table.groupby("model", sort=False)
    return pd.DataFrame(
        {
            "splits": grouped["roc_auc"].count(),
            "roc_auc_mean": grouped["roc_auc"].mean(),
            "roc_auc_sd": grouped["roc_auc"].std(ddof=0),
            "lift_mean": grouped["top_decile_lift"].mean(),
            "lift_sd": grouped["top_decile_lift"].std(ddof=0),
            "margin_mean": grouped["engine_margin"].mean(),
            "margin_min": grouped["engine_margin"].min(),
        }
    ).reset_index()
