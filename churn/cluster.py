"""Dask mode: one place that turns the `dask` settings into a connected `distributed.Client`.

`dask.scheduler = "local"` starts a `LocalCluster` on this machine (as many worker processes
as `dask.local_workers`); any other value is the address of an existing scheduler
(`tcp://scheduler:8786`), whose workers must see the same data folder (a shared file system
or the same paths on every node): tasks read and write the Parquet tables by path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from churn.errors import ConfigError, StoreUnavailableError
from churn.settings import Settings

if TYPE_CHECKING:
    from distributed import Client


@contextmanager
def dask_client(settings: Settings) -> Iterator[Client]:
    """A Dask client for the configured scheduler; a local cluster lives as long as the block."""
    address = settings.dask.scheduler
    if not address:
        raise ConfigError("Dask mode is off: set dask.scheduler to 'local' or a scheduler address (CHURN_DASK__SCHEDULER)")
    from distributed import Client, LocalCluster

    if address == "local":
        cluster = LocalCluster(
            n_workers=settings.dask.local_workers,
            threads_per_worker=settings.dask.threads_per_worker,
            processes=True,
            scheduler_port=settings.dask.local_scheduler_port,
            dashboard_address=None,
        )
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = Client(address, timeout=settings.dask.connect_timeout_seconds)
    except OSError as exc:  # distributed raises OSError (TimeoutError) when the scheduler does not answer
        raise StoreUnavailableError(f"Dask scheduler {address!r} did not answer: {exc}") from exc
    with client:
        yield client
