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


def test_chunked_scoring_reports_the_customers_scored_after_each_chunk(engine, tmp_path):
    settings = engine.settings
    reports = []
    result = score_all(
        settings, Scorer.load(settings), chunk_rows=400, path=tmp_path / "scores.parquet", progress=lambda *r: reports.append(r)
    )
    done = [d for d, _ in reports]
    assert len(reports) == result.chunks > 1
    assert done == sorted(set(done)) and done[-1] == result.rows
    assert {t for _, t in reports} == {result.rows}  # the total is the active customers, known before scoring


def test_arrow_scoring_equals_scorer_and_keeps_its_errors(engine):
    """`score_arrow` (no pandas) gives `Scorer.score`'s frame, an unseen category included; data it would refuse still raises the same error."""
    import pyarrow as pa
    import pytest

    from churn.errors import DataError
    from features.pit import active_arrow_batches
    from features.store import active_customers
    from serving.bulk_scoring import score_arrow

    settings = engine.settings
    scorer = Scorer.load(settings)
    customers = active_customers(settings, engine.as_of)["customer_id"]
    batch = next(active_arrow_batches(settings.feature_tables_dir, engine.as_of, 300, customers=customers))
    fast = score_arrow(scorer, batch).to_pandas()
    slow = scorer.score(batch.to_pandas())
    pd.testing.assert_frame_equal(fast, slow)

    def with_column(name, values):
        i = batch.schema.get_field_index(name)
        return batch.set_column(i, name, pa.array(values, batch.schema.field(name).type))

    # a plan never seen in training is scored as the rare ones are (the "other" code), alike on both paths
    plans = batch.column("plan").to_pylist()
    unseen = with_column("plan", ["platinum"] + plans[1:])
    pd.testing.assert_frame_equal(score_arrow(scorer, unseen).to_pandas(), scorer.score(unseen.to_pandas()))
    # a feature every training row had (the model's `required`): missing, it is refused, not guessed
    required = scorer.required_features[-1]
    values = batch.column(required).to_pylist()
    with pytest.raises(DataError, match=required):
        score_arrow(scorer, with_column(required, [None] + values[1:]))
