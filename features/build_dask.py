"""Feature building on Dask: one DuckDB build per customer partition, run as Dask tasks.

Every feature is a function of one customer's raw rows, so customers split into independent
partitions (`customer_id % n`): each task runs `build_feature_tables` on its partition and
writes its own Parquet files; the tables are then concatenated in (event_timestamp,
customer_id) order, as the one-machine build writes them. Workers read and write by path,
so on a real cluster `raw_dir` and `out_dir` must be on storage every worker sees.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from churn.errors import DataError
from features.build import FeatureBuildResult, build_feature_tables, raw_as_of
from features.definitions import VIEW_COLUMNS


def _build_partition(raw_dir: str, parts_dir: str, k: int, n: int, memory_limit: str) -> int:
    """Task body: the feature tables of partition k of n; returns its row count."""
    return build_feature_tables(Path(raw_dir), Path(parts_dir) / f"part-{k:04d}", memory_limit, partition=(k, n)).rows


def build_feature_tables_dask(
    client, raw_dir: Path, out_dir: Path, partitions: int = 8, memory_limit: str = "2GB"
) -> FeatureBuildResult:
    """`build_feature_tables` on a Dask cluster: same tables, built partition by partition in parallel.

    `client` is a `distributed.Client` (see `churn.cluster.dask_client`).
    """
    raw_dir, out_dir = Path(raw_dir).resolve(), Path(out_dir).resolve()
    parts_dir = out_dir / "_parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    futures = [
        client.submit(_build_partition, str(raw_dir), str(parts_dir), k, partitions, memory_limit, pure=False)
        for k in range(partitions)
    ]
    rows = sum(client.gather(futures))
    if rows == 0:
        raise DataError(f"{raw_dir}: no customer is active at any weekly snapshot; nothing to build features from")
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    tables = {}
    for view in VIEW_COLUMNS:
        path = out_dir / f"{view}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{parts_dir}/part-*/{view}.parquet') "
            f"ORDER BY event_timestamp, customer_id) TO '{tmp}' (FORMAT parquet)"
        )
        tmp.replace(path)  # a failed build leaves the previous table in place
        tables[view] = path
    snapshots = con.execute(
        f"SELECT count(DISTINCT event_timestamp), min(event_timestamp) FROM read_parquet('{out_dir}/behavioral.parquet')"
    ).fetchone()
    con.close()
    shutil.rmtree(parts_dir)
    return FeatureBuildResult(tables, rows, snapshots[0], snapshots[1], raw_as_of(raw_dir), partitions)
