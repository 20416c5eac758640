"""How the service process is started: its command line and environment, in one place.

`churn serve`, the serving benchmark and the service tests all start the service this way,
so that what is measured and tested is what users run.

Why `PYTHONOPTIMIZE=1`: Feast decorates its classes with typeguard's `@typechecked`, which
rewrites and recompiles their source at import time; that is most of the service's start-up
(about 12 of 15 s to import Feast on a busy 2-core machine, 4 s with it off). Typeguard turns
itself off when Python runs optimized (its documented production switch), and the engine's
own code never relies on `assert`. Optimized bytecode is cached in `.opt-1.pyc` files:
`make install` compiles them once (`python -O -m compileall`), because a machine with
`PYTHONDONTWRITEBYTECODE` set would otherwise compile every module from source at every start.

Why the champions are fetched in a helper process (`champions_fetched_aside`): MLflow's import
and the set-up of its SQL store are about a third of a worker's start-up, and a worker's
start-up is all imports and loading, one core busy. A spawned helper fetches the models from
the registry while the worker imports Feast, LightGBM and pandas, so a 2-core machine does
both at once. The helper imports only this module and `training/registry.py`.

Why `OTEL_SDK_DISABLED=true` (unless `serving.tracing` is on): BentoML samples traces at rate 0
by default but still *records* a server span and a span per ASGI send for every request, and
that bookkeeping cost more than scoring the customer (a profile of a loaded worker: about a
quarter of its busy time in OpenTelemetry, under a tenth in `ChurnService.score`). With the
SDK disabled OpenTelemetry hands out non-recording spans. Turn `serving.tracing` on, and
configure BentoML's `tracing` exporter, to export traces.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from churn.processes import die_with_parent
from churn.settings import Settings

if TYPE_CHECKING:
    from training.registered import FetchedModel

SERVICE = "serving.service:ChurnService"
# signals on which `churn serve` stops the server (with SIGTERM: the server reads SIGHUP as "reload")
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# how long the server may take to stop after a forwarded signal before its process group is killed:
# circus gives each worker 30 s to finish its requests, and the workers stop one after another
STOP_WITHIN_SECONDS = 60


def serve_command(host: str, port: int) -> list[str]:
    """`bentoml serve` of the service, with this interpreter."""
    return [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]


def serve_env(settings: Settings, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment the service needs to run on `settings`: its stores, models and optimized Python.

    `base` defaults to this process's environment; `extra` adds or overrides variables
    (for instance `CHURN_SERVING__API_KEYS`).
    """
    env = {
        **(os.environ if base is None else base),
        "PYTHONOPTIMIZE": "1",
        "CHURN_DATA_DIR": str(settings.data_dir.resolve()),
        "CHURN_MLRUNS_DIR": str(settings.mlruns_dir.resolve()),
        "CHURN_ONLINE_STORE": settings.online_store,
        "CHURN_REDIS_URL": settings.redis_url,
    }
    if settings.ledger_url:
        env["CHURN_LEDGER_URL"] = settings.ledger_url
    if settings.now is not None:  # a pinned clock holds in the service too
        env["CHURN_NOW"] = settings.now.isoformat()
    if not settings.serving.tracing:
        env.setdefault("OTEL_SDK_DISABLED", "true")
    env.update(extra)
    return env


def serve_until_stopped(command: list[str], env: Mapping[str, str], stop_within: float = STOP_WITHIN_SECONDS) -> int:
    """Run the server in the foreground until it exits; returns its exit code.

    SIGTERM, SIGINT (Ctrl-C) and SIGHUP to this process are passed on to the server as SIGTERM,
    on which it stops its workers and exits; this process then exits with it. The server runs in its own
    process group: when it has not stopped within `stop_within` seconds of a forwarded signal,
    or once it has exited, whatever is left of the group (a stuck worker) is killed, so that
    nothing keeps the port. If this process itself is killed (SIGKILL), the kernel sends the
    server SIGTERM (Linux's parent-death signal).
    """
    proc = subprocess.Popen(command, env=dict(env), start_new_session=True, preexec_fn=die_with_parent)
    stop_asked_at: float | None = None

    def forward(_signum: int, _frame: object) -> None:
        nonlocal stop_asked_at
        stop_asked_at = stop_asked_at or time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop_asked_at is not None and time.monotonic() - stop_asked_at > stop_within:
                    _kill_group(proc.pid)
    finally:
        _kill_group(proc.pid)  # a worker that outlived the server would keep the port
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is gone: nothing left to stop


@contextmanager
def running(
    command: list[str],
    env: Mapping[str, str],
    probe_url: str,
    log: Path,
    headers: Mapping[str, str] | None = None,
    within: float = 120,
    cwd: Path | None = None,
) -> Iterator[float]:
    """A server process, output to `log`; yields the seconds from launch until `probe_url` answered 200.

    Raises `RuntimeError` with the end of the log if the process exits or does not answer
    within `within` seconds; the process is stopped when the block ends.
    """
    began = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    probe = urllib.request.Request(probe_url, headers=dict(headers or {}))
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{command[:4]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(probe, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet, or not ready (a 503 is an HTTPError, a URLError)
            if time.perf_counter() - began > within:
                raise RuntimeError(f"{command[:4]} not ready after {within:g} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield time.perf_counter() - began
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def fetch_scoring_models(settings: Settings) -> list[FetchedModel]:
    """The champions a scorer needs, from the registry (run in the helper process)."""
    from training.registry import fetch_scoring_champions

    return fetch_scoring_champions(settings)


@contextmanager
def champions_fetched_aside(settings: Settings) -> Iterator[Callable[[], list[FetchedModel]]]:
    """Fetch the champions in a helper process while the body runs; yields a call that waits for them.

    An error of the fetch (no champion, registry unreachable) is raised by that call.
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as helper:
        fetching = helper.submit(fetch_scoring_models, settings)
        yield fetching.result
