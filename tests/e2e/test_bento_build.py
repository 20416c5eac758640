"""`bentoml build` packs the service from bentofile.yaml: the code and catalog, no data, tests or models."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from tests.e2e.servers import ROOT


def test_bentoml_build_produces_a_bento(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", str(ROOT)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (bento,) = [p for p in (tmp_path / "bentos" / "churn_engine").iterdir() if p.name != "latest"]
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert manifest["service"] == "serving.service:ChurnService"
    src = bento / "src"
    packed = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    assert {"serving/service.py", "serving/online.py", "serving/actions.yaml", "churn/settings.py"} <= packed
    assert not [p for p in packed if p.startswith(("tests/", "data/", "mlruns/"))]
