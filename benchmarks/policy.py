"""Targeting strategies against the simulator's truth, at the same budget on the same customers.

    PYTHONPATH=. .venv/bin/python benchmarks/policy.py [--workdir DIR] [--customers N] [--rounds R]

Builds the default simulated population (simulate -> ingest -> features -> train) in `--workdir`
unless it is there already, then:
1. learning rounds, 35 days apart (each horizon ends before the next round decides): the
   policy decides with the catalog's budget, capacities, cooldowns and holdouts, the
   simulator's truth gives the outcomes, and the uplift model is refitted on all outcomes;
2. an evaluation date after the last round: every strategy chooses, under the same budget
   and capacities, on the same active customers; the truth scores each choice.

Value of a contact (what the truth says it is worth): the expected churn it prevents given
what the customer would have done uncontacted (`features.truth.churn_change`), times the
customer's 12-month value (the CLV model's, the same for every strategy), minus its cost.
The oracle knows each customer's true effect of every action but, like everyone else, only
the churn model's probability; hidden traits and noise in the truth keep it out of reach.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path, where serving.py would shadow
# the `serving` package: put the project root in its place.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import time
from datetime import timedelta

import numpy as np
import pandas as pd

from churn import clock
from churn.settings import load_settings
from features.build import build_features
from features.contract import load_contract
from features.ingest import ingest
from features.raw import raw_as_of
from features.simulate import CONFIG_FILE, simulate
from features.store import apply_definitions
from features.truth import churn_change, untreated_outcomes
from serving.allocate import NONE, allocate, exact_allocate
from serving.batch import decide_campaign, score_active
from serving.ledger import Ledger
from serving.outcomes import ingest_simulated
from serving.policy import eligibility, expected_values
from serving.scoring import Scorer
from serving.uplift import TRAIT_SOURCES, fit_uplift, qini, uplift_at_k
from training.train import train

ROUND_SPACING = timedelta(days=35)


def _prepare(workdir: Path, customers: int):
    settings = load_settings(data_dir=workdir / "data", mlruns_dir=workdir / "mlruns")
    settings.ensure_dirs()
    if not (settings.feature_repo_dir / "feature_store.yaml").exists():
        t = time.perf_counter()
        # the path of `churn demo`: the simulator's tables ingested as any data set's
        simulate(settings.raw_dir, settings.truth_dir, n_customers=customers, seed=settings.simulation.seed)
        contract, root = load_contract(settings.raw_dir / CONFIG_FILE)
        end = ingest(contract, root, settings.ingested_dir).data_end
        build_features(settings.ingested_dir, settings.feature_tables_dir)
        apply_definitions(settings)
        train(clock.pinned(settings, end))
        print(f"built {customers:,} simulated customers, features and models in {time.perf_counter() - t:.0f}s")
    ledger_path = settings.data_dir / "benchmark_ledger.db"
    ledger_path.unlink(missing_ok=True)
    return settings.model_copy(update={"ledger_url": f"sqlite:///{ledger_path}"})


def _true_effects(settings, customer_ids: np.ndarray, actions: list[str]) -> np.ndarray:
    table = pd.read_parquet(settings.truth_dir / "responses.parquet").pivot(
        index="customer_id", columns="action", values="true_effect"
    )
    table.index = table.index.astype(str)  # the engine's ids are text, the simulator's truth keeps integers
    return table.reindex(customer_ids)[actions].to_numpy()


def _by_rank(order: np.ndarray, prior_values: np.ndarray, eligible: np.ndarray, catalog) -> np.ndarray:
    """Baseline targeting: walk customers in `order`, give each their best eligible action by prior
    value (worth it or not: these strategies target by score), while budget and capacity last."""
    choice = np.full(len(prior_values), NONE)
    spent, used = 0.0, np.zeros(len(catalog.actions), int)
    ranked_actions = np.argsort(-np.where(eligible, prior_values, -np.inf), axis=1)
    for i in order:
        for j in ranked_actions[i]:
            if not eligible[i, j]:
                break
            cap = catalog.actions[j].capacity
            if (cap is not None and used[j] >= cap) or spent + catalog.costs[j] > catalog.budget:
                continue
            choice[i], spent, used[j] = j, spent + catalog.costs[j], used[j] + 1
            break
    return choice


def _with_traits(rows: pd.DataFrame, scores_by_campaign: dict[str, pd.DataFrame]) -> pd.DataFrame:
    parts = []
    for campaign, group in rows.groupby("campaign"):
        traits = scores_by_campaign[campaign][["customer_id", *[c for c in TRAIT_SOURCES if c != "churn_probability"]]]
        traits = traits.astype({"customer_id": str})  # the ledger's ids are text
        # the ledger's `channel` is the action's; the trait is the acquisition channel
        parts.append(group.drop(columns="channel").merge(traits, on="customer_id", how="left", validate="one_to_one"))
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/churn-policy-benchmark"))
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-targeting baseline")
    parser.add_argument(
        "--explore-share", type=float, default=None, help="override the catalog's explore_share in the learning rounds"
    )
    args = parser.parse_args()
    settings = _prepare(args.workdir, args.customers)
    scorer = Scorer.load(settings)
    catalog = scorer.catalog
    if args.explore_share is not None:
        catalog = catalog.model_copy(update={"explore_share": args.explore_share})
    end = raw_as_of(settings.raw_dir)
    settings = clock.pinned(settings, end)  # outcomes are recorded at the end of the data, on any date
    eval_date = end - ROUND_SPACING
    rounds = [eval_date - ROUND_SPACING * k for k in range(args.rounds, 0, -1)]
    ledger = Ledger(settings.resolved_ledger_url)
    scores_by_campaign: dict[str, pd.DataFrame] = {}
    model = None
    print(f"catalog budget {catalog.budget:,.0f} per run, holdout share {catalog.holdout_share:.0%}, "
          f"explore share {catalog.explore_share:.0%}, "
          f"cooldown {catalog.cooldown_days} days; learning rounds at {[d.date().isoformat() for d in rounds]}")
    for k, as_of in enumerate(rounds, start=1):
        campaign = f"round-{k}"
        scores = score_active(settings, scorer, as_of)
        scores_by_campaign[campaign] = scores
        effects = model.predict_effects(scores) if model is not None else None
        recorded = decide_campaign(scores, catalog, ledger, campaign, as_of, effects)
        ingest_simulated(settings, ledger, campaign)
        acted = recorded[recorded["action"] != "none"]
        rows = _with_traits(ledger.decisions_with_outcomes(), scores_by_campaign)
        model = fit_uplift(rows, catalog.names, list(catalog.prior_effects))
        print(f"round {k} ({as_of.date()}): {len(acted):,} decided ({int(acted['holdout'].sum()):,} held out), "
              f"{'learned' if effects is not None else 'priors'}; uplift model now learns {model.learned_ or 'nothing'}")

    # uplift model quality on held-out outcomes: fit on campaigns before the last, test on the last
    rows = _with_traits(ledger.decisions_with_outcomes(), scores_by_campaign)
    last = rows["campaign"] == f"round-{args.rounds}"
    if args.rounds >= 2 and (~last).any():
        early = fit_uplift(rows[~last], catalog.names, list(catalog.prior_effects))
        test = rows[last]
        treated, churned = ~test["holdout"].to_numpy(bool), test["churned"].to_numpy(bool)
        learned_uplift = early.predict_uplift(test, test["action"].to_numpy())
        prior_uplift = test["churn_probability"].to_numpy() * catalog.prior_effects[
            [catalog.names.index(a) for a in test["action"]]
        ]
        print(f"uplift on the last round's outcomes ({len(test):,}; model fitted on the earlier rounds): "
              f"Qini (area over random, churners) {qini(learned_uplift, treated, churned)[0]:.4f} learned vs {qini(prior_uplift, treated, churned)[0]:.4f} priors; "
              f"uplift@30% {uplift_at_k(learned_uplift, treated, churned):.4f} learned vs "
              f"{uplift_at_k(prior_uplift, treated, churned):.4f} priors vs "
              f"{churned[~treated].mean() - churned[treated].mean():.4f} overall")

    # evaluation: every strategy on the same customers and budget
    scores = score_active(settings, scorer, eval_date)
    ids = scores["customer_id"].to_numpy()
    base = untreated_outcomes(settings.raw_dir, ids, eval_date, settings.training.horizon_days)
    base_rate = float(base["churned"].mean())
    truth = _true_effects(settings, ids, catalog.names)
    y0 = base["churned"].to_numpy()[:, None]
    clv = scores["clv"].to_numpy()
    true_value = -churn_change(y0, truth, base_rate) * clv[:, None] - catalog.costs  # per customer x action
    eligible = eligibility(scores, catalog)
    prior_values = expected_values(scores, catalog)
    p = scores["churn_probability"].to_numpy()
    oracle_values = np.where(eligible, p[:, None] * truth * clv[:, None] - catalog.costs, -np.inf)
    learned_values = expected_values(scores, catalog, model.predict_effects(scores))
    limits = (catalog.costs, catalog.budget, catalog.capacities)
    rng = np.random.default_rng(args.seed)
    strategies = {
        "random targeting": _by_rank(rng.permutation(len(ids)), prior_values, eligible, catalog),
        "highest risk": _by_rank(np.argsort(-p, kind="stable"), prior_values, eligible, catalog),
        "risk x CLV": _by_rank(np.argsort(-p * clv, kind="stable"), prior_values, eligible, catalog),
        "policy, priors": allocate(prior_values, *limits),
        f"policy, learned ({args.rounds} rounds)": allocate(learned_values, *limits),
        "oracle (true effects)": allocate(oracle_values, *limits),
    }

    def realised(choice):
        rows_ = np.flatnonzero(choice != NONE)
        return true_value[rows_, choice[rows_]].sum(), catalog.costs[choice[rows_]].sum(), len(rows_)

    oracle_value = realised(strategies["oracle (true effects)"])[0]
    highest_risk = realised(strategies["highest risk"])[0]
    print(f"\nevaluation at {eval_date.date()}: {len(ids):,} active customers, 30-day base churn {base_rate:.2%}, "
          f"budget {catalog.budget:,.0f}")
    print(f"{'strategy':<30} {'contacts':>8} {'cost':>9} {'net value':>11} {'of oracle':>9} {'x highest risk':>14}")
    for name, choice in strategies.items():
        value, cost, n = realised(choice)
        print(f"{name:<30} {n:>8,} {cost:>9,.0f} {value:>11,.0f} {value / oracle_value:>9.1%} {value / highest_risk:>14.2f}")

    # the allocation heuristic against the exact integer program, on the policy's own objective,
    # at the catalog's budget and at a tenth of what the policy spent (where the budget binds)
    spent = catalog.costs[strategies["policy, priors"][strategies["policy, priors"] != NONE]].sum()
    for name, values, budget in (
        ("priors", prior_values, catalog.budget),
        ("learned", learned_values, catalog.budget),
        ("priors, tight budget", prior_values, round(spent / 10, 2)),
        ("learned, tight budget", learned_values, round(spent / 10, 2)),
    ):
        limits = (catalog.costs, budget, catalog.capacities)
        t = time.perf_counter()
        exact = exact_allocate(values, *limits)
        seconds = time.perf_counter() - t
        fast = allocate(values, *limits)

        def planned(choice):
            r = np.flatnonzero(choice != NONE)
            return values[r, choice[r]].sum()

        print(f"allocation ({name} values, budget {budget:,.2f}): hull greedy {planned(fast):,.1f} = {planned(fast) / planned(exact):.2%} "
              f"of the exact integer program ({seconds:.1f}s)")
    ledger.close()


if __name__ == "__main__":
    main()
