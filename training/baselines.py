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
All have `fit(X, y)` / `predict(X)` (a churn probability per row), like `AutoTunedModel`.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler


class OneHotLogistic:
    """Logistic regression on one-hot `categorical` and standardized other `feature_names`."""

    def __init__(self, feature_names: list[str], categorical: list[str] = ()):
        self.feature_names = feature_names
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> OneHotLogistic:
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

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> RFMLogistic:
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

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> DefaultLightGBM:
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
