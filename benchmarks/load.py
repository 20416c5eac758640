"""A small closed-loop load generator: N concurrent clients, each sending its next request when
the last one answered, for a fixed time, over keep-alive connections on loopback.

Used by `benchmarks/serving.py` and the load test. One asyncio loop with aiohttp keeps the
client's own cost per request low (well under the server's), so that on a 2-core machine the
figures are the server's, not the client's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np


@dataclass
class LoadResult:
    """Latencies (seconds) of the answered requests, plus what went wrong."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def errors(self) -> int:
        """Answers other than 200, and requests that got no answer."""
        return sum(n for status, n in self.statuses.items() if status != 200) + len(self.failures)

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3) if self.latencies else float("nan")


async def _run(
    url: str, make_body: Callable[[int], dict], concurrency: int, seconds: float, headers: dict[str, str]
) -> LoadResult:
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        deadline = time.perf_counter() + seconds

        async def client(worker: int) -> None:
            n = 0
            while time.perf_counter() < deadline:
                body = make_body(worker * 1_000_003 + n)
                n += 1
                start = time.perf_counter()
                try:
                    async with session.post(url, json=body) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    result.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                result.latencies.append(time.perf_counter() - start)
                result.statuses[status] = result.statuses.get(status, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(client(w) for w in range(concurrency)))
        result.elapsed = time.perf_counter() - began
    return result


def run_load(
    url: str,
    make_body: Callable[[int], dict],
    concurrency: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    warmup_seconds: float = 1.0,
) -> LoadResult:
    """POST `make_body(i)` to `url` from `concurrency` clients for `seconds`, after a warm-up."""
    if warmup_seconds:
        asyncio.run(_run(url, make_body, concurrency, warmup_seconds, headers or {}))
    return asyncio.run(_run(url, make_body, concurrency, seconds, headers or {}))
