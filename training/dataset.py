"""Model inputs: which customers train, which features a model needs, the checks on them, the matrix LightGBM reads.

Labels and point-in-time training sets are made by `training/backtest.py` (`training_data`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from churn.errors import DataError


def sampled_customers(labels: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The rows of `labels` whose customer is among `limit` customers drawn by a stable hash of the id.

    The same customers are kept at every cutoff and in every training set of one run (the
    churn and the value model's), and from run to run; `limit` None keeps every row.
    """
    ids = labels["customer_id"].astype(str)
    distinct = ids.drop_duplicates()
    if limit is None or len(distinct) <= limit:
        return labels
    hashes = pd.util.hash_pandas_object(distinct, index=False).to_numpy()
    kept = set(distinct.to_numpy()[np.argsort(hashes, kind="stable")[:limit]].tolist())
    return labels[ids.isin(kept).to_numpy()].reset_index(drop=True)


def required_features(model) -> list[str]:
    """The features a registered model needs a value of: those it never saw missing in training.

    `churn train` records them in the model's spec (`extra["required"]`); a model without that
    record needs every feature.
    """
    return list(model.extra.get("required", model.feature_names))


def check_features(frame: pd.DataFrame, feature_names: list[str], where: str, required: list[str] | None = None) -> None:
    """Raise `DataError` if a feature that must be present is missing, naming customers and columns.

    `required`: the features that must have a value (default: all of them).
    """
    absent = [f for f in feature_names if f not in frame.columns]
    if required is None:
        required = feature_names
    if absent:
        raise DataError(f"{where}: feature columns {absent} did not arrive from the feature store")
    holes = frame[required].isna()
    if holes.to_numpy().any():
        rows = holes.any(axis=1)
        sample = frame.loc[rows, "customer_id"].head(5).tolist()
        columns = holes.columns[holes.any(axis=0)].tolist()
        raise DataError(
            f"{where}: {int(rows.sum())} rows have no value for {columns} "
            f"(e.g. customer_id {sample}); the feature store has no fresh row for them"
        )


def to_matrix(frame: pd.DataFrame, feature_names: list[str], categories: dict[str, list[str]]) -> np.ndarray:
    """The model input: a float64 array in `feature_names` order, categoricals as their codes.

    `categories` holds the known values of each categorical feature (a feature is categorical
    exactly when it is a key of `categories`). A categorical value not seen in training is an
    error, not a silent code.
    """
    columns = []
    for name in feature_names:
        values = frame[name]
        if name in categories:
            known = categories[name]
            codes = pd.Categorical(values, categories=known).codes.astype(np.float64)
            unseen = (codes < 0) & values.notna().to_numpy()
            if unseen.any():
                bad = values[unseen].iloc[0]
                raise DataError(f"feature {name!r}: value {bad!r} was not seen in training; known {known}")
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            numeric = pd.to_numeric(values, errors="coerce")
            broken = numeric.isna().to_numpy() & values.notna().to_numpy()
            if broken.any():
                row = int(np.flatnonzero(broken)[0])
                who = f" (customer_id {frame['customer_id'].iloc[row]})" if "customer_id" in frame else ""
                raise DataError(
                    f"feature {name!r}: {int(broken.sum())} value(s) are not numbers, "
                    f"e.g. {values.iloc[row]!r} at row {row}{who}"
                )
            columns.append(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def fingerprint(frame: pd.DataFrame) -> str:
    """A short, order-sensitive hash of a training set, logged with the model."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]
