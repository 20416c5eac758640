"""Qini and uplift@k behave as defined."""

from __future__ import annotations

import numpy as np
import pytest

from serving.measure import qini, uplift_at_k


def _experiment(n: int = 30_000, seed: int = 0):
    """Two actions; 'call' works on a third of the customers only, 'mail' a little on everyone."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2.0, 5.0, n)
    responsive = rng.random(n) < 1 / 3
    action = rng.choice(["call", "mail"], n)
    treated = rng.random(n) < 0.5
    true = np.where(action == "call", np.where(responsive, 0.6, 0.0), 0.15)
    churned = rng.random(n) < p * (1 - treated * true)
    return p, treated, churned, true


def test_qini_ranks_a_good_model_above_a_random_one():
    p, treated, churned, true = _experiment()
    good = p * true
    noise = np.random.default_rng(1).random(len(good))
    assert qini(good, treated, churned)[0] > 0
    assert qini(good, treated, churned)[0] > qini(noise, treated, churned)[0] + 0.001
    assert uplift_at_k(good, treated, churned, k=0.2) > uplift_at_k(noise, treated, churned, k=0.2)


def test_qini_curve_by_hand():
    # ranked: (treated, churned) = (T,0), (C,1), (T,1), (C,0)
    uplift = np.array([4, 3, 2, 1])
    treated = np.array([True, False, True, False])
    churned = np.array([False, True, True, False])
    coefficient, curve = qini(uplift, treated, churned)
    # Q(k) = Yc(k) * Nt(k) / Nc(k) - Yt(k): k=1: 0 (no control yet), k=2: 1*1/1-0 = 1, k=3: 1*2/1-1 = 1, k=4: 1*2/2-1 = 0
    assert curve.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert coefficient == pytest.approx(0.5)
