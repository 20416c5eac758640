"""The policy benchmark runs end to end at a small size and writes the figures issue 15 checks by script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRATEGIES = ("oracle", "random", "highest_risk", "risk_x_clv", "priors", "learned")


@pytest.mark.slow
def test_policy_benchmark_writes_every_strategy_and_no_one_beats_the_oracle(tmp_path):
    out = tmp_path / "policy.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/policy.py", "--workdir", str(tmp_path / "work"), "--customers", "3000",
         "--seeds", "0", "--rounds", "2", "--scenarios", "priors-wrong,lost-causes", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["rounds"] == 2 and figures["customers"] == 3000
    assert set(figures["scenarios"]) == {"priors-wrong", "lost-causes"}
    for scenario, row in figures["scenarios"].items():
        for name in STRATEGIES:
            assert set(row[name]) == {"mean", "sd"}, (scenario, name)
            # every strategy spends at most what the priors policy spent at the catalog's budget
            assert row["spend"][name] <= row["budget"] + 1e-6, (scenario, name, row["spend"])
            assert row[name]["mean"] <= row["oracle"]["mean"] + 1e-6, (scenario, name)
        assert len(row["learned_by_round"]) == 2
        assert row["coverage"]["covered"] <= row["coverage"]["cells"]
    assert "issue 15 acceptance" in done.stdout
