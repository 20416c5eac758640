"""A wide snapshot as warehouses export them: 50,000 customers, 60 columns, a 750-value category.

The table (`write_wide_snapshot`, made up here, seeded) has what a telecom export has: a
service-area code of 750 values (a few hundred customers in the big areas, a handful in the
small ones), a dozen small categories and a 40-value handset model, 40 numbers (usage,
charges, minutes) of which some carry the churn signal, some are noise and some have holes,
an account number (one per customer: id-like), an agent's free-text note, a constant column,
and a 0/1 churn label. Run through the documented CLI
(`churn ingest` -> `features build` -> `features apply` -> `train` -> `features materialize`
-> `score`), it shows that such a table trains and scores without a hand repair, how long
`churn train` takes, and what it leaves out; beside it, in the same run, the small hand-tuned
LightGBM of `benchmarks/real_data.py` on the same 5 folds (wall time and ROC AUC).

    PYTHONPATH=. .venv/bin/python benchmarks/wide_snapshot.py [--rows 50000] [--workdir /tmp/wide]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
AREAS = 750


def write_wide_snapshot(folder: Path, rows: int = 50_000, seed: int = 0) -> Path:
    """The table (`wide.csv`) and its config (`wide.yaml`) in `folder`; returns the config's path."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    # area sizes: Zipf-like, so the big areas hold hundreds of customers and the tail a handful
    weights = 1.0 / np.arange(1, AREAS + 1) ** 0.9
    area = rng.choice(AREAS, rows, p=weights / weights.sum())
    area_effect = rng.normal(0, 0.5, AREAS)  # some areas churn more (a competitor's coverage)
    columns: dict[str, np.ndarray] = {
        "customer_id": np.array([f"CU{i:07d}" for i in rng.permutation(rows)]),
        "service_area": np.array([f"{'ABCDEFGH'[a % 8]}{a:04d}" for a in area]),
        "account_number": rng.permutation(rows) + 1_000_000,
        "market": np.full(rows, "national"),
    }
    logit = -1.6 + area_effect[area]
    for k in range(12):
        values = rng.choice([f"level_{j}" for j in range(2 + k)], rows)
        columns[f"category_{k:02d}"] = values
        if k < 3:
            logit = logit + 0.4 * (values == "level_0")
    for k in range(40):
        x = rng.normal(0, 1, rows)
        if k < 8:
            logit = logit + (0.5 if k % 2 else -0.5) * x
        values = np.round(50 + 20 * x, 2)
        if k % 10 == 9:
            values = np.where(rng.random(rows) < 0.1, np.nan, values)  # holes
        columns[f"usage_{k:02d}"] = values
    columns["handset"] = np.array([f"model-{m}" for m in rng.integers(0, 40, rows)])
    topics = np.array(["billing", "coverage", "roaming", "a new handset", "the contract", "a dropped call"])
    columns["agent_note"] = np.array(  # a note per call: mostly distinct, as typed notes are
        [f"called about {topics[t]}, ticket {k}; asked for a callback" for t, k in zip(rng.integers(0, 6, rows), rng.integers(100_000, 999_999, rows))]
    )
    columns["months_in_service"] = rng.integers(1, 72, rows)
    logit = logit - 0.02 * columns["months_in_service"]
    columns["churn"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(columns)
    frame.to_csv(folder / "wide.csv", index=False)
    config = {
        "name": "wide",
        "data_root": ".",
        "sources": {
            "subscribers": {
                "shape": "snapshot", "path": "wide.csv", "customer_id": "customer_id", "as_of": "2024-06-01",
                "label": "churn", "tenure": "months_in_service", "tenure_unit": "months",
                "columns": {"account_number": "categorical"},
            }
        },
        "churn": {"definition": "label", "horizon_days": 30},
        "evaluation": {"folds": 5, "seed": 0},
    }
    path = folder / "wide.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _churn(args: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "churn"), *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"churn {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temp folder)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="wide-"))
    try:
        config = write_wide_snapshot(work / "source", args.rows)
        env = {**os.environ, "CHURN_DATA_DIR": str(work / "data"), "CHURN_MLRUNS_DIR": str(work / "mlruns"), "COLUMNS": "200"}
        print(f"{args.rows:,} rows x {len(pd.read_csv(work / 'source' / 'wide.csv', nrows=1).columns)} columns, "
              f"{AREAS} service areas; {os.cpu_count()} cores")
        for step in (["ingest", "--config", str(config)], ["features", "build"], ["features", "apply"], ["train"],
                     ["features", "materialize"], ["score"]):
            took, out = _churn(step, env)
            print(f"churn {' '.join(step[:2]) if step[0] == 'features' else step[0]}: {took:.1f} s")
            if step == ["train"]:
                print("\n".join(line for line in out.splitlines() if "ROC AUC" in line or "left out" in line))
        _tuned_beside(work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _tuned_beside(work: Path) -> None:
    """The small hand-tuned LightGBM on the engine's 5 folds of the same training set, fitted as the engine's fits are."""
    sys.path.insert(0, str(ROOT))
    from churn.settings import load_settings
    from training.backtest import training_data
    from training.baselines import TunedLightGBM
    from training.evaluate import churn_metrics
    from training.fits import fit_models

    data = training_data(load_settings(data_dir=work / "data", mlruns_dir=work / "mlruns"))
    y = data.frame["churned"].to_numpy()
    start = time.perf_counter()
    rows = [train for train, _ in data.splits] + [data.final_rows]
    fitted = fit_models(lambda: TunedLightGBM(data.feature_names, data.categorical, n_jobs=1), data.frame, y, rows)
    took = time.perf_counter() - start
    aucs = [churn_metrics(y[test], m.predict(data.frame.iloc[test]))["roc_auc"] for m, (_, test) in zip(fitted, data.splits)]
    print(f"small hand-tuned LightGBM, same folds and columns: ROC AUC {np.mean(aucs):.3f} ± {np.std(aucs):.3f}, "
          f"evaluation plus fit {took:.1f} s")


if __name__ == "__main__":
    main()
