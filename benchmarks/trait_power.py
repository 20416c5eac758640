"""Can a policy benchmark's campaigns tell an action's effect apart between levels of a customer trait? (issue 15)

    PYTHONPATH=. .venv/bin/python benchmarks/trait_power.py --workdir DIR [--seeds 0,1,2]
        [--scenarios priors-wrong,heterogeneous] [--campaigns 6]

Reads what `benchmarks/policy.py --workdir DIR` left there: each seed's learning ledger per
scenario (ledger_<scenario>.db: decisions with outcomes) and its scores at every campaign date
(the traits a decision saw). Per action, and per action x level of each trait (the data set's
low-cardinality categorical features, and the lifecycle stage the engine derives), after 1 and
after `--campaigns` campaigns: decisions, held-out and contacted customers, churners in each arm.

Then the standard error of the effect e (contact multiplies churn by 1 - e) estimated per
action x level, on the log scale (log(1 - e) = log of the churn rate ratio, Poisson counts):
- `holdout` control: that level's held-out customers of that action,
      SE = sqrt(1 / y_t + 1 / y_h);
- `model` control: the churn model's predicted probability of the contacted customers,
  calibrated by every held-out customer of every action pooled (theta = sum y_h / sum p_h),
      SE = sqrt(1 / y_t + 1 / Y_h,all);
  and the difference between two levels of one action, where a common calibration cancels:
      SE = sqrt(1 / y_t,1 + 1 / y_t,2) (no calibration error; the level's own calibration, when
      the model is miscalibrated by level, adds 1 / Y_h,level for each level).
Churner counts are the observed ones (per seed, mean over seeds), at least one in the standard
errors, so a cell with no churner is not called certain.

Detectability of e = 0.45 against e = -0.05 (a difference of log(0.55 / 1.05) = -0.65 on the
log scale) is the power of a two-sided 5 % test, Phi(0.65 / SE - 1.96), and the difference's
SE on the e scale near those values is about 0.8 x SE(log).
The scenario's truth gives each action x level's true mean effect (weighted by untreated
churn, as outcomes measure it) and the estimates' z-scores against it.
"""

from __future__ import annotations

import sys
from pathlib import Path

if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse

import numpy as np
import pandas as pd
from scipy import stats

from churn.settings import load_settings
from features.truth import true_effects, untreated_probability
from serving.ledger import Ledger
from serving.policy import lifecycle_stage_of, load_catalog

GAP = abs(np.log(0.55 / 1.05))  # e = 0.45 against e = -0.05 on the log scale
Z = stats.norm.ppf(0.975)
MAX_LEVELS = 12


def _rows(root: Path, scenario: str) -> tuple[pd.DataFrame, list[str]]:
    """The learning ledger's decisions with outcomes, with each decision's traits at its date (columns 'trait:<name>')."""
    ledger = Ledger(f"sqlite:///{root / f'ledger_{scenario}.db'}")
    try:
        rows = ledger.decisions_with_outcomes()
    finally:
        ledger.close()
    catalog = load_catalog()
    parts = []
    for as_of, group in rows.groupby("as_of"):
        scores = pd.read_parquet(root / f"scores_{pd.Timestamp(as_of):%Y%m%d}.parquet")
        scores["customer_id"] = scores["customer_id"].astype(str)
        scores["lifecycle_stage"] = lifecycle_stage_of(scores, catalog.lifecycle)
        traits = [c for c in scores.columns if scores[c].dtype == object and c not in ("customer_id", "model_version", "segment", "risk_band")]
        traits = [c for c in traits if scores[c].nunique() <= MAX_LEVELS]
        named = scores[["customer_id", *traits]].rename(columns={t: f"trait:{t}" for t in traits})
        parts.append(group.merge(named, on="customer_id", how="left", validate="one_to_one"))
    return pd.concat(parts, ignore_index=True), [f"trait:{t}" for t in traits]


def _truth(settings, rows: pd.DataFrame, scenario: str) -> pd.DataFrame:
    """`rows` with each decision's true untreated churn probability (p_true) and p_true x its action's true effect."""
    parts = []
    for as_of, group in rows.groupby("as_of"):
        ids = group["customer_id"].to_numpy()
        p = untreated_probability(settings.truth_dir, ids, as_of)
        e = true_effects(settings.raw_dir, settings.truth_dir, ids, group["action"].to_numpy(), as_of, scenario)
        parts.append(group.assign(p_true=p, pe_true=p * e))
    return pd.concat(parts).loc[rows.index]


def _cells(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of `by`: contacted (t) and held-out (h) outcomes, churners, predicted churn, and the true mean effect."""
    g = rows.assign(
        y_t=rows["churned"] & ~rows["holdout"], y_h=rows["churned"] & rows["holdout"],
        p_t=rows["churn_probability"].where(~rows["holdout"], 0.0), p_h=rows["churn_probability"].where(rows["holdout"], 0.0),
        n_t=~rows["holdout"], n_h=rows["holdout"],
    ).groupby(by)
    out = g[["n_t", "n_h", "y_t", "y_h", "p_t", "p_h", "pe_true", "p_true"]].sum()
    out["true_e"] = out["pe_true"] / out["p_true"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scenarios", default="priors-wrong,heterogeneous")
    parser.add_argument("--campaigns", type=int, default=6)
    args = parser.parse_args()
    pd.set_option("display.width", 250)
    pd.set_option("display.max_rows", 500)
    for scenario in args.scenarios.split(","):
        per_seed = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            root = args.workdir / f"seed-{seed}"
            settings = load_settings(data_dir=root / "data", mlruns_dir=root / "mlruns")
            rows, traits = _rows(root, scenario)
            rows = rows.astype({"holdout": bool, "churned": bool})
            rows = _truth(settings, rows, scenario)
            per_seed.append((seed, rows, traits))
        print(f"\n===== {scenario}: seeds {[s for s, *_ in per_seed]}; traits {per_seed[0][2]}")
        for k in (1, args.campaigns):
            kept = [r[r["campaign"].isin([f"round-{i}" for i in range(1, k + 1)])] for _, r, _ in per_seed]
            n = len(kept)
            print(f"\n--- after {k} campaign(s), mean per seed over {n} seeds")
            allrows = pd.concat([r.assign(seed=i) for i, r in enumerate(kept)])
            pooled = allrows[allrows["holdout"]]
            y_all, p_all = pooled["churned"].sum() / n, pooled["churn_probability"].sum() / n
            print(f"decisions {len(allrows) / n:,.0f} (held out {allrows['holdout'].sum() / n:,.0f}, churners held out "
                  f"{y_all:.1f}, predicted {p_all:.1f}: calibration theta {y_all / p_all:.2f} +- "
                  f"{np.sqrt(y_all) / p_all:.2f}); contacted churners {(allrows['churned'] & ~allrows['holdout']).sum() / n:.1f}")
            per_action = _cells(allrows, ["action"])
            per_action[["n_t", "n_h", "y_t", "y_h", "p_t", "p_h"]] /= n
            print(per_action[["n_t", "n_h", "y_t", "y_h", "p_t", "p_h", "true_e"]].round(2).to_string())
            tables = []
            for trait in per_seed[0][2]:
                cells = _cells(allrows, ["action", trait])
                cells[["n_t", "n_h", "y_t", "y_h", "p_t", "p_h"]] /= n
                # expected churner counts (at least 1) for the standard errors
                yt, yh = np.maximum(cells["y_t"], 1.0), np.maximum(cells["y_h"], 1.0)
                cells["se_holdout"] = np.sqrt(1 / yt + 1 / yh)
                cells["se_model"] = np.sqrt(1 / yt + 1 / max(y_all, 1.0))
                est_model = 1 - (cells["y_t"] / cells["p_t"]) / (y_all / p_all)
                cells["e_model"] = est_model
                est_hold = 1 - (cells["y_t"] / cells["p_t"]) / (cells["y_h"] / cells["p_h"])
                cells["e_holdout"] = est_hold
                tables.append(cells.reset_index().rename(columns={trait: "level"}).assign(trait=trait))
            table = pd.concat(tables, ignore_index=True)
            # the difference between two levels of an action: the best-measured pair's SE and power (model control)
            pairs = []
            for (action, trait), g in table.groupby(["action", "trait"]):
                g = g.sort_values("y_t", ascending=False)
                if len(g) < 2:
                    continue
                a, b = g.iloc[0], g.iloc[1]
                se_model = np.sqrt(1 / max(a["y_t"], 1) + 1 / max(b["y_t"], 1))
                se_model_own = np.sqrt(se_model**2 + 1 / max(a["y_h"], 1) + 1 / max(b["y_h"], 1))
                se_hold = np.sqrt(a["se_holdout"] ** 2 + b["se_holdout"] ** 2)
                pairs.append({
                    "action": action, "trait": trait, "levels": f"{a['level']}|{b['level']}",
                    "yt": f"{a['y_t']:.1f}|{b['y_t']:.1f}", "yh": f"{a['y_h']:.1f}|{b['y_h']:.1f}",
                    "true_e": f"{a['true_e']:.2f}|{b['true_e']:.2f}",
                    "se_diff_holdout": se_hold, "power_holdout": stats.norm.cdf(GAP / se_hold - Z),
                    "se_diff_model": se_model, "power_model": stats.norm.cdf(GAP / se_model - Z),
                    "se_diff_model_own_calib": se_model_own, "power_model_own": stats.norm.cdf(GAP / se_model_own - Z),
                })
            print("\nper action x level (per-seed means; true_e: the truth's mean effect there, weighted by untreated churn)")
            print(table[["action", "trait", "level", "n_t", "n_h", "y_t", "y_h", "true_e", "se_holdout", "se_model"]]
                  .round(2).to_string(index=False))
            print("\nthe two best-measured levels of each action x trait: SE of the difference of log(1 - e), and the power "
                  "to tell e = 0.45 from e = -0.05 (two-sided 5 %)")
            print(pd.DataFrame(pairs).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
