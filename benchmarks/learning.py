"""How well and how fast the cell learner (`serving/learning.py`) learns, by prior weight and pooling.

    PYTHONPATH=. .venv/bin/python benchmarks/learning.py [--reps 60] [--weights 5,10,20,40]

Synthetic ledgers at the product's campaign sizes, the packaged catalog's priors: 3 value
segments x 7 actions, cells of 10 to 250 decided customers per campaign (a default run decides
about 470 customers in all), a fifth held out, churn probabilities Beta(2, 18) (mean 0.1), the
model's calibration off by about 20 % per cell, Bernoulli outcomes. Two worlds:
- "priors good": each action's true effect is its catalog prior +- 0.12, segments +- 0.1;
- "priors wrong": true effects uniform on [-0.3, 0.6] whatever the catalog says, segments +- 0.1.
For each prior weight (`learning.prior_churners` and `learning.decision_churners` alike) and
pooling (`learning.pool`):
- coverage of the 95 % intervals of e, and the mean absolute error of what 'mean' mode decides
  with (theta_h - theta_t) against the truth (theta_h x e), after 1, 3 and 10 campaigns, beside
  the error of deciding on the catalog's priors;
- harm: an action whose prior says 0.3 truly drives 30 % more customers away (in every segment,
  or in one), 100 customers per cell and campaign: campaigns until its mean effect turns negative;
- false alarms: the same action truly at its prior (0.3): share of cells whose mean effect is
  negative after 1 to 5 campaigns.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path: put the project root in its place.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import time

import numpy as np
import pandas as pd

from churn.settings import LearningSettings
from serving.learning import learner_for, outcome_cells
from serving.policy import load_catalog

CATALOG = load_catalog()
SEGMENTS = ["low", "medium", "high"]
WEIGHTS = (5, 10, 20, 40)  # the prior weights measured by default (docs/benchmarks.md)


def _world(rng: np.random.Generator, priors_good: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = len(CATALOG.names)
    action = CATALOG.prior_effects + rng.normal(0, 0.12, m) if priors_good else rng.uniform(-0.3, 0.6, m)
    effect = np.clip(action[None, :] + rng.normal(0, 0.1, (3, m)), -0.5, 0.8)
    theta = np.exp(rng.normal(0, 0.2, (3, m)))
    size = rng.choice([10, 30, 80, 250], (3, m), p=[0.3, 0.3, 0.25, 0.15])
    return effect, theta, size


def _campaign(rng: np.random.Generator, effect: np.ndarray, theta: np.ndarray, size: np.ndarray) -> pd.DataFrame:
    n = rng.poisson(size).ravel()
    p = rng.beta(2.0, 18.0, n.sum())
    holdout = rng.random(len(p)) < 0.2
    kept = np.where(holdout, 1.0, 1.0 - np.repeat(effect.ravel(), n))
    return pd.DataFrame(
        {
            "segment": np.repeat(np.repeat(SEGMENTS, len(CATALOG.names)), n),
            "action": np.repeat(np.tile(CATALOG.names, 3), n),
            "holdout": holdout,
            "churned": rng.random(len(p)) < np.clip(p * np.repeat(theta.ravel(), n) * kept, 0, 1),
            "churn_probability": p,
        }
    )


def _learner(k: float, pool: bool):
    # one weight for the report and the decisions: the rows measure what a prior worth k does to both
    return learner_for(CATALOG, LearningSettings(mode="mean", prior_churners=k, decision_churners=k, pool=pool))


def accuracy(reps: int, settings: list[tuple[float, bool]]) -> None:
    print(f"coverage of 95 % intervals of e / |error| of the decision effect (priors' |error|), {reps} ledgers each")
    for priors_good in (True, False):
        for rounds in (1, 3, 10):
            ledgers = []
            for r in range(reps):
                rng = np.random.default_rng(r)
                effect, theta, size = _world(rng, priors_good)
                cells = outcome_cells(pd.concat([_campaign(rng, effect, theta, size) for _ in range(rounds)]))
                ledgers.append((effect.ravel(), (theta * effect).ravel(), cells))
            prior_error = np.mean([np.abs(np.tile(CATALOG.prior_effects, 3) - gain).mean() for _, gain, _ in ledgers])
            line = []
            for k, pool in settings:
                covered, error = [], []
                for effect, gain, cells in ledgers:
                    summary = _learner(k, pool).fit(cells).summary()
                    summary = summary[summary["segment"] != "all"]
                    covered.append(((summary["ci_low"] <= effect) & (effect <= summary["ci_high"])).mean())
                    error.append(np.abs(summary["decision_effect"].to_numpy() - gain).mean())
                line.append(f"{np.mean(covered):.2f}/{np.mean(error):.3f}")
            world = "priors good " if priors_good else "priors wrong"
            print(f"  {world} {rounds:2d} campaigns (priors {prior_error:.3f}): " + "  ".join(line))


def _advisor_rows(rng: np.random.Generator, effects: dict[str, float]) -> pd.DataFrame:
    parts = []
    for segment, effect in effects.items():
        p = rng.beta(2.0, 18.0, 100)
        holdout = rng.random(100) < 0.2
        churned = rng.random(100) < p * np.where(holdout, 1.0, 1.0 - effect)
        parts.append(pd.DataFrame(
            {"segment": segment, "action": "advisor_call", "holdout": holdout, "churned": churned, "churn_probability": p}
        ))
    return pd.concat(parts)


def harm_and_false_alarms(reps: int, settings: list[tuple[float, bool]]) -> None:
    print("advisor_call (prior 0.3), 100 customers per cell and campaign:")
    for where in ("every segment", "one segment"):
        truth = {s: -0.3 if where == "every segment" or s == "high" else 0.3 for s in SEGMENTS}
        line = []
        for k, pool in settings:
            turns = []
            for r in range(reps):
                rng, rows = np.random.default_rng(r), []
                for campaign in range(1, 21):
                    rows.append(_advisor_rows(rng, truth))
                    effects = _learner(k, pool).fit(outcome_cells(pd.concat(rows))).cell_effects()
                    if effects.loc["high", "advisor_call"] < 0:
                        break
                turns.append(campaign)
            line.append(f"{np.median(turns):.0f}/{np.quantile(turns, 0.9):.0f}")
        print(f"  harm (-0.3) in {where:13}: campaigns until its mean effect < 0 (median/90 %): " + "  ".join(line))
    line = []
    for k, pool in settings:
        flips = []
        for r in range(reps):
            rng, rows = np.random.default_rng(r), []
            for _ in range(5):
                rows.append(_advisor_rows(rng, dict.fromkeys(SEGMENTS, 0.3)))
                effects = _learner(k, pool).fit(outcome_cells(pd.concat(rows))).cell_effects()
                flips.append((effects["advisor_call"] < 0).mean())
        line.append(f"{np.mean(flips):.3f}")
    print("  truth at the prior (0.3): share of cells with a mean effect < 0 in campaigns 1-5: " + "  ".join(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=60, help="ledgers per world and size")
    parser.add_argument(
        "--weights", default=",".join(str(k) for k in WEIGHTS),
        help="prior weights (expected churners), each unpooled and pooled",
    )
    args = parser.parse_args()
    settings = [(float(k), pool) for k in args.weights.split(",") for pool in (False, True)]
    started = time.perf_counter()
    print("columns: " + "  ".join(f"k={k:g}{' pooled' if pool else ''}" for k, pool in settings))
    accuracy(args.reps, settings)
    harm_and_false_alarms(args.reps, settings)
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
