"""How the service is started and stopped: its environment, what its module imports before a worker starts,
and `serve_until_stopped` on a stand-in server (the real one: tests/e2e/test_serve_process.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from churn.settings import load_settings
from serving.launch import serve_command, serve_env

ROOT = Path(__file__).resolve().parents[2]


def test_serve_env_runs_optimized_without_recording_spans(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", mlruns_dir=tmp_path / "mlruns", online_store="redis")
    env = serve_env(settings, base={"PATH": "/usr/bin"})
    assert env["PYTHONOPTIMIZE"] == "1"
    assert env["OTEL_SDK_DISABLED"] == "true"
    assert env["CHURN_ONLINE_STORE"] == "redis"
    assert env["CHURN_DATA_DIR"] == str((tmp_path / "data").resolve())
    assert env["PATH"] == "/usr/bin"
    assert "CHURN_LEDGER_URL" not in env


def test_serve_env_keeps_spans_when_tracing_is_on_and_extras_win(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", serving={"tracing": True}, ledger_url="postgresql://x/y")
    env = serve_env(settings, base={}, CHURN_SERVING__API_KEYS='["k"]', PYTHONOPTIMIZE="0")
    assert "OTEL_SDK_DISABLED" not in env
    assert env["CHURN_LEDGER_URL"] == "postgresql://x/y"
    assert env["CHURN_SERVING__API_KEYS"] == '["k"]'
    assert env["PYTHONOPTIMIZE"] == "0"


def test_serve_command_is_bentoml_serve_of_the_service():
    command = serve_command("127.0.0.1", 3123)
    assert command[:4] == [sys.executable, "-m", "bentoml", "serve"]
    assert command[4] == "serving.service:ChurnService"
    assert command[-4:] == ["--host", "127.0.0.1", "--port", "3123"]


def test_service_module_imports_only_its_schema():
    """`bentoml serve` imports the module before starting a worker: no Feast, MLflow or LightGBM then."""
    heavy = ["feast", "mlflow", "lightgbm", "pandas", "sklearn"]
    probe = f"import sys, serving.service; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# A stand-in for `bentoml serve`: a server process with a worker under it, stopping both on SIGTERM
# (or, stuck, ignoring it). It prints the worker's pid.
_SERVER = """
import signal, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(worker.pid, flush=True)
def stop(*_):
    worker.terminate(); worker.wait(); sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[1] == "stuck" else stop)
while True:
    time.sleep(0.05)
"""
_LAUNCHER = """
import os, sys
from serving.launch import serve_until_stopped
sys.exit(serve_until_stopped([sys.executable, "-c", sys.argv[1], sys.argv[2]], os.environ, stop_within=2))
"""


def _launched(server_mode: str) -> tuple[subprocess.Popen, psutil.Process]:
    launcher = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, _SERVER, server_mode], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    worker = psutil.Process(int(launcher.stdout.readline()))
    time.sleep(0.3)  # the launcher's handlers are set once its child runs
    return launcher, worker


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_serve_until_stopped_stops_the_server_and_its_worker_on_each_signal(signum):
    launcher, worker = _launched("obedient")
    launcher.send_signal(signum)
    assert launcher.wait(timeout=20) == 0  # the server's own exit code
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE


def test_serve_until_stopped_kills_a_server_that_does_not_stop():
    launcher, worker = _launched("stuck")
    began = time.monotonic()
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=20) != 0
    assert 2 <= time.monotonic() - began < 10  # after stop_within, not before
    psutil.wait_procs([worker], timeout=5)
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
