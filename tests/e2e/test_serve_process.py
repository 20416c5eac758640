"""The service's processes as an operator runs them: `churn serve` stopped by a signal as systemd or a shell
would send it, and `churn serve` and `bentoml serve` started with a malformed API key list."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from churn.settings import load_settings
from serving.launch import serve_command

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
    """SIGTERM is passed on; SIGKILL cannot be, and the kernel's parent-death signal stops the server instead.

    (SIGINT and SIGHUP take SIGTERM's path: tests/code/test_launch.py, on a stand-in server.)
    """
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
        assert _stop(proc, under, signal.SIGKILL) == -signal.SIGKILL
    finally:
        proc.kill()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


MALFORMED_KEYS = '["e2e-secret-key-7a6b5c4d3e2f",'  # a JSON list that does not end
ONE_LINE_ERROR = "invalid settings: CHURN_SERVING__API_KEYS is not valid JSON (Expecting"


def _bad_key_env(tmp_path: Path) -> dict[str, str]:
    settings = load_settings(data_dir=tmp_path / "data", mlruns_dir=tmp_path / "mlruns")
    env = {**service_env(settings, tmp_path / "bentoml_home", COLUMNS="500"), "CHURN_SERVING__API_KEYS": MALFORMED_KEYS}
    return {name: value for name, value in env.items() if name != "CHURN_CONFIG"}


def test_churn_serve_with_a_malformed_key_list_says_so_in_one_line(tmp_path):
    run = subprocess.run(
        [CHURN, "serve", "--port", str(free_port())], env=_bad_key_env(tmp_path), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    out = (run.stdout + run.stderr).strip()
    assert run.returncode == 1
    assert out.splitlines() == [out] and out.startswith(f"error: {ONE_LINE_ERROR}"), out
    assert "e2e-secret-key" not in out


def test_the_service_with_a_malformed_key_list_does_not_start_and_says_so_in_one_line(tmp_path):
    """`bentoml serve` itself (a Bento, a container): each worker start logs one line and exits; nothing answers."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            serve_command("127.0.0.1", port), env=_bad_key_env(tmp_path), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while ONE_LINE_ERROR not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        with pytest.raises(httpx.TransportError):  # no worker: nothing answers, not even /healthz
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "[ERROR]" in next(line for line in text.splitlines() if ONE_LINE_ERROR in line)
    assert "Traceback" not in text and "e2e-secret-key" not in text
