"""Learned action effects: a Gamma-Poisson model of each value segment x action cell, from the ledger alone.

Why cells, not customer traits: a campaign gives a cell tens of held-out outcomes and a few
churners among them, which can tell an action's average effect in a segment (slowly) but not
who within it responds; and the cells need only the ledger's own columns (segment, action,
holdout, churned, churn_probability), so the same learner works on any data set.

The model of a cell (the churn model's probability as exposure). With E_h the summed churn
probability of its held-out customers and y_h their churners, E_t and y_t the same for its
contacted customers:

    y_h ~ Poisson(theta_h * E_h),   y_t ~ Poisson(theta_t * E_t),   theta_t = theta_h * (1 - e)

theta_h is the cell's churn relative to the model's prediction (1 when the model is
calibrated there), e the action's relative effect (contact multiplies churn by 1 - e;
e < 0: contact drives customers away). theta_h and theta_t get independent conjugate
Gamma priors centred on 1 and on 1 - (the catalog's prior effect), each worth k expected
churners of exposure (shape = k x centre, rate = k), so their posteriors are
Gamma(shape + y, rate + E). The same outcomes are read twice, with two weights k: what is
reported with `prior_churners` (`summary`: the effect, its interval, the holdouts needed;
what `churn measure` shows), what the policy decides on with `decision_churners`
(`cell_effects`, `effects`: the Thompson draws and 'mean' mode). Why two, below.

Why the report's prior is worth 20 expected churners (`learning.prior_churners`; until
decisions got their own weight, theirs too): at the product's campaign sizes (a default run
decides ~470 customers, a fifth held out, churn of a few percent within the horizon) a cell's
holdout sees 1-15 churners per campaign, and the effect of a cell with 10 held-out churners is
known to +-0.5 at best. A prior worth 5 lets those few churners turn a good action harmful in
9-12 % of cells within five campaigns, and its decisions' error is 1.3-1.9x the catalog's when
the catalog is about right; one worth 40 (unpooled) needs 6 campaigns to see an action that
harms, and its 95 % intervals cover the truth only 83-89 % of the time when the catalog is
wrong. 20 with pooling finds a harm shown in every segment after 1 campaign (90 %: 3) and in
one segment after 2 (90 %: 7), turns a good action harmful in 3 % of cells, covers 97-99 %, and
its error is at most 1.2x the catalog's when the catalog is right and 0.5-0.75x when it is
wrong (benchmarks/learning.py, docs/benchmarks.md "Learning action effects").

Why decisions use a heavier prior, worth 160 (`learning.decision_churners`). A decision acts
on the sign and size of theta_h - theta_t at every contact of a campaign: when a cell's few
churners happen to turn a good action's mean negative, the action is withdrawn from a whole
segment, and when they flatter a poor one it is bought for every customer there; each contact
pays for that until more outcomes undo it. A report should say what the data show, and a
prior heavy enough to steady the decisions pulls its interval to the catalog: with one weight
of 160 for both, the intervals covered the true cell effect in 155 of 184 cells (84 %) on the
simulator's scenarios. So each gets its own weight; pooling works alike in both (each cell
centred on its action's posterior over every segment, both with the same weight), and with no
outcomes both give exactly the catalog's priors. On the simulator's four scenarios
(benchmarks/policy.py, 3 seeds, 6 campaigns, docs/benchmarks.md "Targeting strategies on the
simulator's scenarios") the learned policy against the priors policy, deciding with priors
worth 20 / 80 / 160 and reporting at 20: priors right 0.65x / 0.85x / 0.98x, priors wrong -9
turned into 110 / 240 / 344, heterogeneous 0.84x / 1.05x / 1.07x, lost causes 0.84x / 1.16x /
1.02x (a x b read as a gain of that share of |b| when b < 0), the intervals covering 99-100 %
of the cells; 160 is the weight with the best worst case of these three. What it costs: harm
is acted on later. On the synthetic ledgers of benchmarks/learning.py (--weights 20,80,160,
pooled), an action the catalog puts at +0.3 that truly drives 30 % more customers away turns
negative in the decisions after 5 campaigns (90 %: 9) when every segment shows it, against 1
(3) at 20, and after 13 (90 %: more than 20) when one segment does, against 2 (7); in
exchange no action at its prior turns harmful within five campaigns (3 % of cells at 20), and the
decisions' error is below the catalog's when it is about right (0.113-0.129 against 0.135) but
above 20's when it is wrong (0.148-0.229 against 0.135-0.190).

The interval of e is analytic: the ratio of two independent Gammas is a scaled F
distribution (theta_t / theta_h = (a_t b_h) / (a_h b_t) F(2 a_t, 2 a_h) for shapes a, rates b),
so its quantiles need no sampling.

What the policy decides with is not e but theta_h - theta_t: the churn a contact prevents
per unit of predicted churn probability (the expected value P x effect x CLV - cost then
holds whether or not the model is calibrated in the cell; when it is, theta_h = 1 and this
is e). Its posterior mean is E[theta_h] - E[theta_t], which with no outcomes is exactly the
catalog's prior effect; E[e] is not (E[1 / theta_h] > 1 / E[theta_h]).

Exploration (Thompson sampling): each campaign decides with one draw of (theta_h, theta_t)
per cell from its posterior. The draws are inverse-CDF draws of two uniform numbers hashed
from (campaign, cell) (`churn.draws.uniform_draw`): the same campaign and the same outcomes
give the same draw in a batch run and in the service, another campaign draws afresh, and a
cell's draw does not depend on which other cells exist. A cell with few outcomes gets varied
draws (so it is tried now and then; how varied is the decision prior's weight's to say); a
well-measured one gets about its measured effect.

Pooling (`pool`, on by default): the contacted rate's prior of a cell is centred on 1 minus its
action's effect over every segment (the ratio of the action's posterior means: its catalog
prior, worth k, updated by all its outcomes) instead of on 1 minus the catalog's effect,
still worth k (the report's and the decisions' k each). A cell then starts from what its action's
other segments show: harm seen in one segment makes the others wary before they have
outcomes of their own. The held-out prior stays centred on 1 (calibration is not pooled: it
differs by segment). The cell's own outcomes count in the action's centre too; with a prior
worth 20 churners pooling costs 0.01-0.02 of error when the catalog is right and gains
0.02-0.03 when it is wrong, keeps coverage, and finds harm sooner (benchmarks/learning.py).

Uplift metrics for rankings (Qini, uplift at k) are in `serving/measure.py`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from churn.draws import uniform_draw
from churn.errors import DataError
from churn.settings import LearningSettings
from serving.policy import NO_ACTION, ActionCatalog, Segment

Mode = Literal["thompson", "mean", "priors"]
# every outcome row carries these (the ledger's decisions with outcomes)
ROW_COLUMNS = ("segment", "action", "holdout", "churned", "churn_probability")
# what the learner reads: a ledger aggregated per segment x action x holdout
CELL_COLUMNS = ["segment", "action", "holdout", "n", "churned", "expected"]
# the summary's row of an action over every segment (as in serving/measure.py)
ALL_SEGMENTS = "all"
# a catalog effect of 1 (no churn at all when contacted) would make the contacted rate's prior 0
_MIN_RATE = 0.01
# campaigns whose draws a fitted learner keeps (the service decides a few campaigns at a time)
_DRAWS_KEPT = 64
# two-sided 5 % test at 80 % power: z_0.975 + z_0.8
_Z_POWER = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)


class Gammas(NamedTuple):
    """Gamma posteriors (shape, rate) of the contacted (t) and held-out (h) churn rates, per cell or per action.

    In `effect_quantiles`' argument order.
    """

    shape_t: np.ndarray
    rate_t: np.ndarray
    shape_h: np.ndarray
    rate_h: np.ndarray

    def mean_prevented(self) -> np.ndarray:
        """E[theta_h] - E[theta_t]: the churn a contact prevents per unit of predicted probability, on average."""
        return self.shape_h / self.rate_h - self.shape_t / self.rate_t

    def as_row(self) -> Gammas:
        """Per-action posteriors as a one-row (1 x actions) table, the shape of `_summary_rows`' cells."""
        return Gammas(*(v[None, :] for v in self))


def outcome_cells(rows: pd.DataFrame) -> pd.DataFrame:
    """Decisions with outcomes, summed per segment x action x holdout: what `CellEffects.fit` reads.

    `rows` columns (the ledger's `decisions_with_outcomes`, or any table of that shape):
    - segment, action, holdout (bool), churned (bool), churn_probability (at decision time)

    Rows whose action is 'none' are left out. Returns `CELL_COLUMNS`: n outcomes, churned
    (churners), expected (summed churn probability). `Ledger.outcome_cells` gives the same
    from SQL.
    """
    missing = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise DataError(f"outcome rows lack columns {missing}; they have {list(rows.columns)}")
    p = pd.to_numeric(rows["churn_probability"], errors="coerce")
    bad = p.isna() | (p < 0) | (p > 1)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(
            f"outcome rows: churn_probability must be a number in [0, 1]; got {rows['churn_probability'].tolist()[row]!r} "
            f"in row {row + 1}"
        )
    acted = rows.assign(churn_probability=p)[rows["action"].to_numpy() != NO_ACTION]
    cells = (
        acted.astype({"holdout": bool, "churned": bool})
        .groupby(["segment", "action", "holdout"], as_index=False)
        .agg(n=("churned", "size"), churned=("churned", "sum"), expected=("churn_probability", "sum"))
    )
    return cells.astype({"n": int, "churned": int, "expected": float})[CELL_COLUMNS]


class CellEffects:
    """Effects of each action in each value segment, learned from outcomes (see the module's docstring).

    Parameters
    - actions: action names, in catalog order (the effects matrix's columns)
    - priors: the catalog's prior effects, in the same order
    - prior_churners: how many expected churners each prior is worth in what `summary` reports
      (the effect, its interval, the holdouts needed) (> 0)
    - decision_churners: the same for what the policy decides with (`cell_effects`, `effects`,
      `summary`'s decision_effect) (> 0); None: `prior_churners`
    - pool: centre each cell's prior on its action's posterior over every segment
    - mode: what `effects` gives: 'thompson' (one posterior draw per cell and campaign),
      'mean' (posterior means), 'priors' (the catalog's priors: nothing learned is used)
    """

    def __init__(
        self,
        actions: list[str],
        priors: list[float] | np.ndarray,
        prior_churners: float = 20.0,
        pool: bool = True,
        mode: Mode = "thompson",
        decision_churners: float | None = None,
    ):
        self.actions = actions
        self.priors = priors
        self.prior_churners = prior_churners
        self.pool = pool
        self.mode = mode
        self.decision_churners = decision_churners

    # ------------------------------------------------------------------ fitting
    def fit(self, cells: pd.DataFrame) -> CellEffects:
        """Learn from outcomes summed per cell (`outcome_cells`, `Ledger.outcome_cells`).

        `cells` columns: segment, action, holdout, n, churned, expected. Actions the catalog
        does not list (retired ones) are left out and named in `ignored_actions_`; cells of
        segments with no outcomes keep their prior.
        """
        if self.mode not in ("thompson", "mean", "priors"):
            raise DataError(f"CellEffects: mode must be 'thompson', 'mean' or 'priors'; got {self.mode!r}")
        if not self.prior_churners > 0:
            raise DataError(f"CellEffects: prior_churners must be above 0; got {self.prior_churners!r}")
        if self.decision_churners is not None and not self.decision_churners > 0:
            raise DataError(f"CellEffects: decision_churners must be above 0 (or None); got {self.decision_churners!r}")
        priors = np.asarray(self.priors, dtype=float)
        if len(priors) != len(self.actions):
            raise DataError(f"CellEffects: {len(self.actions)} actions but {len(priors)} prior effects")
        cells = _checked_cells(cells)
        known = cells["action"].isin(self.actions)
        self.ignored_actions_ = sorted(set(cells.loc[~known, "action"]))
        cells = cells[known]
        self.segments_ = [s.value for s in Segment] + sorted(set(cells["segment"]) - {s.value for s in Segment})
        shape = (len(self.segments_), len(self.actions))
        index = pd.MultiIndex.from_product([self.segments_, self.actions])
        sums = {}
        for holdout, arm in ((False, "t"), (True, "h")):
            part = cells[cells["holdout"] == holdout].groupby(["segment", "action"])[["n", "churned", "expected"]].sum()
            part = part.reindex(index, fill_value=0.0)  # a cell without outcomes sums to nothing
            for column in ("n", "churned", "expected"):
                sums[f"{column}_{arm}"] = part[column].to_numpy(dtype=float).reshape(shape)
        self.n_t_, self.n_h_ = sums["n_t"].astype(int), sums["n_h"].astype(int)
        self.y_t_, self.y_h_ = sums["churned_t"], sums["churned_h"]
        self.e_t_, self.e_h_ = sums["expected_t"], sums["expected_h"]
        # the same outcomes, two weights of the priors: what is reported, and what is decided with
        self.reported_, self.reported_action_ = self._posterior(float(self.prior_churners), priors)
        decision_k = self.prior_churners if self.decision_churners is None else self.decision_churners
        self.decision_, self.decision_action_ = self._posterior(float(decision_k), priors)
        self._draws_: dict[str, np.ndarray] = {}
        return self

    def _posterior(self, k: float, priors: np.ndarray) -> tuple[Gammas, Gammas]:
        """The Gamma posteriors of every cell and of every action over all segments, each prior worth `k` churners."""
        prior_t = np.maximum(1 - priors, _MIN_RATE)
        # the action over every segment: the catalog's prior updated by all its outcomes
        action = Gammas(
            shape_t=k * prior_t + self.y_t_.sum(axis=0), rate_t=k + self.e_t_.sum(axis=0),
            shape_h=k + self.y_h_.sum(axis=0), rate_h=k + self.e_h_.sum(axis=0),
        )
        shape = self.y_h_.shape
        centre_h = np.ones(shape)
        if self.pool:
            pooled = (action.shape_t / action.rate_t) / (action.shape_h / action.rate_h)
            centre_t = np.broadcast_to(np.maximum(pooled, _MIN_RATE), shape)
        else:
            centre_t = np.broadcast_to(prior_t, shape)
        cells = Gammas(
            shape_t=k * centre_t + self.y_t_, rate_t=k + self.e_t_, shape_h=k * centre_h + self.y_h_, rate_h=k + self.e_h_
        )
        return cells, action

    def _check_fitted(self) -> None:
        if not hasattr(self, "decision_"):
            raise DataError("CellEffects is not fitted yet; call fit first")

    @property
    def n_learned(self) -> int:
        """Cells with outcomes on both sides (contacted and held out): those whose effect the data inform."""
        self._check_fitted()
        return int(((self.n_t_ > 0) & (self.n_h_ > 0)).sum())

    # ------------------------------------------------------------------ what the policy decides with
    def cell_effects(self, campaign: str | None = None) -> pd.DataFrame:
        """Per cell (segments x actions), the churn a contact prevents per unit of predicted probability.

        'thompson': one posterior draw of theta_h - theta_t, fixed by (campaign, cell) and
        the posterior (needs `campaign`); 'mean': E[theta_h] - E[theta_t]; 'priors': the
        catalog's prior effects. 'thompson' and 'mean' read the decision posterior (priors
        worth `decision_churners`), not the reported one.
        """
        self._check_fitted()
        if self.mode == "priors":
            values = np.broadcast_to(np.asarray(self.priors, dtype=float), self.y_h_.shape)
        elif self.mode == "mean":
            values = self.decision_.mean_prevented()
        else:
            if campaign is None:
                raise DataError("CellEffects in 'thompson' mode draws per campaign; give the campaign id")
            values = self._draws_.get(campaign)
            if values is None:  # a campaign's draw is fixed for a posterior: the service's calls reuse it
                values = self._draw(campaign)
                self._draws_[campaign] = values
                if len(self._draws_) > _DRAWS_KEPT:
                    self._draws_.pop(next(iter(self._draws_)))
        return pd.DataFrame(values, index=pd.Index(self.segments_, name="segment"), columns=self.actions)

    def _draw(self, campaign: str) -> np.ndarray:
        """One draw of theta_h - theta_t per cell, by the inverse CDF of uniform numbers hashed from (campaign, cell)."""
        keys = np.array([f"{s}|{a}" for s in self.segments_ for a in self.actions], dtype=object)
        post = self.decision_
        u_h = uniform_draw(keys, campaign, purpose="effect-holdout").reshape(post.shape_h.shape)
        u_t = uniform_draw(keys, campaign, purpose="effect-treated").reshape(post.shape_h.shape)
        return stats.gamma.ppf(u_h, post.shape_h, scale=1 / post.rate_h) - stats.gamma.ppf(
            u_t, post.shape_t, scale=1 / post.rate_t
        )

    def effects(self, scored: pd.DataFrame, campaign: str | None = None) -> np.ndarray:
        """The (customers x actions) effects matrix for `serving.policy.decide`: each customer its segment's cells.

        `scored` columns: segment. `campaign`: the campaign being decided ('thompson' mode).
        """
        table = self.cell_effects(campaign)
        segments = scored["segment"].astype(str)
        unknown = sorted(set(segments) - set(table.index))
        if unknown:
            raise DataError(f"scores have segments {unknown[:5]}, which the learned effects do not know")
        return table.to_numpy()[table.index.get_indexer(segments)]

    # ------------------------------------------------------------------ what it learned
    def summary(self, holdout_share: float | None = None) -> pd.DataFrame:
        """One row per segment x action and per action over every segment (segment 'all').

        Returns segment, action, n_treated, n_holdout, churned_treated, churned_holdout,
        expected_treated, expected_holdout, effect (posterior median of the relative effect e),
        ci_low, ci_high (its 95 % interval), decision_effect (E[theta_h] - E[theta_t], what
        'mean' mode decides with), holdout_needed. The 'all' rows are the action's posterior
        from its catalog prior and every outcome. effect, ci_low, ci_high and holdout_needed
        are those of the reported posterior (priors worth `prior_churners`), decision_effect
        that of the decision posterior (`decision_churners`).

        holdout_needed: how many more held-out outcomes would tell the cell's effect from
        zero at 80 % power, given the current estimate (e, theta_h), the cell's mean churn
        probability and `holdout_share` (contacted outcomes per held-out one: (1 - s) / s);
        0 when the interval already excludes zero, NaN without outcomes or a holdout share,
        inf when the estimate is no effect at all. See `holdout_needed`.
        """
        self._check_fitted()
        cell = {
            "n_treated": self.n_t_, "n_holdout": self.n_h_, "churned_treated": self.y_t_.astype(int),
            "churned_holdout": self.y_h_.astype(int), "expected_treated": self.e_t_, "expected_holdout": self.e_h_,
        }
        everywhere = {name: values.sum(axis=0, keepdims=True) for name, values in cell.items()}
        frames = [
            _summary_rows(self.segments_, self.actions, cell, self.reported_, self.decision_, holdout_share),
            _summary_rows(
                [ALL_SEGMENTS], self.actions, everywhere, self.reported_action_.as_row(), self.decision_action_.as_row(),
                holdout_share,
            ),
        ]
        return pd.concat([frames[1], frames[0]], ignore_index=True)


def learner_for(catalog: ActionCatalog, settings: LearningSettings | None = None) -> CellEffects:
    """An unfitted `CellEffects` for the catalog's actions and priors, as `settings` (default: the defaults) say."""
    settings = settings or LearningSettings()
    return CellEffects(
        catalog.names, catalog.prior_effects, prior_churners=settings.prior_churners, pool=settings.pool,
        mode=settings.mode, decision_churners=settings.decision_churners,
    )


def effect_quantiles(
    q: np.ndarray | float, shape_t: np.ndarray, rate_t: np.ndarray, shape_h: np.ndarray, rate_h: np.ndarray
) -> np.ndarray:
    """Quantiles of e = 1 - theta_t / theta_h with theta ~ Gamma(shape, rate), independent.

    theta_t / theta_h = (shape_t rate_h) / (shape_h rate_t) F(2 shape_t, 2 shape_h); e's q
    quantile is 1 minus the ratio's (1 - q) quantile.
    """
    scale = (shape_t * rate_h) / (shape_h * rate_t)
    return 1 - scale * stats.f.ppf(1 - np.asarray(q), 2 * shape_t, 2 * shape_h)


def holdout_needed(
    effect: np.ndarray, theta_h: np.ndarray, mean_probability: np.ndarray, n_holdout: np.ndarray, holdout_share: float | None
) -> np.ndarray:
    """More held-out outcomes for a two-sided 5 % test of no effect to have 80 % power, at the estimate.

    A difference of Poisson rates on the log scale: with Y_h = N_h p theta_h held-out and
    Y_t = r N_h p theta_h (1 - e) contacted churners expected (r = (1 - s) / s contacted per
    held-out outcome), Var(log rate ratio) = 1 / Y_t + 1 / Y_h, so
    N_h = (z_0.975 + z_0.8)^2 / log(1 - e)^2 x (1 + 1 / (r (1 - e))) / (p theta_h);
    the answer is N_h less the held-out outcomes there are (at least 0).
    """
    if holdout_share is None or holdout_share <= 0:
        return np.full(np.shape(effect), np.nan)
    ratio = (1 - holdout_share) / holdout_share
    kept = 1 - np.asarray(effect, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = _Z_POWER**2 / np.log(kept) ** 2 * (1 + 1 / (ratio * kept)) / (mean_probability * theta_h)
    return np.where(np.isnan(total), np.nan, np.maximum(np.ceil(total - n_holdout), 0.0))


def _summary_rows(
    segments: list[str], actions: list[str], cell: dict[str, np.ndarray], reported: Gammas, decision: Gammas,
    holdout_share: float | None,
) -> pd.DataFrame:
    low, median, high = (effect_quantiles(q, *reported) for q in (0.025, 0.5, 0.975))
    n = cell["n_treated"] + cell["n_holdout"]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_p = np.where(n > 0, (cell["expected_treated"] + cell["expected_holdout"]) / n, np.nan)
    needed = holdout_needed(median, reported.shape_h / reported.rate_h, mean_p, cell["n_holdout"], holdout_share)
    needed = np.where((low > 0) | (high < 0), 0.0, needed)
    grid = {"segment": np.repeat(segments, len(actions)), "action": np.tile(actions, len(segments))}
    columns = {name: np.ravel(values) for name, values in cell.items()}
    return pd.DataFrame(
        {
            **grid, **columns,
            "effect": median.ravel(), "ci_low": low.ravel(), "ci_high": high.ravel(),
            "decision_effect": decision.mean_prevented().ravel(),
            "holdout_needed": needed.ravel(),
        }
    )


def _checked_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """`cells` with its columns checked: counts are whole and non-negative, churners within them, exposure >= 0."""
    missing = [c for c in CELL_COLUMNS if c not in cells.columns]
    if missing:
        raise DataError(f"outcome cells lack columns {missing}; they have {list(cells.columns)}")
    cells = cells[CELL_COLUMNS].astype({"segment": str, "action": str, "holdout": bool, "n": float, "churned": float, "expected": float})
    for rule, bad in (
        ("n must be a whole number >= 0", (cells["n"] < 0) | (cells["n"] % 1 != 0)),
        ("churned must be a whole number within [0, n]", (cells["churned"] < 0) | (cells["churned"] > cells["n"]) | (cells["churned"] % 1 != 0)),
        ("expected must be within [0, n]", (cells["expected"] < 0) | (cells["expected"] > cells["n"]) | cells["expected"].isna()),
    ):
        if bad.any():
            row = cells[bad.to_numpy()].iloc[0]
            raise DataError(f"outcome cells: {rule}; got {row.to_dict()}")
    return cells
