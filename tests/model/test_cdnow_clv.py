"""CLV forecast on real data (CDNOW): the engine's estimator must beat both naive baselines."""

from __future__ import annotations

import pytest

from benchmarks.cdnow_clv import compare

from tests.prerequisites import DATASETS, require



@pytest.mark.slow
def test_engine_beats_the_baselines_on_cdnow():
    require((DATASETS / "cdnow" / "CDNOW_sample.txt").exists(), f"CDNOW sample not found under {DATASETS} (or set CHURN_DATASETS)")
    table = compare(DATASETS).set_index("method")
    engine, rate, population = table["mae"].to_numpy()
    assert table.attrs["customers"] == 2_357
    assert engine < 0.8 * min(rate, population)
    # the holdout total is within 25% (the baselines carry the first purchases forward and miss by > 100%)
    first = table.iloc[0]
    assert abs(first["predicted_total"] / first["actual_total"] - 1) < 0.25
