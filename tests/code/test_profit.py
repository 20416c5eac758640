"""EMPC against values worked out by hand from the paper's formula (Verbraken et al. 2013).

Notation of the paper: CLV = 200, d = 10, f = 1, so delta = d / CLV = 0.05, phi = f / CLV = 0.005,
gamma ~ Beta(6, 14). A contacted churner is worth gamma * (CLV - d) - f, a contacted
non-churner costs d + f. For each case the envelope of the best campaign is derived below by
hand; the integrals of a line against the Beta density use
    int_l^u gamma h(gamma) dgamma = 6/20 * (I_u(7, 14) - I_l(7, 14)),  int_l^u h = I_u(6, 14) - I_l(6, 14),
with I the regularized incomplete beta function.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import beta

from training.profit import empc

A, B = 6.0, 14.0


def line(slope: float, intercept: float, low: float, high: float) -> float:
    """int_low^high (slope * gamma - intercept) h(gamma) dgamma, h the Beta(6, 14) density."""
    first = A / (A + B) * (beta.cdf(high, A + 1, B) - beta.cdf(low, A + 1, B))
    return slope * first - intercept * (beta.cdf(high, A, B) - beta.cdf(low, A, B))


def mass(low: float, high: float) -> float:
    return beta.cdf(high, A, B) - beta.cdf(low, A, B)


def test_perfect_classifier():
    # pi0 = 0.5. Contact both churners: per customer CLV * (gamma (1 - delta) - phi) * pi0 = 95 gamma - 0.5,
    # worth it once gamma > phi / (1 - delta) = 1/190; contacting the stayers too only adds cost.
    # EMPC = 95 * 0.3 - 0.5 = 28.0 up to I_{1/190}(6, 14) ~ 1e-9.
    result = empc(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1]))
    assert result.empc == pytest.approx(28.0, abs=1e-6)
    assert result.contact_share == pytest.approx(0.5, abs=1e-6)


def test_uninformative_scores_contact_all_or_nobody():
    # one churner among four, all tied: contact everybody or nobody.
    # Everybody: (190 gamma - 1 - 3 * 11) / 4 = 47.5 gamma - 8.5, positive once gamma > 34/190.
    result = empc(np.array([1, 0, 0, 0]), np.full(4, 0.3))
    expected = line(47.5, 8.5, 34 / 190, 1.0)
    assert expected == pytest.approx(47.5 * 0.3 * (1 - beta.cdf(34 / 190, 7, 14)) - 8.5 * (1 - beta.cdf(34 / 190, 6, 14)))
    assert result.empc == pytest.approx(expected, rel=1e-9)
    assert result.contact_share == pytest.approx(mass(34 / 190, 1.0), rel=1e-9)


def test_two_segments_of_the_convex_hull():
    # scores 0.9 (churner), 0.8 (stayer), 0.3 (churner), 0.1 (stayer). Totals of contacting the top k:
    # k=1: 190 g - 1; k=2: 190 g - 12 (never best); k=3: 380 g - 13; k=4: 380 g - 24 (never best).
    # Best: nobody below g = 1/190, the top one up to 190 g - 1 = 380 g - 13, i.e. g = 12/190, then the top three.
    result = empc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1]))
    expected = (line(190, 1, 1 / 190, 12 / 190) + line(380, 13, 12 / 190, 1.0)) / 4
    share = (1 * mass(1 / 190, 12 / 190) + 3 * mass(12 / 190, 1.0)) / 4
    assert result.empc == pytest.approx(expected, rel=1e-9)
    assert result.contact_share == pytest.approx(share, rel=1e-9)


def test_each_customers_clv_replaces_the_constant():
    # churner worth 100, stayer worth 50 (a stayer's CLV plays no part): contact the churner, 90 g - 1,
    # once g > 1/90; adding the stayer costs 11 more.
    result = empc(np.array([1, 0]), np.array([0.9, 0.1]), clv=np.array([100.0, 50.0]))
    assert result.empc == pytest.approx(line(90, 1, 1 / 90, 1.0) / 2, rel=1e-9)
    assert result.contact_share == pytest.approx(mass(1 / 90, 1.0) / 2, rel=1e-9)


def test_matches_numerical_integration_of_the_best_campaign():
    """On random data: EMPC = E_gamma[max_k profit of the top k] by quadrature over gamma."""
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.15).astype(float)
    score = np.round(0.4 * y + rng.random(300), 2)  # ties on purpose
    clv = rng.gamma(2.0, 100.0, 300)
    order = np.argsort(-score, kind="stable")
    cuts = np.r_[score[order][1:] != score[order][:-1], True]

    def best(g: float) -> float:
        profit = np.cumsum(y[order] * (g * (clv[order] - 10) - 1) - (1 - y[order]) * 11)
        return max(0.0, profit[cuts].max()) / len(y)

    expected, _ = integrate.quad(lambda g: best(g) * beta.pdf(g, A, B), 0, 1, limit=500)
    assert empc(y, score, clv).empc == pytest.approx(expected, rel=1e-6)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="only 0 .stays. and 1 .churns."):
        empc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="one length"):
        empc(np.array([0, 1]), np.array([0.1]))
    with pytest.raises(ValueError, match="NaN"):
        empc(np.array([0, 1]), np.array([0.1, np.nan]))
