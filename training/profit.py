"""Expected campaign profit of a churn model: EMPC and the best share of customers to contact.

EMPC is the expected maximum profit measure for customer churn of Verbraken, Verbeke &
Baesens (2013, IEEE TKDE 25(5), "A novel profit maximizing metric for measuring
classification performance of customer churn prediction models"). A retention campaign
contacts the customers with the highest scores. Contacting one costs f; a would-be churner
accepts the offer (cost d) with probability gamma and stays, worth CLV; a customer who was
not going to leave takes the offer anyway (the paper's assumption). Per contacted customer:

- churner:     gamma * (CLV - d) - f
- non-churner: -(d + f)

For a known gamma the best campaign contacts the top k customers with the k that maximizes
the total; gamma is unknown, gamma ~ Beta(alpha, beta), and EMPC is the expected value of that
maximum per customer of the population (paper eq. 13-14). With a constant CLV this is exactly
the paper's measure; with each customer's predicted CLV in its place the same integral gives
the value-weighted version.

Every cut-off k gives a profit linear in gamma, P_k(gamma) = A_k * gamma - B_k, so the best
profit is their upper envelope, a convex piecewise-linear function. On each piece the
integral against the Beta density is closed form (`_integrate_line`), so EMPC is exact,
with no sampling of gamma.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta as beta_dist


@dataclass(frozen=True)
class ProfitResult:
    """EMPC and the share of the population a profit-maximizing campaign contacts.

    `empc` is the expected maximum profit per customer of the population (same unit as CLV);
    `contact_share` is the expected share contacted at that maximum (paper: eta_empc).
    """

    empc: float
    contact_share: float


def _cutoff_lines(
    y_true: np.ndarray, score: np.ndarray, clv: np.ndarray, offer_cost: float, contact_cost: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slope A_k, intercept B_k and contact count k of the profit line of each cut-off.

    Customers are taken in decreasing score; tied scores are contacted together (a threshold
    on the score cannot split them). The first line (k = 0) is 'contact nobody'.
    """
    order = np.argsort(-score, kind="stable")
    y, s, v = y_true[order], score[order], clv[order]
    gain = np.cumsum(y * (v - offer_cost))  # A_k: value kept per unit of acceptance rate
    cost = np.cumsum(y * contact_cost + (1 - y) * (offer_cost + contact_cost))  # B_k
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    count = np.flatnonzero(last_of_tie) + 1
    return np.r_[0.0, gain[last_of_tie]], np.r_[0.0, cost[last_of_tie]], np.r_[0, count]


def _upper_envelope(slope: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Indices of the lines on max_k (slope_k * g - intercept_k), ordered by increasing g.

    The lines on the envelope are the vertices of the upper convex hull of the points
    (slope, -intercept) (monotone chain).
    """
    order = np.lexsort((intercept, slope))  # by slope; among equal slopes the best (smallest cost) first
    hull: list[int] = []
    for i in order:
        if hull and slope[hull[-1]] == slope[i]:
            continue  # same slope, larger intercept: never better
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is not on the envelope if the line through a and i passes above it
            cross = (slope[b] - slope[a]) * (-intercept[i] + intercept[a]) - (-intercept[b] + intercept[a]) * (
                slope[i] - slope[a]
            )
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(int(i))
    return np.array(hull)


def _integrate_line(
    slope: float, intercept: float, low: float, high: float, alpha: float, beta: float
) -> float:
    """Integral of (slope * g - intercept) * Beta(g; alpha, beta) over [low, high].

    Uses g * Beta(g; a, b) = a / (a + b) * Beta(g; a + 1, b).
    """
    mean = alpha / (alpha + beta)
    first = mean * (beta_dist.cdf(high, alpha + 1, beta) - beta_dist.cdf(low, alpha + 1, beta))
    zeroth = beta_dist.cdf(high, alpha, beta) - beta_dist.cdf(low, alpha, beta)
    return slope * first - intercept * zeroth


def empc(
    y_true: np.ndarray,
    score: np.ndarray,
    clv: float | np.ndarray = 200.0,
    offer_cost: float = 10.0,
    contact_cost: float = 1.0,
    alpha: float = 6.0,
    beta: float = 14.0,
) -> ProfitResult:
    """EMPC (Verbraken et al. 2013) of churn scores; defaults are the paper's parameters.

    - y_true: 1 for a churner, 0 otherwise
    - score: higher means likelier to churn (probabilities or any ranking score)
    - clv: one lifetime value for everybody (the paper) or one per customer
    """
    y_true = np.asarray(y_true, dtype=float)
    score = np.asarray(score, dtype=float)
    values = np.broadcast_to(np.asarray(clv, dtype=float), y_true.shape)
    if y_true.shape != score.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"y_true and score must be non-empty 1-d arrays of one length; got {y_true.shape} and {score.shape}")
    if not np.isin(y_true, (0.0, 1.0)).all():
        raise ValueError("y_true must hold only 0 (stays) and 1 (churns)")
    if np.isnan(score).any() or np.isnan(values).any():
        raise ValueError("score and clv must not contain NaN")
    slope, intercept, count = _cutoff_lines(y_true, score, values, offer_cost, contact_cost)
    hull = _upper_envelope(slope, intercept)
    # breakpoints: where the next envelope line overtakes the current one
    nxt, cur = hull[1:], hull[:-1]
    crossings = (intercept[nxt] - intercept[cur]) / (slope[nxt] - slope[cur])
    edges = np.clip(np.r_[0.0, crossings, 1.0], 0.0, 1.0)
    total, share = 0.0, 0.0
    for line, low, high in zip(hull, edges[:-1], edges[1:]):
        if high <= low:
            continue
        total += _integrate_line(slope[line], intercept[line], low, high, alpha, beta)
        share += count[line] * (beta_dist.cdf(high, alpha, beta) - beta_dist.cdf(low, alpha, beta))
    n = len(y_true)
    return ProfitResult(empc=float(total / n), contact_share=float(share / n))
