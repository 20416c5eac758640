"""Targeting strategies against the simulator's truth, at equal spend, per scenario, over several seeds.

    PYTHONPATH=. .venv/bin/python benchmarks/policy.py [--workdir DIR] [--customers N] [--seeds 0,1,2]
        [--rounds 6] [--scenarios priors-right,priors-wrong,heterogeneous,lost-causes] [--json FILE]

For each seed, one simulated business (`--customers`, 900 days) goes the demo's path: simulate ->
ingest -> features -> train, the model trained with the engine's clock at the first campaign's
date (it has seen nothing of the campaigns' horizons). The simulator's truth records each active
customer's true probability of churning uncontacted at every campaign date (continuations of the
simulated world). Then, per scenario (features/truth.py: what the actions truly do), on the
same scores:

1. campaigns (`--rounds`, 30 days apart, each horizon over before the next decides): the engine
   decides with the catalog's budget, capacities, cooldowns and holdouts, and with effects
   learned from every earlier outcome (serving/learning.py: a Thompson draw per value segment x
   action, as batch runs decide; the first campaign on the catalog's priors); the truth gives the outcomes, recorded in a ledger of the scenario's own;
2. an evaluation date 30 days after the last campaign: every strategy chooses on the same active
   customers at the same spend, the priors policy's spend at the catalog's budget, and is
   scored by the truth: sum over contacted customers of
   true untreated churn probability x true effect x 12-month value (the CLV model's) - cost.

Strategies: `random` (customers in random order), `highest_risk` (by churn probability),
`risk_x_clv` (by probability x value), each giving a customer the eligible action with the best
prior value until the spend is reached; `priors` (the policy on the catalog's priors); `learned`
(the policy on the effects learned after each campaign: posterior means, no exploration); `oracle` (the exact
integer program on the true values: it knows the true effects and the true untreated churn
probability, so nothing can beat it; the benchmark checks that nothing does).

Also per scenario: how often the learned effects' 95 % intervals cover the true mean effect of
their segment x action cell (weighted as the measurement weighs it: by untreated churn), and, for
the heterogeneous scenario, the share of each action's effect that observable traits explain.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path, where serving.py would shadow
# the `serving` package: put the project root in its place.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import time
from dataclasses import dataclass
from datetime import date, datetime, time as day_start, timedelta, timezone

import numpy as np
import pandas as pd

from churn import clock
from churn.settings import Settings, load_settings
from features.build import build_features
from features.contract import load_contract
from features.ingest import ingest
from features.simulate import CONFIG_FILE, simulate
from features.store import apply_definitions
from features.truth import SCENARIOS, customer_state, effect_matrix, true_effects, untreated_probability
from serving.allocate import NONE, allocate, exact_allocate
from serving.batch import decide_campaign, learn_effects, score_active
from serving.learning import CellEffects, learner_for
from serving.ledger import Ledger
from serving.measure import measurement_report
from serving.outcomes import ingest_simulated
from serving.policy import ActionCatalog, eligibility, expected_values
from serving.scoring import Scorer
from training.train import train

DAYS = 900  # enough history before ten campaigns for the value model's 365-day horizon
HORIZON = timedelta(days=30)
ROLLOUTS = 64  # continuations of the world behind each true untreated churn probability
STRATEGIES = ("oracle", "random", "highest_risk", "risk_x_clv", "priors", "learned")


def _dates(start: date, rounds: int) -> tuple[list[datetime], datetime]:
    """The campaigns' decision dates and the evaluation date (30 days after the last; its horizon ends with the data)."""
    end = datetime.combine(start, day_start(), tzinfo=timezone.utc) + timedelta(days=DAYS)
    evaluation = end - HORIZON
    return [evaluation - HORIZON * k for k in range(rounds, 0, -1)], evaluation


def _population(root: Path, seed: int, customers: int, dates: list[datetime]) -> tuple[Settings, dict[datetime, pd.DataFrame]]:
    """One simulated business through the demo's path, and its scores at every date (kept in `root`)."""
    settings = load_settings(data_dir=root / "data", mlruns_dir=root / "mlruns")
    paths = {d: root / f"scores_{d:%Y%m%d}.parquet" for d in dates}
    if all(p.exists() for p in paths.values()):
        return settings, {d: pd.read_parquet(p) for d, p in paths.items()}
    settings.ensure_dirs()
    t = time.perf_counter()
    start = settings.simulation.start
    simulate(
        settings.raw_dir, settings.truth_dir, n_customers=customers, start=start, days=DAYS, seed=seed,
        truth_dates=[d.date() for d in dates], rollouts=ROLLOUTS,
    )
    contract, data_root = load_contract(settings.raw_dir / CONFIG_FILE)
    ingest(contract, data_root, settings.ingested_dir)
    build_features(settings.ingested_dir, settings.feature_tables_dir)
    apply_definitions(settings)
    train(clock.pinned(settings, dates[0]))  # trained as of the first campaign: no campaign's horizon seen
    scorer = Scorer.load(settings)
    scores = {}
    for d, path in paths.items():
        scores[d] = score_active(settings, scorer, d)
        scores[d].to_parquet(path, index=False)
    print(f"seed {seed}: {customers:,} customers simulated, ingested, built, trained and scored at "
          f"{len(dates)} dates in {time.perf_counter() - t:.0f}s")
    return settings, scores


def _by_rank(order: np.ndarray, prior_values: np.ndarray, eligible: np.ndarray, catalog: ActionCatalog, spend: float) -> np.ndarray:
    """Baseline targeting: walk customers in `order`, give each their best eligible action by prior
    value (worth it or not: these strategies target by score), while the spend and capacities last."""
    choice = np.full(len(prior_values), NONE)
    spent, used = 0.0, np.zeros(len(catalog.actions), int)
    ranked_actions = np.argsort(-np.where(eligible, prior_values, -np.inf), axis=1)
    for i in order:
        for j in ranked_actions[i]:
            if not eligible[i, j]:
                break
            cap = catalog.actions[j].capacity
            if (cap is not None and used[j] >= cap) or spent + catalog.costs[j] > spend + 1e-9:
                continue
            choice[i], spent, used[j] = j, spent + catalog.costs[j], used[j] + 1
            break
    return choice


@dataclass
class _Evaluation:
    """The evaluation date's customers, what every strategy may do, and what the truth says each choice is worth."""

    scores: pd.DataFrame
    catalog: ActionCatalog
    eligible: np.ndarray
    prior_values: np.ndarray
    true_values: np.ndarray  # customers x actions: p_true x true effect x value - cost
    spend: float  # every strategy's budget: the priors policy's spend at the catalog's budget
    p_true: np.ndarray  # each customer's true untreated churn probability
    true_effects: np.ndarray  # customers x actions

    @classmethod
    def at(cls, settings: Settings, scores: pd.DataFrame, catalog: ActionCatalog, as_of: datetime, scenario: str) -> _Evaluation:
        ids = scores["customer_id"].to_numpy()
        p_true = untreated_probability(settings.truth_dir, ids, as_of)
        effects = effect_matrix(customer_state(settings.raw_dir, settings.truth_dir, ids, as_of), catalog.names, scenario)
        clv = scores["clv"].to_numpy(dtype=float)
        true_values = p_true[:, None] * effects * clv[:, None] - catalog.costs
        prior_values = expected_values(scores, catalog)
        priors = allocate(prior_values, catalog.costs, catalog.budget, catalog.capacities)
        spend = float(catalog.costs[priors[priors != NONE]].sum())
        return cls(scores, catalog, eligibility(scores, catalog), prior_values, true_values, spend, p_true, effects)

    def realised(self, choice: np.ndarray) -> tuple[float, float]:
        rows = np.flatnonzero(choice != NONE)
        return float(self.true_values[rows, choice[rows]].sum()), float(self.catalog.costs[choice[rows]].sum())

    def policy(self, effects: np.ndarray | None) -> np.ndarray:
        values = expected_values(self.scores, self.catalog, effects)
        return allocate(values, self.catalog.costs, self.spend, self.catalog.capacities)

    def diagnostics(self) -> dict[str, np.ndarray]:
        """Where the oracle's lead comes from: policies that know part of the truth (not strategies anyone can run).

        - `oracle_model_p`: every customer's true effects, but the churn model's probability;
        - `cells_known`: each segment x action cell's true mean effect at the evaluation date (weighted
          by untreated churn, as outcomes measure it) and the model's probability. In sample: the means
          are taken over the very customers evaluated, few per cell, so they know part of those
          customers' hidden effects and overstate what learning per cell could reach; out of sample
          (cells measured on the campaigns' customers): `benchmarks/trait_ceiling.py --source rounds`.
        """
        p = self.scores["churn_probability"].to_numpy(dtype=float)
        clv = self.scores["clv"].to_numpy(dtype=float)
        c = self.catalog
        model_p = np.where(self.eligible, p[:, None] * self.true_effects * clv[:, None] - c.costs, -np.inf)
        segment = self.scores["segment"].astype(str).to_numpy()
        cell_means = np.zeros_like(self.true_effects)
        for s in np.unique(segment):
            rows_s = segment == s
            weights = self.p_true[rows_s][:, None] * self.eligible[rows_s]
            mean = (weights * self.true_effects[rows_s]).sum(axis=0) / np.maximum(weights.sum(axis=0), 1e-12)
            cell_means[rows_s] = mean
        return {
            "oracle_model_p": allocate(model_p, c.costs, self.spend, c.capacities),
            "cells_known": self.policy(cell_means),
        }

    def strategies(self, learned_effects: np.ndarray | None, seed: int) -> dict[str, np.ndarray]:
        p = self.scores["churn_probability"].to_numpy(dtype=float)
        clv = self.scores["clv"].to_numpy(dtype=float)
        c = self.catalog
        return {
            "oracle": exact_allocate(np.where(self.eligible, self.true_values, -np.inf), c.costs, self.spend, c.capacities),
            "random": _by_rank(np.random.default_rng(seed).permutation(len(p)), self.prior_values, self.eligible, c, self.spend),
            "highest_risk": _by_rank(np.argsort(-p, kind="stable"), self.prior_values, self.eligible, c, self.spend),
            "risk_x_clv": _by_rank(np.argsort(-p * clv, kind="stable"), self.prior_values, self.eligible, c, self.spend),
            "priors": self.policy(None),
            "learned": self.policy(learned_effects),
        }


def _cell_truth(settings: Settings, rows: pd.DataFrame, scenario: str) -> tuple[pd.Series, pd.Series]:
    """True mean effect per segment x action of the decided customers: relative and absolute.

    Relative, what the learner estimates: sum(p e) / sum(p) over the cell (weighted by untreated
    churn); absolute, what the measurement report's difference of churn rates estimates: mean of -p e.
    """
    parts = []
    for as_of, group in rows.groupby("as_of"):
        ids = group["customer_id"].to_numpy()
        p = untreated_probability(settings.truth_dir, ids, as_of)
        e = true_effects(settings.raw_dir, settings.truth_dir, ids, group["action"].to_numpy(), as_of, scenario)
        parts.append(group[["segment", "action"]].assign(pe=p * e, p=p))
    cells = pd.concat(parts).groupby(["segment", "action"])[["pe", "p"]].agg(["sum", "count"])
    relative = cells[("pe", "sum")] / cells[("p", "sum")]
    # what a comparison of churn rates (contacted minus held out) measures: the mean change of churn, -p e
    absolute = -cells[("pe", "sum")] / cells[("pe", "count")]
    return relative, absolute


def _campaign_value(settings: Settings, recorded: pd.DataFrame, scores: pd.DataFrame, as_of: datetime, scenario: str) -> float:
    """What a campaign's contacts (held-out customers are not contacted) truly gained: p_true x e x value - cost."""
    contacted = recorded[(recorded["action"] != "none") & ~recorded["holdout"].astype(bool)]
    if contacted.empty:
        return 0.0
    ids = contacted["customer_id"].to_numpy()
    p = untreated_probability(settings.truth_dir, ids, as_of)
    e = true_effects(settings.raw_dir, settings.truth_dir, ids, contacted["action"].to_numpy(), as_of, scenario)
    clv = scores.assign(customer_id=scores["customer_id"].astype(str)).set_index("customer_id")["clv"].reindex(ids.astype(str))
    return float((p * e * clv.to_numpy() - contacted["cost"].to_numpy()).sum())


def _campaigns(
    settings: Settings, scores: dict[datetime, pd.DataFrame], catalog: ActionCatalog, rounds: list[datetime],
    scenario: str, ledger_path: Path, learn: bool,
):
    """The campaigns in a ledger of their own, learning from each one's outcomes (or on the priors throughout).

    Yields, after each campaign: its true net value, what it decided, and when learning the effects learned so
    far (posterior means) and the ledger's decisions with outcomes (None on the priors).
    """
    ledger_path.unlink(missing_ok=True)
    ledger = Ledger(f"sqlite:///{ledger_path}")
    explorer: CellEffects | None = None  # a Thompson draw per campaign
    exploiting = settings.learning.model_copy(update={"mode": "mean"})  # the evaluation's learner
    try:
        for k, as_of in enumerate(rounds, start=1):
            campaign = f"round-{k}"
            day = scores[as_of]
            effects = None if explorer is None else explorer.effects(day, campaign)
            recorded = decide_campaign(day, catalog, ledger, campaign, as_of, effects)
            ingest_simulated(settings, ledger, campaign)
            value = _campaign_value(settings, recorded, day, as_of, scenario)
            learned = rows = None
            if learn:
                explorer = learn_effects(settings, catalog, ledger)  # as batch runs learn
                learned = learner_for(catalog, exploiting).fit(ledger.outcome_cells())
                rows = ledger.decisions_with_outcomes()
            yield value, recorded, learned, rows
    finally:
        ledger.close()


def _where_sure(learned: CellEffects, catalog: ActionCatalog, scores: pd.DataFrame) -> np.ndarray:
    """The learned effect of a cell only where its 95 % interval excludes the catalog's prior; the prior elsewhere."""
    summary = learned.summary()
    cells = summary[summary["segment"] != "all"].set_index(["segment", "action"])
    prior = pd.Series(catalog.prior_effects, index=catalog.names)
    prior_of = prior.reindex(cells.index.get_level_values("action")).to_numpy()
    sure = (cells["ci_low"].to_numpy() > prior_of) | (cells["ci_high"].to_numpy() < prior_of)
    table = pd.Series(np.where(sure, cells["decision_effect"].to_numpy(), prior_of), index=cells.index).unstack("action")
    table = table[catalog.names]
    segments = scores["segment"].astype(str)
    return table.to_numpy()[table.index.get_indexer(segments)]


def _scenario(
    settings: Settings, scores: dict[datetime, pd.DataFrame], catalog: ActionCatalog, rounds: list[datetime],
    evaluation: datetime, scenario: str, root: Path, seed: int, explore_share: float,
) -> dict:
    """The campaigns under one scenario, then every strategy at the evaluation date."""
    sim = settings.simulation.model_copy(update={"scenario": scenario})
    # outcomes are recorded at the end of the data, on any date
    settings = clock.pinned(settings.model_copy(update={"simulation": sim}), evaluation + HORIZON)
    ev = _Evaluation.at(settings, scores[evaluation], catalog, evaluation, scenario)
    learned_by_round, spend_by_round, decided, campaign_value = [], [], [], []
    exploring = catalog.model_copy(update={"explore_share": explore_share})
    for value, recorded, learned, rows in _campaigns(
        settings, scores, exploring, rounds, scenario, root / f"ledger_{scenario}.db", learn=True
    ):
        decided.append(int((recorded["action"] != "none").sum()))
        campaign_value.append(value)
        v, spent = ev.realised(ev.policy(learned.effects(ev.scores)))
        learned_by_round.append(v)
        spend_by_round.append(spent)
    # the same campaigns on the catalog's priors throughout, without exploration: what learning cost or gained on the way
    priors_value = [
        v for v, *_ in _campaigns(settings, scores, catalog, rounds, scenario, root / f"ledger_{scenario}_priors.db", learn=False)
    ]
    choices = ev.strategies(learned.effects(ev.scores), seed)
    result = {name: ev.realised(choice) for name, choice in choices.items()}
    best_other = max(v for name, (v, _) in result.items() if name != "oracle")
    if best_other > result["oracle"][0] + 1e-6:
        raise AssertionError(f"{scenario}: a strategy ({best_other:.2f}) beat the oracle ({result['oracle'][0]:.2f})")
    summary = learned.summary()
    summary = summary[summary["segment"] != "all"].set_index(["segment", "action"])
    relative, absolute = _cell_truth(settings, rows, scenario)
    truth = relative.reindex(summary.index)
    measured = summary[(summary["n_treated"] > 0) & (summary["n_holdout"] > 0)]
    covered = (measured["ci_low"] <= truth[measured.index]) & (truth[measured.index] <= measured["ci_high"])
    # the measurement report's intervals (contacted against held out, no prior): `churn measure`
    report = measurement_report(rows)
    report = report[(report["segment"] != "all") & (report["n_treated"] > 0) & (report["n_holdout"] > 0)]
    report = report.set_index(["segment", "action"])
    true_change = absolute.reindex(report.index)
    report_covered = (report["ci_low"] <= true_change) & (true_change <= report["ci_high"])
    diagnostics = {name: ev.realised(choice)[0] for name, choice in ev.diagnostics().items()}
    diagnostics["learned_where_sure"] = ev.realised(ev.policy(_where_sure(learned, catalog, ev.scores)))[0]
    return {
        "value": {name: v for name, (v, _) in result.items()},
        "spend": {name: s for name, (_, s) in result.items()},
        "diagnostics": diagnostics,
        "campaign_value": campaign_value,
        "campaign_value_priors": priors_value,
        "learned_by_round": learned_by_round,
        "learned_spend_by_round": spend_by_round,
        "decided_by_round": decided,
        "cells": int(len(measured)),
        "covered": int(covered.sum()),
        "report_cells": int(len(report)),
        "report_covered": int(report_covered.sum()),
        "budget": ev.spend,
    }


def _explained(settings: Settings, scores: pd.DataFrame, catalog: ActionCatalog, as_of: datetime) -> dict[str, float]:
    """Share of each action's true effect (heterogeneous scenario) explained by observable traits, among active customers."""
    state = customer_state(settings.raw_dir, settings.truth_dir, scores["customer_id"].to_numpy(), as_of)
    full = effect_matrix(state, catalog.names, "heterogeneous")
    explained = effect_matrix(state, catalog.names, "heterogeneous", explained=True)
    r2 = 1 - ((full - explained) ** 2).sum(axis=0) / ((full - full.mean(axis=0)) ** 2).sum(axis=0)
    return dict(zip(catalog.names, r2.round(3).tolist(), strict=True))


def _at_least(a: float, ratio: float, b: float) -> bool:
    """a >= ratio x b, read for a b of any sign as a - b >= (ratio - 1) x |b| (a gain of that share of b's size)."""
    return a - b >= (ratio - 1) * abs(b) - 1e-9


def _acceptance(report: dict, round_k: int, minutes: float) -> None:
    """Issue 15's acceptance points, each with its figures (means over seeds)."""
    print("\nissue 15 acceptance (means over seeds; a x b read as a gain of that share of |b| when b <= 0):")
    for scenario, r in report.items():
        learned_k, learned = r["learned_by_round"][round_k - 1]["mean"], r["learned"]["mean"]
        priors, oracle, high = r["priors"]["mean"], r["oracle"]["mean"], r["highest_risk"]["mean"]
        if scenario in ("priors-wrong", "heterogeneous"):
            print(f"  {scenario}: learned after {round_k} campaigns {learned_k:,.0f} >= 1.3x priors {priors:,.0f}: "
                  f"{_at_least(learned_k, 1.3, priors)}; >= 70 % of oracle {oracle:,.0f}: {learned_k >= 0.7 * oracle} "
                  f"({learned_k / oracle:.0%})")
        print(f"  {scenario}: learned {learned:,.0f} >= 0.95x priors {priors:,.0f}: {_at_least(learned, 0.95, priors)}; "
              f">= 1.2x highest risk {high:,.0f}: {_at_least(learned, 1.2, high)}")
    for key, what in (("report_coverage", "the measurement report's"), ("coverage", "the learned effects'")):
        cells = sum(r[key]["cells"] for r in report.values())
        covered = sum(r[key]["covered"] for r in report.values())
        print(f"  {what} intervals cover the true cell effect in {covered} of {cells} cells "
              f"({covered / max(cells, 1):.0%}) >= 90 %: {covered >= 0.9 * cells}")
    print(f"  whole benchmark {minutes:.1f} minutes < 30: {minutes < 30}")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/churn-policy-benchmark"))
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seeds", default="0,1,2", help="simulation seeds, one business each")
    parser.add_argument("--rounds", type=int, default=6, help="campaigns before the evaluation (1-10)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", type=Path, default=None, help="write the figures per scenario to this file")
    parser.add_argument(
        "--explore-share", type=float, default=None,
        help="the catalog's explore_share in the learning campaigns (default: the catalog's)",
    )
    args = parser.parse_args()
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be between 1 and 10")
    scenarios = args.scenarios.split(",")
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; the scenarios are {list(SCENARIOS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    began = time.perf_counter()
    results: dict[str, list[dict]] = {s: [] for s in scenarios}
    explained = None
    for seed in seeds:
        root = args.workdir / f"seed-{seed}"
        settings = load_settings(data_dir=root / "data", mlruns_dir=root / "mlruns")
        rounds, evaluation = _dates(settings.simulation.start, args.rounds)
        settings, scores = _population(root, seed, args.customers, [*rounds, evaluation])
        catalog = Scorer.load(settings).catalog
        for scenario in scenarios:
            t = time.perf_counter()
            share = catalog.explore_share if args.explore_share is None else args.explore_share
            results[scenario].append(_scenario(settings, scores, catalog, rounds, evaluation, scenario, root, seed, share))
            print(f"seed {seed}, {scenario}: {args.rounds} campaigns and the evaluation in {time.perf_counter() - t:.0f}s")
        if "heterogeneous" in scenarios and explained is None:
            explained = _explained(settings, scores[evaluation], catalog, evaluation)

    report = {}
    for scenario, runs in results.items():
        figures = {name: _mean_sd([r["value"][name] for r in runs]) for name in STRATEGIES}
        curve = [_mean_sd([r["learned_by_round"][k] for r in runs]) for k in range(args.rounds)]
        report[scenario] = {
            **{name: {"mean": m, "sd": s} for name, (m, s) in figures.items()},
            "learned_by_round": [{"mean": m, "sd": s} for m, s in curve],
            "spend": {name: _mean_sd([r["spend"][name] for r in runs])[0] for name in STRATEGIES},
            "budget": _mean_sd([r["budget"] for r in runs])[0],
            "coverage": {"cells": sum(r["cells"] for r in runs), "covered": sum(r["covered"] for r in runs)},
            "report_coverage": {
                "cells": sum(r["report_cells"] for r in runs), "covered": sum(r["report_covered"] for r in runs)
            },
            "seeds": seeds,
        }
        oracle, high = figures["oracle"][0], figures["highest_risk"][0]
        print(f"\n{scenario}: {len(runs)} seeds, spend {report[scenario]['budget']:,.0f} each (the priors policy's at the "
              f"catalog budget of {catalog.budget:,.0f}); net value mean +- sd")
        print(f"{'strategy':<14} {'net value':>18} {'spend':>8} {'of oracle':>9} {'x highest risk':>14}")
        for name in STRATEGIES:
            m, s = figures[name]
            print(f"{name:<14} {m:>10,.0f} +- {s:>5,.0f} {report[scenario]['spend'][name]:>8,.0f} {m / oracle:>9.1%} "
                  + (f"{m / high:>14.2f}" if high > 0 else f"{'(h.r. <= 0)':>14}"))
        print("learned after each campaign: " + ", ".join(f"{m:,.0f}" for m, _ in curve)
              + f"  (priors {figures['priors'][0]:,.0f}, oracle {oracle:,.0f})")
        diag = {name: _mean_sd([r["diagnostics"][name] for r in runs])[0] for name in runs[0]["diagnostics"]}
        report[scenario]["diagnostics"] = diag
        print("where the oracle's lead comes from: " + ", ".join(f"{k} {v:,.0f} ({v / oracle:.0%})" for k, v in diag.items()))
        learning = [_mean_sd([r["campaign_value"][k] for r in runs])[0] for k in range(args.rounds)]
        on_priors = [_mean_sd([r["campaign_value_priors"][k] for r in runs])[0] for k in range(args.rounds)]
        report[scenario]["campaign_value"] = {"learning": learning, "priors": on_priors}
        print("the campaigns' own true net value, learning: " + ", ".join(f"{v:,.0f}" for v in learning)
              + f" (sum {sum(learning):,.0f}); on the priors throughout: " + ", ".join(f"{v:,.0f}" for v in on_priors)
              + f" (sum {sum(on_priors):,.0f})")
        cov = report[scenario]["coverage"]
        print(f"learned effects' 95 % intervals cover the true cell effect in {cov['covered']} of {cov['cells']} "
              f"measured segment x action cells ({cov['covered'] / max(cov['cells'], 1):.0%})")
        rep = report[scenario]["report_coverage"]
        print(f"the measurement report's 95 % intervals (contacted minus held out) cover the true change of churn in "
              f"{rep['covered']} of {rep['cells']} cells ({rep['covered'] / max(rep['cells'], 1):.0%})")
    if explained is not None:
        print(f"\nheterogeneous: share of each action's true effect explained by observable traits (R^2): {explained}")
        report["heterogeneous"]["explained_r2"] = explained
    minutes = (time.perf_counter() - began) / 60
    print(f"\nwhole benchmark: {minutes:.1f} minutes")
    _acceptance(report, min(args.rounds, 6), minutes)
    if args.json is not None:
        args.json.write_text(json.dumps({"scenarios": report, "rounds": args.rounds, "customers": args.customers,
                                         "minutes": minutes}, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
