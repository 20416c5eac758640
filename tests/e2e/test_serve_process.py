"""`churn serve` as an operator stops it: a real `churn serve` process, signalled as systemd or a shell would."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.servers import AUTH, ROOT, free_port, service_env

CHURN = str(Path(sys.executable).with_name("churn"))


def _start(env: dict[str, str], port: int, log: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """`churn serve` on `port`, once its service is ready; with every process under it (server, workers)."""
    with log.open("w") as out:
        proc = subprocess.Popen([CHURN, "serve", "--port", str(port)], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"churn serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", headers=AUTH, timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"churn serve not ready after 120 s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    return proc, psutil.Process(proc.pid).children(recursive=True)


def _stop(proc: subprocess.Popen, under: list[psutil.Process], signum: int) -> int:
    """Send `signum` to `churn serve` only; returns its exit code, asserting that every process under it is gone."""
    proc.send_signal(signum)
    try:
        code = proc.wait(timeout=60)
    finally:
        _, alive = psutil.wait_procs(under, timeout=30)
        for orphan in alive:  # the test fails below; do not leave the orphan running
            orphan.kill()
    assert alive == [], f"left running after {signal.Signals(signum).name} to churn serve: {alive}"
    return code


def test_a_signal_to_churn_serve_stops_the_server_and_frees_the_port(engine, tmp_path):
    env = service_env(engine.settings, tmp_path / "bentoml_home")
    port = free_port()
    proc, under = _start(env, port, tmp_path / "first.log")
    assert len(under) >= 2  # the server and at least one worker: what must not outlive it
    try:
        assert _stop(proc, under, signal.SIGTERM) == 0
    finally:
        proc.kill()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)

    # the same port again, at once: nothing of the first server holds it
    proc, under = _start(env, port, tmp_path / "second.log")
    try:
        assert _stop(proc, under, signal.SIGINT) == 0  # Ctrl-C, sent to churn serve alone
    finally:
        proc.kill()


def test_a_killed_churn_serve_takes_the_server_with_it(engine, tmp_path):
    """SIGKILL cannot be forwarded: the kernel's parent-death signal stops the server instead."""
    proc, under = _start(service_env(engine.settings, tmp_path / "bentoml_home"), free_port(), tmp_path / "serve.log")
    assert _stop(proc, under, signal.SIGKILL) == -signal.SIGKILL
