"""Model fits on a Dask cluster (Dask mode): whole fits as tasks.

`training/train.py` (`client=`): `fit_on_cluster` runs every fit of a training run
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
"""

from __future__ import annotations

import numpy as np
import pandas as pd


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
