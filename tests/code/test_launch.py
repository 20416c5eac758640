"""How the service is started: its environment, and what its module imports before a worker starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
