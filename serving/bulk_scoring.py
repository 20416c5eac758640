"""Batch scoring of every active customer at scale: chunk by chunk, raw boosters, bounded memory.

`serving/batch.py` scores through one Feast point-in-time join into one frame, which is fine
for thousands of customers. At millions, this module streams the features of the active
customers straight from the offline tables (`features/pit.py`, the same point-in-time rule
as Feast, tested value for value) and writes the scores to Parquet as each chunk is done,
so memory holds one chunk, not the population.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from churn.errors import DataError
from churn.settings import Settings
from features.build import raw_as_of
from features.pit import active_feature_batches
from serving.scoring import Scorer

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
    settings: Settings, scorer: Scorer, as_of: datetime | None = None, chunk_rows: int = 200_000, path: Path | None = None
) -> BulkScoreResult:
    """Score every customer active at `as_of` (default: the end of the raw data) into a Parquet file.

    Each chunk goes through `Scorer.score` (feature checks, raw `Booster.predict` of both
    models, segment and risk band), so the file has the columns and scores of the one-frame
    path (`serving/batch.py`): the features, churn_probability, clv, segment, risk_band, model_version.
    """
    start = time.perf_counter()
    as_of = as_of or raw_as_of(settings.raw_dir)
    path = path or settings.outputs_dir / f"scores_{as_of:%Y%m%d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    rows, chunks = _score_to_parquet(settings.feature_tables_dir, scorer, as_of, chunk_rows, tmp)
    tmp.replace(path)  # a failed run leaves the previous scores in place
    return BulkScoreResult(path, rows, chunks, time.perf_counter() - start)


def _score_to_parquet(
    tables_dir: Path, scorer: Scorer, as_of: datetime, chunk_rows: int, path: Path, partition: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Score the active customers (of one partition, if given) into `path`; returns (rows, chunks)."""
    writer, rows, chunks = None, 0, 0
    try:
        for features in active_feature_batches(tables_dir, as_of, chunk_rows, partition):
            table = pa.Table.from_pandas(scorer.score(features), preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            rows, chunks = rows + table.num_rows, chunks + 1
    finally:
        if writer is not None:
            writer.close()
    return rows, chunks


def score_all_dask(
    client, settings: Settings, scorer: Scorer, as_of: datetime | None = None, chunk_rows: int = 200_000,
    path: Path | None = None,
) -> BulkScoreResult:
    """`score_all` on a Dask cluster: one task per customer partition, each writing its own part.

    The scorer (raw boosters and catalog) is shipped to the workers once; workers read the
    feature tables and write the parts by path, so on a real cluster both live on shared storage.
    The result is one file at `path` (directory `<path>.parts` holds the parts meanwhile).
    """
    start = time.perf_counter()
    as_of = as_of or raw_as_of(settings.raw_dir)
    path = Path(path or settings.outputs_dir / f"scores_{as_of:%Y%m%d}.parquet").resolve()
    parts = path.with_suffix(".parts")
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    n = settings.dask.partitions
    remote_scorer = client.scatter(scorer, broadcast=True)
    futures = [
        client.submit(
            _score_to_parquet, settings.feature_tables_dir.resolve(), remote_scorer, as_of, chunk_rows,
            parts / f"part-{k:04d}.parquet", (k, n), pure=False,
        )
        for k in range(n)
    ]
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
