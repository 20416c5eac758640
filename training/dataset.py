"""Model inputs: which customers train, which features a model needs, the checks on them, the matrix LightGBM reads.

Labels and point-in-time training sets are made by `training/backtest.py` (`training_data`).
"""

from __future__ import annotations

import hashlib

import lightgbm as lgb
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


def at_most(rows: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """At most `limit` of `rows` (positions), drawn at random (seeded), in their order; None keeps all."""
    if limit is None or len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))


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


# A categorical value gets a code of its own when it is on at least this many training rows, and
# only the `MAX_CATEGORY_LEVELS` most frequent do (a 750-value service-area code keeps its 250
# largest areas). The others share the "other" code: a value on a handful of rows supports no
# split of its own (LightGBM wants `min_data_per_group`, 100, per side), but together they may.
MIN_CATEGORY_ROWS = 20
MAX_CATEGORY_LEVELS = 250


def category_levels(values: pd.Series, min_rows: int = MIN_CATEGORY_ROWS, max_levels: int = MAX_CATEGORY_LEVELS) -> list[str]:
    """The values of one categorical feature that get a code of their own, from its training rows.

    Rare values (fewer than `min_rows` rows) and those beyond the `max_levels` most frequent
    are left out: in `to_matrix` they share one code with every value never seen in training,
    so a category first met at evaluation or at scoring is scored as the rare ones were.
    Sorted, so the codes do not depend on row order.
    """
    counts = values.dropna().astype(str).value_counts()
    counts = counts[counts >= min_rows]
    # ties at the cut are broken by the value, so the levels do not depend on row order either
    frequent = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_levels]
    return sorted(value for value, _ in frequent)


def to_matrix(frame: pd.DataFrame, feature_names: list[str], categories: dict[str, list[str]]) -> np.ndarray:
    """The model input: a float64 array in `feature_names` order, categoricals as their codes.

    `categories` holds the levels of each categorical feature (a feature is categorical
    exactly when it is a key of `categories`): level k has code k; any other value (rare in
    training, or never seen there) has the code `len(levels)`, the "other" category; a
    missing value stays missing.
    """
    columns = []
    for name in feature_names:
        values = frame[name]
        if name in categories:
            known = categories[name]
            codes = pd.Categorical(values.astype("string"), categories=known).codes.astype(np.float64)
            other = (codes < 0) & values.notna().to_numpy()
            codes[other] = len(known)
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


class MatrixRows(lgb.Sequence):
    """The model input of a frame's rows, made `batch_size` rows at a time (a LightGBM `Sequence`).

    A LightGBM Dataset built from it bins the same values as one built from `to_matrix(frame, ...)`
    without the whole float64 matrix in memory at once (5.6 M training rows of 78 features: 3.5 GB).
    `rows`: positions of the frame's rows to use, in order (default: every row), without a copy
    of those rows. LightGBM reads it twice: single rows it samples for the bin edges (served
    here from a block of rows made once) and then consecutive batches.
    Not the same Dataset as the matrix's, though: above LightGBM's `bin_construct_sample_cnt`
    (200,000) rows it samples other rows for the bin edges, and with `feature_pre_filter` it
    keeps some rare-valued features the matrix's would drop (seen with `min_data_in_leaf`
    100), so models differ a little. `model_input` uses it only where the matrix is large.
    """

    batch_size = 65_536

    def __init__(self, frame: pd.DataFrame, feature_names: list[str], categories: dict[str, list[str]], rows: np.ndarray | None = None):
        self.frame, self.feature_names, self.categories = frame, feature_names, categories
        self.rows = np.arange(len(frame)) if rows is None else np.asarray(rows)
        self._block: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _made(self, positions: np.ndarray) -> np.ndarray:
        return to_matrix(self.frame.iloc[positions], self.feature_names, self.categories)

    def __getitem__(self, index: int | slice | list[int]) -> np.ndarray:
        if not isinstance(index, (int, np.integer)):
            return self._made(self.rows[index])
        start = None if self._block is None else self._block[0]
        if start is None or not start <= index < start + len(self._block[1]):
            start = int(index)
            self._block = (start, self._made(self.rows[start : start + self.batch_size]))
        return self._block[1][index - start]


# The model input of a LightGBM Dataset is made as one float64 matrix up to this size, and batch by batch
# (`MatrixRows`) beyond: the demo's and the examples' models stay those of a matrix; a 1,000,000-customer
# training set (5.6 M rows of 78 features per fit) is never held as one.
MATRIX_BYTES = 1_000_000_000


def model_input(
    frame: pd.DataFrame, feature_names: list[str], categories: dict[str, list[str]], rows: np.ndarray | None = None,
    limit_bytes: int = MATRIX_BYTES,
) -> np.ndarray | MatrixRows:
    """What a LightGBM Dataset of `rows` of `frame` (default: all) is made from: the matrix if it takes at most `limit_bytes`, else `MatrixRows`."""
    count = len(frame) if rows is None else len(rows)
    if count * len(feature_names) * 8 > limit_bytes:
        return MatrixRows(frame, feature_names, categories, rows)
    return to_matrix(frame if rows is None else frame.iloc[rows], feature_names, categories)


# A text feature with at least this share of distinct values among its customers' values is an
# id (or free text) rather than a category: nothing learned about one value applies to another row.
ID_LIKE_SHARE = 0.9
# Text is free text (comments, addresses) when its values are this long on median and hold spaces,
# and at least half of them are distinct.
FREE_TEXT_CHARS = 25


def screen_features(frame: pd.DataFrame, feature_names: list[str], categorical: list[str]) -> dict[str, str]:
    """The features a model should not use, each with why: constant, id-like or free text.

    - constant: one value (or none) on every row: nothing to split on;
    - id-like: a text feature whose values are (nearly) all distinct, one customer each
      (counted on the latest cutoff's rows, one per customer, so that a customer's id repeated
      over cutoffs still counts once);
    - free text: long text with spaces, mostly distinct (comments, addresses).
    - a number is id-like only when it counts rows: whole numbers, all distinct and without a
      gap (a row number); a continuous number is distinct on every row too, and an id spread
      over a range (account numbers) cannot be told from a measurement.
    High-cardinality categories that are not id-like stay, with their rare values pooled
    (`category_levels`).
    """
    latest = frame[frame["event_timestamp"] == frame["event_timestamp"].max()] if "event_timestamp" in frame else frame
    left_out = {}
    for name in feature_names:
        values = frame[name].dropna()
        distinct = values.nunique()
        if distinct <= 1:
            held = "no value" if distinct == 0 else f"the value {values.iloc[0]!r}"
            left_out[name] = f"constant: {held} on every row"
            continue
        if name not in categorical:
            if _is_counter(latest[name]):
                left_out[name] = f"id-like: consecutive whole numbers, one per customer ({len(latest):,} rows): a row number or counter"
            continue
        present = latest[name].dropna().astype(str)
        if present.empty:
            continue
        share = present.nunique() / len(present)
        text = present.str.len().median() >= FREE_TEXT_CHARS and present.str.contains(" ").mean() >= 0.5
        if text and share >= 0.5:
            left_out[name] = f"free text: {present.nunique():,} distinct values of median length {present.str.len().median():.0f}"
        elif share >= ID_LIKE_SHARE and present.nunique() > MIN_CATEGORY_ROWS:
            left_out[name] = f"id-like: {present.nunique():,} distinct values in {len(present):,} customers' rows"
    return left_out


def _is_counter(values: pd.Series) -> bool:
    """Whether a number column is a row number or counter: whole numbers, all distinct, no gap, on every row."""
    numbers = pd.to_numeric(values, errors="coerce")
    if len(numbers) < 100 or numbers.isna().any() or (numbers % 1 != 0).any():
        return False
    return numbers.nunique() == len(numbers) and numbers.max() - numbers.min() + 1 == len(numbers)


def fingerprint(frame: pd.DataFrame) -> str:
    """A short, order-sensitive hash of a training set, logged with the model."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]
