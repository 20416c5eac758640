"""Run a function that builds a large Arrow table in a process of its own, and take the table back.

DuckDB and Arrow keep the memory a big join used for reuse after it (at 1,000,000 customers,
7.0 GB held for a 1.5 GB training set); a process of its own gives it back when it ends. The
table comes back through an Arrow IPC file that the caller memory-maps, not through a pipe.
Like any code that starts processes, a script calling this needs the
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from churn.processes import die_with_parent


def frame_from_child(
    fn: Callable[..., tuple[pa.Table | Iterable[pa.Table], Any]], args: tuple, scratch: Path,
    progress: Callable[[int, int], None] | None = None, lean_except: Collection[str] | None = None,
) -> tuple[pd.DataFrame, Any]:
    """`fn(*args)` in a spawned process; its table as a pandas frame, and the other value it returned.

    `fn` must be importable (a module-level function). It returns a table, or an iterable of
    tables of one schema (parts, in order: the child writes each as it comes and holds one
    at a time). The Arrow file lives in a temporary folder under `scratch` until it is read.
    A child that dies raises `concurrent.futures.process.BrokenProcessPool`. `progress`:
    called here with what `fn` reports through `report_progress(done, total)` in the child,
    while it runs. `lean_except`: read the file batch by batch as `lean_frame` reads it (number
    columns as float32 where that holds every value exactly), but for these columns; None:
    read it as it is.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    reports = context.Queue() if progress is not None else None
    with tempfile.TemporaryDirectory(dir=scratch, prefix="child-") as folder:
        path = str(Path(folder) / "table.arrow")
        with ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=_start_child, initargs=(os.getpid(), reports),
        ) as pool:
            future = pool.submit(_to_file, fn, args, path)
            if reports is not None:
                _relay(future, reports, progress)
            extra = future.result()
        if lean_except is not None:
            with pa.OSFile(path) as source:
                reader = pa.ipc.open_file(source)
                batches = lambda: (reader.get_batch(i) for i in range(reader.num_record_batches))  # noqa: E731
                return lean_frame(reader.schema, batches, lean_except), extra
        with pa.memory_map(path) as source:
            return pa.ipc.open_file(source).read_all().to_pandas(self_destruct=True), extra


def lean_frame(schema: pa.Schema, batches: Callable[[], Iterator[pa.RecordBatch]], keep: Collection[str] = ()) -> pd.DataFrame:
    """A table as a pandas frame, its number columns as float32 where that loses nothing.

    `batches()` yields the table's record batches (it is called twice). A number column (but
    those in `keep`, read as they are; float or integer, nulls as NaN) whose every value is exactly a float32 (counts,
    days, flags: most features) becomes float32, any other float64: the same values, half the
    memory (a 1,000,000-customer training set has 14 M rows of 78 features: 8.7 GB as float64,
    which is how pandas holds an integer column with a null). Read batch by batch, twice
    (first to find those columns, then to fill arrays made once), so memory holds the frame and
    one batch, never a second copy of the table.
    """
    floats = [n for n, t in zip(schema.names, schema.types) if n not in keep and (pa.types.is_floating(t) or pa.types.is_integer(t))]
    narrow, rows = set(floats), 0
    for batch in batches():
        rows += batch.num_rows
        for name in list(narrow):
            values = batch.column(name).to_numpy(zero_copy_only=False)
            if not np.array_equal(values.astype(np.float32).astype(np.float64), values, equal_nan=True):
                narrow.discard(name)
    if rows == 0:
        return schema.empty_table().to_pandas()
    arrays = {n: np.empty(rows, dtype=np.float32 if n in narrow else np.float64) for n in floats}
    others = [n for n in schema.names if n not in arrays]
    parts, start = [], 0
    for batch in batches():
        for name, array in arrays.items():
            array[start : start + batch.num_rows] = batch.column(name).to_numpy(zero_copy_only=False)
        parts.append(batch.select(others).to_pandas())
        start += batch.num_rows
    # concatenated into arrays of their own, so that no part keeps its batch's buffers alive
    rest = pd.concat(parts, ignore_index=True) if len(parts) != 1 else parts[0]
    del parts
    columns = {n: arrays[n] if n in arrays else _one_object_per_value(rest[n]) for n in schema.names}
    return pd.DataFrame(columns, copy=False)  # each array as it is: no block of every column copied together


def _one_object_per_value(values: pd.Series) -> pd.Series:
    """A text column whose equal values are one Python object, not one per row.

    Arrow shares equal strings only within a batch: a customer id repeated at 20 cutoffs, read
    in 20 batches, would be 20 objects of about 60 bytes (0.8 GB for 14 M rows).
    """
    if values.dtype != object:
        return values
    codes, uniques = pd.factorize(values)
    if len(uniques) == 0:
        return values
    shared = np.asarray(uniques, dtype=object).take(np.maximum(codes, 0))
    shared[codes < 0] = None
    return pd.Series(shared, index=values.index, name=values.name)


_reports = None  # in a child of `frame_from_child` given `progress`: the queue its reports go to


def report_progress(done: int, total: int) -> None:
    """In a child of `frame_from_child`: pass `progress(done, total)` to the parent (nothing if it asked for none)."""
    if _reports is not None:
        _reports.put((done, total))


def _relay(future, reports, progress: Callable[[int, int], None]) -> None:
    """Call `progress` with the child's reports until its work is done (a report still in flight then is dropped)."""
    while True:
        try:
            progress(*reports.get(timeout=0.2))
        except queue.Empty:
            if future.done():
                return


def _to_file(fn: Callable[..., tuple[pa.Table | Iterable[pa.Table], Any]], args: tuple, path: str) -> Any:
    """The child's side: run `fn`, write its table (or each of its parts, as they come) to `path`, return its other value."""
    tables, extra = fn(*args)
    writer = schema = None
    with pa.OSFile(path, "wb") as sink:
        for table in [tables] if isinstance(tables, pa.Table) else tables:
            if writer is None:
                schema = table.schema
                writer = pa.ipc.new_file(sink, schema)
            writer.write_table(table.cast(schema))  # a part with a column of nulls only has that column typed null
        if writer is None:
            raise ValueError(f"{fn.__name__} returned no table")
        writer.close()
    return extra


def _start_child(parent: int, reports) -> None:
    """Start of the child: it ends with its parent (`_end_with_parent`), and reports progress to `reports` (or nowhere)."""
    global _reports
    _reports = reports
    _end_with_parent(parent)


def _end_with_parent(parent: int) -> None:
    """On Linux, have the kernel end this child when its parent dies.

    A pool's process otherwise outlives a killed parent, waiting for work that never comes
    while it holds the memory of its last job (seen: 4.8 GB for 26 minutes).
    """
    die_with_parent()
    if sys.platform.startswith("linux") and os.getppid() != parent:  # the parent died before the call above
        os._exit(1)
