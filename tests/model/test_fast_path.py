"""The service's request path (online read + raw boosters, no pandas) agrees with the batch Scorer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.store import feature_store, online_features
from serving.online import FastScorer, OnlineReader
from serving.scoring import Scorer


def test_fast_path_scores_and_reasons_equal_the_scorer(engine):
    settings = engine.settings
    scorer = Scorer.load(settings)
    ids = pd.read_parquet(engine.interventions.scores_path)["customer_id"].head(40).tolist()

    rows = OnlineReader(feature_store(settings), scorer.feature_services).read(ids)
    fast = FastScorer(scorer).score(rows.take(rows.complete), explain=True)

    frame = online_features(feature_store(settings), ids, scorer.feature_services)
    frame = frame[frame["customer_id"].astype(str).isin(fast.customer_ids)].reset_index(drop=True)  # fast: text ids
    slow = scorer.score(frame)
    assert len(fast.customer_ids) == len(slow) > 30
    np.testing.assert_array_equal(fast.customer_ids, slow["customer_id"].astype(str).to_numpy())
    # calibrated, as the batch path is: the same numbers, not merely the same order
    np.testing.assert_allclose(fast.churn_probability, slow["churn_probability"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(fast.clv, slow["clv"].to_numpy(), rtol=1e-9)
    assert list(fast.segment) == slow["segment"].astype(str).tolist()
    assert list(fast.risk_band) == slow["risk_band"].astype(str).tolist()
    assert fast.reasons == scorer.reasons(frame)
    assert any(fast.reasons)


def test_a_category_unseen_in_training_is_scored_alike_on_both_paths(engine):
    """A value no training row had (a plan launched after the model) is the "other" category on the fast path too."""
    settings = engine.settings
    scorer = Scorer.load(settings)
    ids = pd.read_parquet(engine.interventions.scores_path)["customer_id"].head(20).tolist()
    rows = OnlineReader(feature_store(settings), scorer.feature_services).read(ids)
    rows = rows.take(rows.complete)
    name = next(iter(scorer.churn.categories))
    rows.columns[name] = np.array(["launched-after-training"] * len(rows.customer_ids), dtype=object)
    fast = FastScorer(scorer).score(rows)

    frame = online_features(feature_store(settings), ids, scorer.feature_services)
    frame = frame[frame["customer_id"].astype(str).isin(fast.customer_ids)].reset_index(drop=True)
    frame[name] = "launched-after-training"
    np.testing.assert_allclose(fast.churn_probability, scorer.score(frame)["churn_probability"].to_numpy(), rtol=1e-9)
