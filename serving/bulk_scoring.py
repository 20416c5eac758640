"""Batch scoring of every active customer at scale: chunk by chunk, raw boosters, bounded memory.

`serving/batch.py` scores through one Feast point-in-time join into one frame, which is fine
for thousands of customers. At millions, this module streams the features of the active
customers straight from the offline tables (`features/pit.py`, the same point-in-time rule
as Feast, tested value for value) and writes the scores to Parquet as each chunk is done,
so memory holds one chunk, not the population. The active customers are those
`serving/batch.py` scores (`features.store.active_customers`), computed in the same DuckDB
connection as the join (`features.store.active_population`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from churn import clock
from churn.errors import DataError
from churn.settings import Settings
from features.pit import open_active_batches
from features.store import active_customers, active_population, latest_snapshot
from serving.scoring import Scorer
from training.value import value_columns

@dataclass(frozen=True)
class BulkScoreResult:
    """Where `score_all` wrote the scores, how many, and how fast."""

    path: Path
    rows: int
    chunks: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def score_all(
    settings: Settings, scorer: Scorer, as_of: datetime | None = None, chunk_rows: int = 200_000, path: Path | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> BulkScoreResult:
    """Score every customer active at `as_of` into a Parquet file.

    `as_of` defaults to what `serving/batch.py` scores: the latest fresh snapshot at the
    engine's clock. Each chunk goes through `Scorer.score` (feature checks, raw `Booster.predict` of both
    models, segment and risk band), so the file has the columns and scores of the one-frame
    path (`serving/batch.py`): the features, churn_probability, clv, segment, risk_band, model_version.
    `progress(done, total)` after each chunk is written: the customers scored so far, of the active ones.
    """
    start = time.perf_counter()
    as_of = as_of or latest_snapshot(settings, clock.now(settings))
    path = path or settings.outputs_dir / f"scores_{as_of:%Y%m%d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    rows, chunks = _score_to_parquet(settings, scorer, as_of, chunk_rows, tmp, progress)
    tmp.replace(path)  # a failed run leaves the previous scores in place
    return BulkScoreResult(path, rows, chunks, time.perf_counter() - start)


def _score_to_parquet(
    settings: Settings, scorer: Scorer, as_of: datetime, chunk_rows: int, path: Path, progress: Callable[[int, int], None],
) -> tuple[int, int]:
    """Score the customers active at `as_of` into `path`; returns (rows, chunks)."""
    writer, rows, chunks = None, 0, 0
    # the population is computed in the join's own DuckDB connection, not read into pandas first
    population = active_population(settings, as_of)
    try:
        with open_active_batches(settings.feature_tables_dir, as_of, chunk_rows, population=population) as (total, batches):
            for batch in batches:
                table = score_arrow(scorer, batch)
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
                rows, chunks = rows + table.num_rows, chunks + 1
                progress(rows, total)
    finally:
        if writer is not None:
            writer.close()
    return rows, chunks


class _NotPlain(Exception):
    """A batch the Arrow path does not take as is (a hole, a non-number)."""


def _float_column(batch: pa.RecordBatch, name: str, categories: dict[str, list[str]], required: bool) -> np.ndarray:
    """One model input column as float64, straight from Arrow; `_NotPlain` when `to_matrix` would object."""
    if batch.schema.get_field_index(name) < 0:
        raise _NotPlain(name)
    values = batch.column(name)
    if required and values.null_count:
        raise _NotPlain(name)
    if name in categories:
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise _NotPlain(name)
        known = categories[name]
        codes = pc.index_in(values, value_set=pa.array(known, type=values.type)).to_numpy(zero_copy_only=False).astype(np.float64)
        # a value rare or never seen in training: the "other" code (`training.dataset.to_matrix`)
        codes[np.isnan(codes) & values.is_valid().to_numpy(zero_copy_only=False)] = len(known)
        return codes
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise _NotPlain(name)
    out = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if required and np.isnan(out).any():
        raise _NotPlain(name)
    return out


def _matrix(batch: pa.RecordBatch, model, required: set[str]) -> np.ndarray:
    """The model's input matrix from an Arrow batch: a row per customer, a column per feature, float64.

    Row-major, as `Booster.predict` reads it fastest (the column-major transpose of a
    feature-major array is cheaper to fill, but its prediction took 8 % longer at 123,000 rows).
    """
    out = np.empty((batch.num_rows, len(model.feature_names)))
    for j, name in enumerate(model.feature_names):
        out[:, j] = _float_column(batch, name, model.categories, name in required)
    return out


def score_arrow(scorer: Scorer, batch: pa.RecordBatch) -> pa.Table:
    """`Scorer.score` of one Arrow batch, without a round trip through pandas.

    Same numbers and columns (the features, churn_probability, clv, segment, risk_band,
    model_version; tested equal): each feature column goes from Arrow to a float64 array
    once, for both models. A batch with anything `Scorer.score` would refuse (a missing
    column or value, a non-number, a category not seen in training) goes through
    `Scorer.score` itself, which raises the error naming the column and customer.
    """
    required = set(scorer.required_features)
    try:
        x_churn = _matrix(batch, scorer.churn, required)
        if scorer.clv is None:
            x_clv = None
        elif scorer.clv.feature_names == scorer.churn.feature_names and scorer.clv.categories == scorer.churn.categories:
            x_clv = x_churn  # the same inputs (as usual: both models read the data set's feature service)
        else:
            x_clv = _matrix(batch, scorer.clv, required)
        position = {name: j for j, name in enumerate(scorer.churn.feature_names)}
        columns = {
            c: x_churn[:, position[c]] if c in position else _float_column(batch, c, {}, True)
            for c in value_columns(scorer.value)
        }
    except _NotPlain:
        return pa.Table.from_pandas(scorer.score(batch.to_pandas()), preserve_index=False)
    scores = scorer.scores(x_churn, x_clv, columns)
    table = pa.Table.from_batches([batch])
    for name in ("churn_probability", "clv"):
        table = table.append_column(name, pa.array(scores[name]))
    for name in ("segment", "risk_band"):
        table = table.append_column(name, pa.array(np.asarray(scores[name]).astype(object), pa.string()))
    return table.append_column("model_version", pa.array([scorer.model_version] * batch.num_rows, pa.string()))


def _score_part(settings: Settings, scorer: Scorer, entities, path: Path) -> tuple[int, int]:
    """Dask task body: `score_entities` of one part of the active customers, written to `path`."""
    from serving.batch import score_entities

    score_entities(settings, scorer, entities).to_parquet(path, index=False)
    return len(entities), 1


def score_all_dask(
    client, settings: Settings, scorer: Scorer, as_of: datetime | None = None, path: Path | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> BulkScoreResult:
    """`score_all` on a Dask cluster: one task per customer partition (`dask.partitions`), each writing its own part.

    Each task scores its part of the active customers as `serving.batch.score_active` does
    (Feast's point-in-time join, then `Scorer.score`): the same rows, in the same order, as
    `score_active` (default `as_of`: the latest fresh snapshot at the engine's clock). The
    scorer (raw boosters and catalog) is shipped to the workers once; workers read the
    features and write the parts by path, so on a real cluster both live on shared storage.
    The result is one file at `path` (directory `<path>.parts` holds the parts meanwhile).
    `progress(done, total)` as the tasks finish, in parts.
    """
    from distributed import as_completed

    start = time.perf_counter()
    as_of = as_of or latest_snapshot(settings, clock.now(settings))
    path = Path(path or settings.outputs_dir / f"scores_{as_of:%Y%m%d}.parquet").resolve()
    parts = path.with_suffix(".parts")
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    n = settings.dask.partitions
    remote_scorer = client.scatter(scorer, broadcast=True)
    # contiguous parts of the active customers: the parts in order are score_active's rows
    entities = active_customers(settings, as_of)
    futures = [
        client.submit(_score_part, settings, remote_scorer, entities.iloc[rows], parts / f"part-{k:04d}.parquet", pure=False)
        for k, rows in enumerate(np.array_split(np.arange(len(entities)), n)) if len(rows)
    ]
    for finished, _ in enumerate(as_completed(futures), start=1):
        progress(finished, len(futures))
    done = client.gather(futures)
    rows, chunks = sum(r for r, _ in done), sum(c for _, c in done)
    written = sorted(parts.glob("part-*.parquet"))
    if not written:
        raise DataError(f"no customer is active at {as_of.isoformat()}; nothing scored")
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.concat_tables([pq.read_table(p) for p in written]), tmp)
    tmp.replace(path)
    shutil.rmtree(parts)
    return BulkScoreResult(path, rows, chunks, time.perf_counter() - start)
