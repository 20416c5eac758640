"""Model fits on a Dask cluster (Dask mode): whole fits as tasks, or one LightGBM with `lightgbm.dask`.

Ingested data (`training/contract_train.py`): `fit_on_cluster` runs every fit of a training run
(one per evaluation split, and the model to register) as one Dask task each, all at once. Each
task fits a copy of the same unfitted `AutoTunedModel` (search, early stopping, ensemble,
merged booster) on its rows, single-threaded and deterministic, so the models are those the
one-machine run fits, bit for bit: one booster plus its spec in the registry, nothing for
`serving/scoring.py` to tell apart. Why tasks, not `lightgbm.dask`: the training frame is
assembled in this process by Feast's point-in-time join anyway, so what outgrows one machine
is the CPU time of the searches (5 candidates, early stopping, 3 refits, per split), which
parallelizes without any change to the model; `lightgbm.dask` trains one model across
workers' row blocks, has no early stopping and no cross-validation (the snapshot search),
and needs worker-to-worker ports for LightGBM's own network.

The simulator's direct path (`training/train.py`) trains `DaskGradientBoostedModel` below:
same contract and same encoding of features as `GradientBoostedModel` (it is one: predict,
`booster_`, `feature_names_`, `categories_` and `best_iteration_` behave the same), so the
registry, scoring and serving cannot tell which one trained a model. `lightgbm.dask` has no
early-stopping callback: it trains `num_boost_round` rounds while recording the validation
metric, and `best_iteration_` is the round where that metric was best (early stopping after
the fact; predictions use only those trees).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from features.definitions import CATEGORICAL_FEATURES
from training.dataset import to_matrix
from training.model import GradientBoostedModel


def _fit_rows(model, frame: pd.DataFrame, y: np.ndarray, rows: np.ndarray):
    """Task body: `model` fitted on `rows` of (frame, y); each task gets its own copy (Dask pickles arguments)."""
    return model.fit(frame.iloc[rows], y[rows])


def fit_on_cluster(client, model, frame: pd.DataFrame, y: np.ndarray, row_sets: list[np.ndarray]) -> list:
    """A fitted copy of the unfitted `model` per row set of (frame, y), fitted as Dask tasks at once.

    `model` is any estimator whose `fit(X, y)` returns itself (an `AutoTunedModel`); `frame` and
    `y` go to the workers once, the row sets (positions) with each task. Returns the models in
    the order of `row_sets`.
    """
    remote_frame, remote_y = client.scatter([frame, y], broadcast=True)
    futures = [client.submit(_fit_rows, model, remote_frame, remote_y, np.asarray(rows), pure=False) for rows in row_sets]
    return client.gather(futures)


class DaskGradientBoostedModel(GradientBoostedModel):
    """`GradientBoostedModel` fitted by `lightgbm.dask` on the workers of `client`.

    Parameters
    ----------
    client : a `distributed.Client` (see `churn.cluster.dask_client`).
    partitions : row blocks the training matrix is split into across the workers.
    Other parameters: as `GradientBoostedModel`.
    """

    def __init__(
        self,
        client=None,
        task="churn",
        num_boost_round=400,
        learning_rate=0.05,
        num_leaves=31,
        min_data_in_leaf=50,
        seed=0,
        partitions=2,
    ):
        super().__init__(task, num_boost_round, learning_rate, num_leaves, min_data_in_leaf, seed)
        self.client = client
        self.partitions = partitions

    def fit(
        self, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame, y_val: np.ndarray, feature_names: list[str]
    ) -> DaskGradientBoostedModel:
        """Train on (X, y) across the cluster; pick the best round on (X_val, y_val)."""
        import dask.array as da
        import lightgbm.dask as lgb_dask

        if self.client is None:
            raise ValueError("DaskGradientBoostedModel needs a client: pass client=dask_client(settings)")
        self.feature_names_ = list(feature_names)
        self.categories_ = {
            name: sorted(X[name].dropna().astype(str).unique().tolist())
            for name in self.feature_names_
            if name in CATEGORICAL_FEATURES
        }

        def blocks(frame: pd.DataFrame, target: np.ndarray):
            matrix = to_matrix(frame, self.feature_names_, self.categories_)
            rows = max(1, math.ceil(len(matrix) / self.partitions))
            return da.from_array(matrix, chunks=(rows, -1)), da.from_array(np.asarray(target, dtype=float), chunks=rows)

        params = self.lgb_params()
        metric = params["metric"]
        params.pop("num_threads")  # each worker uses its own threads
        estimator_class = lgb_dask.DaskLGBMClassifier if self.task == "churn" else lgb_dask.DaskLGBMRegressor
        estimator = estimator_class(client=self.client, n_estimators=self.num_boost_round, **params)
        X_d, y_d = blocks(X, y)
        X_v, y_v = blocks(X_val, y_val)
        categorical = [i for i, name in enumerate(self.feature_names_) if name in CATEGORICAL_FEATURES]
        estimator.fit(
            X_d, y_d, eval_set=[(X_v, y_v)], feature_name=self.feature_names_, categorical_feature=categorical
        )
        curve = np.asarray(estimator.evals_result_["valid_0"][metric])
        best = np.argmax(curve) if metric == "auc" else np.argmin(curve)
        self.booster_ = estimator.booster_
        self.best_iteration_ = int(best) + 1
        return self
