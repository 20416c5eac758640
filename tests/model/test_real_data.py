"""The acceptance bar on public data (slow): the engine at least as good as the usual baselines.

Baselines: logistic regression (one-hot or RFM), LightGBM defaults, a small hand-tuned
LightGBM and scikit-learn's HistGradientBoosting, on the same splits (issue 17).

Runs `benchmarks/real_data.py`'s path (config -> ingest -> features -> Feast -> evaluation)
on the data sets in ../shared/datasets; skips when they are absent.
"""

from __future__ import annotations

import importlib.util

import pytest

from training.backtest import summarize

from tests.prerequisites import DATASETS, ROOT, require

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _datasets():
    require(DATASETS.exists(), f"public data sets not found at {DATASETS} (../shared/datasets, or set CHURN_DATASETS)")


def _benchmark():
    spec = importlib.util.spec_from_file_location("real_data", ROOT / "benchmarks" / "real_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["telco", "online_retail", "cdnow"])
def test_engine_is_not_below_any_baseline(name, tmp_path):
    bench = _benchmark()
    # one model seed, the config's (the benchmark's default runs 3); every model fitted as churn train fits
    results, _ = bench.run(ROOT / "examples" / bench.CONFIGS[name], DATASETS, tmp_path, jobs=None, seeds=[0])
    auc = {model: summarize(per_split)["roc_auc"][0] for model, per_split in results.items()}
    engine, *baselines = auc
    if name == "telco":
        assert auc[engine] >= 0.850, auc
        assert all(auc[engine] >= auc[b] for b in baselines), auc
    else:
        assert all(auc[engine] > auc[b] for b in baselines), auc
