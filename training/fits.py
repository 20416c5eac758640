"""Many model fits at once: the evaluation splits' and the model to register, as `churn train` runs them.

The fits of a training run are independent (one per evaluation split, and the model to
register), so they run side by side, each a whole `AutoTunedModel.fit` (search, early
stopping, ensemble, merged booster), single-threaded and deterministic: the models are those
one process fits one after another, bit for bit.

- One machine (`fit_models`): `n_jobs` worker processes (joblib's loky), one fit each at a
  time. Why processes of one thread rather than LightGBM's threads in one fit: on small data
  and on a machine shared with other work, OpenMP threads spin-wait for each other (Telco's
  search: 3.1 s with 1 thread, 10.2 s with 2 on a quiet 2-core machine; 190 s with 2 on busy
  cores), while a busy core only slows the one fit it runs. Threads in one process do not
  help either: on small data the boosting loop's Python holds the GIL (Telco: 3.1 s serial,
  2.8 s on 2 threads).
- A Dask cluster (`fit_on_cluster`, Dask mode): each fit is one Dask task. Why tasks, not
  `lightgbm.dask`: the training frame is assembled in this process by Feast's point-in-time
  join anyway, so what outgrows one machine is the CPU time of the searches, which
  parallelizes without any change to the model; `lightgbm.dask` trains one model across
  workers' row blocks, has no early stopping and no cross-validation (the snapshot search),
  and needs worker-to-worker ports for LightGBM's own network.
Either way the registry gets one booster plus its spec, nothing for `serving/` to tell apart.
This module imports no feature store: a worker process starts in about a second.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import joblib
import numpy as np
import pandas as pd
import psutil


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and `taskset` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def affordable_fits(fit_bytes: float) -> int:
    """How many fits side by side the free memory affords, at least one.

    A worker holds about 3x the frame of its rows: the copy it receives, the float matrix
    LightGBM reads, and LightGBM's binned dataset and trees; the calling process keeps the
    whole frame meanwhile (already counted out of the free memory). Half the free memory is
    left for the rest of the machine.
    """
    return max(1, int(0.5 * psutil.virtual_memory().available // max(3 * fit_bytes, 1)))


def fits_at_once(frame: pd.DataFrame, row_sets: list[np.ndarray], n_jobs: int | None = None) -> int:
    """How many of the fits on `row_sets` of `frame` `fit_models` runs side by side.

    `n_jobs` (None: the usable cores), at most one per row set, and at most what the free
    memory affords for the largest row set (`affordable_fits`).
    """
    largest = max(len(rows) for rows in row_sets) * frame.memory_usage(index=False).sum() / max(len(frame), 1)
    return min(n_jobs or usable_cores(), len(row_sets), affordable_fits(largest))


def _fit_one(k: int, model, frame: pd.DataFrame, y: np.ndarray):
    return k, model.fit(frame, y)


def fit_models(
    make: Callable[[], object], frame: pd.DataFrame, y: np.ndarray, row_sets: list[np.ndarray], n_jobs: int | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list:
    """A model from `make()` fitted on each row set of (frame, y), `n_jobs` fits at a time; in the order of `row_sets`.

    `make` returns an unfitted estimator (`fit(X, y, rows=None)` returns itself, fitted on
    `rows` of X and y when given); it is called here and the unfitted model is sent to a
    worker with a copy of its rows, or fitted here on the rows of the frame itself. `n_jobs` None: one fit per usable core;
    fewer when the free memory affords fewer (`fits_at_once`), one after another in this
    process when it affords one.
    `progress(done, total)` after each fit.
    """
    n_jobs = fits_at_once(frame, row_sets, n_jobs)
    fitted: list = [None] * len(row_sets)
    if n_jobs <= 1:  # in this process, on the rows without a copy of them
        for k, rows in enumerate(row_sets):
            fitted[k] = make().fit(frame, y, rows=rows)
            progress(k + 1, len(row_sets))
        return fitted
    tasks = (joblib.delayed(_fit_one)(k, make(), frame.iloc[rows], y[rows]) for k, rows in enumerate(row_sets))
    # one task waiting per worker, not two: each waiting task is a copy of its rows in this process
    parallel = joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered", pre_dispatch="n_jobs")
    for done, (k, model) in enumerate(parallel(tasks), start=1):
        fitted[k] = model
        progress(done, len(row_sets))
    return fitted


def _fit_rows(model, frame: pd.DataFrame, y: np.ndarray, rows: np.ndarray):
    """Task body: `model` fitted on `rows` of (frame, y); each task gets its own copy (Dask pickles arguments)."""
    return model.fit(frame, y, rows=rows)


def fit_on_cluster(client, model, frame: pd.DataFrame, y: np.ndarray, row_sets: list[np.ndarray]) -> list:
    """A fitted copy of the unfitted `model` per row set of (frame, y), fitted as Dask tasks at once.

    `model` is any estimator whose `fit(X, y)` returns itself (an `AutoTunedModel`); `frame` and
    `y` go to the workers once, the row sets (positions) with each task. Returns the models in
    the order of `row_sets`.
    """
    remote_frame, remote_y = client.scatter([frame, y], broadcast=True)
    futures = [client.submit(_fit_rows, model, remote_frame, remote_y, np.asarray(rows), pure=False) for rows in row_sets]
    return client.gather(futures)
