"""Load and fuzz against a real `bentoml serve`: bounded in time, loopback only.

Marked `slow` and `load` (together about 2.5 minutes): `make test-load` runs them, and so
does `.ci/run`, after the default suite.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import httpx
import pandas as pd
import pytest

from benchmarks.load import run_load

from tests.e2e.servers import AUTH, API_KEY, bentoml_service, service_env

pytestmark = [pytest.mark.slow, pytest.mark.load]

LOAD_SECONDS = 60
LOAD_CONCURRENCY = 16
FUZZ_SECONDS = 60


@pytest.fixture(scope="module")
def api(engine, tmp_path_factory):
    env = service_env(engine.settings, tmp_path_factory.mktemp("bentoml_home"))
    known = pd.read_parquet(engine.interventions.scores_path)["customer_id"].tolist()
    with bentoml_service(env, tmp_path_factory.mktemp("load") / "serve.log") as base:
        yield base, known


def test_load_concurrency_16_for_60s_without_errors(api):
    base, known = api
    rng = random.Random(3)

    def body(_: int) -> dict:
        return {"customer_ids": rng.sample(known, rng.choice([1, 1, 1, 10, 100]))}

    result = run_load(f"{base}/score", body, LOAD_CONCURRENCY, LOAD_SECONDS, headers=AUTH)
    print(
        f"load: {result.requests} requests in {result.elapsed:.0f} s at concurrency {LOAD_CONCURRENCY}, "
        f"p50 {result.percentile_ms(50):.1f} ms, p99 {result.percentile_ms(99):.1f} ms, {result.throughput:.0f} req/s"
    )
    assert result.requests > LOAD_SECONDS  # it did carry load
    assert result.failures == []
    assert result.statuses == {200: result.requests}


def test_schemathesis_finds_no_server_error(api, tmp_path):
    base, _ = api
    spec = httpx.get(f"{base}/docs.json", headers=AUTH, timeout=30)
    assert spec.status_code == 200
    spec_path = tmp_path / "openapi.json"
    spec_path.write_text(json.dumps(spec.json()))
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", str(spec_path), "--url", base,
        "--header", f"Authorization: Bearer {API_KEY}", "--checks", "not_a_server_error",
        "--max-time", str(FUZZ_SECONDS), "--workers", "2", "--request-timeout", "30",
        "--generation-deterministic", "--no-color",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=FUZZ_SECONDS * 4, cwd=tmp_path)
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert API_KEY not in report.replace(f"Bearer {API_KEY}", "")  # no key echoed in any response
    assert run.returncode == 0, report
