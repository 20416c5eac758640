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
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from churn.processes import die_with_parent


def frame_from_child(
    fn: Callable[..., tuple[pa.Table, Any]], args: tuple, scratch: Path, progress: Callable[[int, int], None] | None = None
) -> tuple[pd.DataFrame, Any]:
    """`fn(*args)` in a spawned process; its table as a pandas frame, and the other value it returned.

    `fn` must be importable (a module-level function). The Arrow file lives in a temporary
    folder under `scratch` until it is read. A child that dies raises
    `concurrent.futures.process.BrokenProcessPool`. `progress`: called here with what `fn`
    reports through `report_progress(done, total)` in the child, while it runs.
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
        with pa.memory_map(path) as source:
            return pa.ipc.open_file(source).read_all().to_pandas(self_destruct=True), extra


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


def _to_file(fn: Callable[..., tuple[pa.Table, Any]], args: tuple, path: str) -> Any:
    """The child's side: run `fn`, write its table to `path`, return its other value."""
    table, extra = fn(*args)
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
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
