"""Chunked batch scoring gives the same scores as the one-frame batch path."""

from __future__ import annotations

import pandas as pd

from serving.bulk_scoring import score_all
from serving.scoring import Scorer


def test_chunked_scores_equal_batch_scores(engine, tmp_path):
    settings = engine.settings
    result = score_all(settings, Scorer.load(settings), chunk_rows=400, path=tmp_path / "scores.parquet")
    chunked = pd.read_parquet(result.path).set_index("customer_id").sort_index()
    batch = pd.read_parquet(engine.interventions.scores_path).set_index("customer_id").sort_index()

    assert result.chunks > 1 and result.rows == len(batch)
    assert chunked.index.equals(batch.index)
    pd.testing.assert_series_equal(chunked["churn_probability"], batch["churn_probability"], check_exact=False, rtol=1e-12)
    pd.testing.assert_series_equal(chunked["clv"], batch["clv"], check_exact=False, rtol=1e-12)
    assert (chunked["segment"] == batch["segment"]).all() and (chunked["risk_band"] == batch["risk_band"]).all()
