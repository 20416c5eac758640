"""How much of the oracle could effects learned by trait reach, with unlimited outcomes? (issue 15)

    PYTHONPATH=. .venv/bin/python benchmarks/trait_ceiling.py --workdir DIR [--seeds 0,1,2]
        [--scenarios priors-wrong,heterogeneous]

On the populations `benchmarks/policy.py --workdir DIR` built, at its evaluation date (6 campaigns),
the policy (the engine's allocation, the churn model's probability, the priors policy's spend)
deciding with effects that know part of the truth, the true mean effect (weighted by untreated
churn, over the customers eligible for the action) of:
- `cells`: each value segment x action (what the current learner can reach at best);
- `trait:<t>`: each segment x action x level of one trait t for every action;
- `best trait per action`: per action the trait whose levels' means spread the most (chosen
  by the truth: an upper bound of choosing the trait from outcomes);
- `only <action> by trait`: that action's best trait known, every other action's cells;
- `truth's trait functions` (heterogeneous): the simulator's own mean effect of every customer's
  traits (tenure in days, plan x price tier: finer than any categorical feature), without the
  hidden parts: the most any model of observable traits could know;
- `all traits`: each segment x action x combination of every trait's level (cells of a few
  customers: the most any model of these traits could know);
- `oracle_model_p`: every customer's true effect.
Whose true effects the means are taken over (`--source`):
- `in-sample`: the evaluation's own eligible customers (as policy.py's `cells_known` diagnostic):
  knowing a small group's in-sample mean means knowing its customers' own hidden effects, so a
  trait the truth does not use (region) then "helps";
- `cross-fit`: the other half of the evaluation's customers (split by a hash of the id);
- `rounds` (default): the eligible customers at the six campaign dates, each action's mean without
  the customers eligible for it at the evaluation: what unlimited outcomes of the campaigns'
  populations could teach, out of sample.
Traits: the data set's low-cardinality categorical features and the engine's lifecycle stage.
"""

from __future__ import annotations

import sys
from pathlib import Path

if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse

import numpy as np
import pandas as pd

from benchmarks.policy import HORIZON, _dates, _Evaluation, _population
from churn import clock
from churn.settings import load_settings
from features.truth import customer_state, effect_matrix, untreated_probability
from serving.policy import eligibility, lifecycle_stage_of
from serving.scoring import Scorer

MAX_LEVELS = 12


def _group_means(keys: np.ndarray, w: np.ndarray, e: np.ndarray) -> pd.DataFrame:
    """Per key (rows) and action (columns): sum(w e) / sum(w), NaN where sum(w) is 0."""
    num = pd.DataFrame(w * e).groupby(keys).sum()
    den = pd.DataFrame(w).groupby(keys).sum()
    return (num / den.where(den > 0)).astype(float)


def _known(source: dict[str, np.ndarray], keys: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Each target customer x action: the source's mean effect of their key, else of their segment, else 0.

    `source`: keys, segment, w (customers x actions: p_true where eligible and counted), e (true effects).
    """
    by_key = _group_means(source["keys"], source["w"], source["e"]).reindex(keys).to_numpy()
    by_segment = _group_means(source["segment"], source["w"], source["e"]).reindex(segment).to_numpy()
    return np.nan_to_num(np.where(np.isnan(by_key), by_segment, by_key), nan=0.0)


def _round_rows(settings, scores: dict, rounds: list, catalog, scenario: str, traits: list[str]) -> dict:
    """Every customer active at a campaign date (one row per customer x date): traits, eligibility, p_true, true effects."""
    frames, eligible, p, e = [], [], [], []
    for d in rounds:
        day = scores[d].copy()
        day["lifecycle_stage"] = lifecycle_stage_of(day, catalog.lifecycle)
        ids = day["customer_id"].to_numpy()
        frames.append(day[["customer_id", "segment", *traits]])
        eligible.append(eligibility(day, catalog))
        p.append(untreated_probability(settings.truth_dir, ids, d))
        e.append(effect_matrix(customer_state(settings.raw_dir, settings.truth_dir, ids, d), catalog.names, scenario))
    frame = pd.concat(frames, ignore_index=True)
    return {"frame": frame, "customer_id": frame["customer_id"].astype(str), "eligible": np.vstack(eligible),
            "p": np.concatenate(p), "e": np.vstack(e)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scenarios", default="priors-wrong,heterogeneous")
    parser.add_argument(
        "--source", choices=["in-sample", "cross-fit", "rounds"], default="rounds",
        help="whose true effects the means are taken over (see the module's docstring)",
    )
    args = parser.parse_args()
    results: dict[tuple[str, str], list[float]] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        root = args.workdir / f"seed-{seed}"
        settings = load_settings(data_dir=root / "data", mlruns_dir=root / "mlruns")
        rounds, evaluation = _dates(settings.simulation.start, 6)
        settings, scores = _population(root, seed, 0, [*rounds, evaluation])
        catalog = Scorer.load(settings).catalog
        day = scores[evaluation].copy()
        day["lifecycle_stage"] = lifecycle_stage_of(day, catalog.lifecycle)
        traits = [
            c for c in day.columns
            if day[c].dtype == object and c not in ("customer_id", "model_version", "segment", "risk_band") and day[c].nunique() <= MAX_LEVELS
        ]
        segment = day["segment"].astype(str).to_numpy()
        fold = (pd.util.hash_array(day["customer_id"].astype(str).to_numpy()) % 2).astype(int)
        for scenario in args.scenarios.split(","):
            sim = settings.simulation.model_copy(update={"scenario": scenario})
            pinned = clock.pinned(settings.model_copy(update={"simulation": sim}), evaluation + HORIZON)
            ev = _Evaluation.at(pinned, scores[evaluation], catalog, evaluation, scenario)
            w_ev = ev.p_true[:, None] * ev.eligible
            if args.source == "rounds":
                rows = _round_rows(pinned, scores, rounds, catalog, scenario, traits)
                # out of sample: no customer counts for an action they are eligible for at the evaluation
                at_eval = pd.DataFrame(ev.eligible, index=day["customer_id"].astype(str).to_numpy())
                excluded = at_eval.reindex(rows["customer_id"].to_numpy(), fill_value=False).to_numpy(dtype=bool)
                w_src, e_src = rows["p"][:, None] * rows["eligible"] * ~excluded, rows["e"]

            def known(key_of) -> np.ndarray:
                """Effects known at the granularity `key_of(frame)` gives, from the chosen source."""
                keys = key_of(day)
                if args.source == "in-sample":
                    return _known({"keys": keys, "segment": segment, "w": w_ev, "e": ev.true_effects}, keys, segment)
                if args.source == "cross-fit":
                    out = np.zeros_like(ev.true_effects)
                    for f in (0, 1):
                        src = fold != f
                        part = {"keys": keys[src], "segment": segment[src], "w": w_ev[src], "e": ev.true_effects[src]}
                        out[fold == f] = _known(part, keys[fold == f], segment[fold == f])
                    return out
                return _known({"keys": key_of(rows["frame"]), "segment": rows["frame"]["segment"].astype(str).to_numpy(),
                               "w": w_src, "e": e_src}, keys, segment)

            figures = {"oracle": ev.realised(ev.strategies(None, seed)["oracle"])[0], "priors": ev.realised(ev.policy(None))[0]}
            cell_means = known(lambda f: f["segment"].astype(str).to_numpy())
            figures["cells"] = ev.realised(ev.policy(cell_means))[0]
            spread, by_trait = {}, {}
            for t in traits:
                means = known(lambda f, t=t: f["segment"].astype(str).to_numpy() + "|" + f[t].astype(str).to_numpy())
                by_trait[t] = means
                figures[f"trait:{t}"] = ev.realised(ev.policy(means))[0]
                # how far each action's effect varies between the trait's levels (weighted by p_true x eligible)
                spread[t] = (w_ev * (means - cell_means) ** 2).sum(axis=0) / np.maximum(w_ev.sum(axis=0), 1e-12)
            best = np.array([max(traits, key=lambda t: spread[t][j]) for j in range(len(catalog.names))])
            per_action = np.column_stack([by_trait[t][:, j] for j, t in enumerate(best)])
            figures["best trait per action"] = ev.realised(ev.policy(per_action))[0]
            for j, name in enumerate(catalog.names):  # one action's trait known, the others' cells
                one = cell_means.copy()
                one[:, j] = per_action[:, j]
                figures[f"  only {name} by trait"] = ev.realised(ev.policy(one))[0]

            def every(f: pd.DataFrame) -> np.ndarray:
                out = f["segment"].astype(str).to_numpy().astype(object)
                for t in traits:
                    out = out + "|" + f[t].astype(str).to_numpy()
                return out

            figures["all traits"] = ev.realised(ev.policy(known(every)))[0]
            if scenario == "heterogeneous":  # the truth's own functions of traits (tenure in days too), no hidden part
                state = customer_state(pinned.raw_dir, pinned.truth_dir, day["customer_id"].to_numpy(), evaluation)
                explained = effect_matrix(state, catalog.names, scenario, explained=True)
                figures["truth's trait functions"] = ev.realised(ev.policy(explained))[0]
            figures["oracle_model_p"] = ev.realised(ev.diagnostics()["oracle_model_p"])[0]
            print(f"seed {seed}, {scenario}: best trait per action {dict(zip(catalog.names, best.tolist(), strict=True))}")
            for name, v in figures.items():
                results.setdefault((scenario, name), []).append(v)
    for scenario in args.scenarios.split(","):
        oracle = np.mean(results[(scenario, "oracle")])
        priors = np.mean(results[(scenario, "priors")])
        print(f"\n{scenario}: net value with effects known at each granularity (mean +- sd over seeds)")
        for (s, name), values in results.items():
            if s == scenario:
                m = np.mean(values)
                sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
                print(f"  {name:<28} {m:>8,.0f} +- {sd:>5,.0f}  {m / oracle:>5.0%} of oracle  {m / priors:>5.2f}x priors")


if __name__ == "__main__":
    main()
