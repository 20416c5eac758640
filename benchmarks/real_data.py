"""The engine on public data sets, beside the usual baselines on the same splits.

Each data set goes through the engine's own path, driven only by its config in `examples/`:
config -> ingest -> feature tables -> Feast apply -> point-in-time training set ->
evaluation. In the same run, on the same splits and the same columns:
- snapshot (Telco): logistic regression on one-hot features; logs (Online Retail, CDNOW):
  logistic regression on recency/frequency/monetary;
- LightGBM with default parameters; a small LightGBM tuned by hand (400 trees, learning
  rate 0.03, 15 leaves, min_child_samples 40, bagging 0.8, feature_fraction 0.7);
  scikit-learn's HistGradientBoosting with default parameters.
Every model is fitted the way `churn train` fits the engine: one model per split plus one on
the rows of the model to register, `--jobs` fits at a time in worker processes, each
single-threaded (`training.fits.fit_models`), once per model seed (`--seeds`, default 0,1,2:
the splits are the config's; the seed moves LightGBM's sampling and the engine's inner folds).
The worker processes are started before any timing. Prints ROC AUC, PR AUC and top-decile
lift (mean and spread over seeds x splits) and each model's mean wall time for evaluation
plus the final fit.

    PYTHONPATH=. .venv/bin/python benchmarks/real_data.py [--datasets ../shared/datasets] [--only telco] [--jobs 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import joblib
import numpy as np

from churn.settings import load_settings
from features.contract import Shape, load_contract
from features.build import build_features
from features.ingest import ingest
from features.store import apply_definitions
from training.backtest import METRICS, engine_model, held_out_predictions, summarize, training_data
from training.fits import fit_models, usable_cores
from training.baselines import DefaultLightGBM, HistGradientBoosting, OneHotLogistic, RFMLogistic, TunedLightGBM
from training.evaluate import churn_metrics

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"telco": "telco.yaml", "online_retail": "online_retail.yaml", "cdnow": "cdnow.toml"}


def run(config: Path, datasets: Path, work: Path, jobs: int | None, seeds: list[int]) -> tuple[dict, dict]:
    """The engine path on one config, then every model on the same splits (`jobs` None: one fit per usable core)."""
    jobs = jobs or usable_cores()
    timings = {}
    settings = load_settings(data_dir=work / "data", mlruns_dir=work / "mlruns")
    settings.ensure_dirs()
    contract, root = load_contract(config, data_root=datasets)
    start = time.perf_counter()
    ingest(contract, root, settings.ingested_dir)
    timings["ingest"] = time.perf_counter() - start
    start = time.perf_counter()
    build_features(settings.ingested_dir, settings.feature_tables_dir)
    apply_definitions(settings)
    data = training_data(settings)
    timings["features + training set"] = time.perf_counter() - start
    _warm_workers(jobs)
    y = data.frame["churned"].to_numpy()
    rows = [train_rows for train_rows, _ in data.splits] + [data.final_rows]
    results: dict[str, list] = {}  # model -> one metrics dict per (seed, split)
    walls: dict[str, list[float]] = {}  # model -> wall time per seed
    for seed in seeds:
        for name, make in _models(data, seed).items():
            start = time.perf_counter()
            fitted = fit_models(make, data.frame, y, rows, jobs)
            walls.setdefault(name, []).append(time.perf_counter() - start)
            results.setdefault(name, []).extend(
                {m: v for m, v in churn_metrics(y[test], predicted).items() if m in (*METRICS, "churn_rate")}
                for (_, test), (_, predicted) in zip(data.splits, held_out_predictions(data, make, models=fitted[:-1]))
            )
    info = {
        "rows": len(data.frame),
        "features": len(data.feature_names),
        "splits": data.split_names,
        "churn_rate": [r["churn_rate"] for r in next(iter(results.values()))[: len(data.splits)]],
        "timings": timings,
        "walls": walls,
        "jobs": jobs,
        "seeds": seeds,
        "left_out": data.left_out,
    }
    return results, info


def _models(data, seed: int) -> dict:
    """Every model of the comparison, as factories of unfitted models with the model seed `seed`."""
    def engine():
        model = engine_model(data)
        model.seed = seed
        return model

    models = {"engine (auto-tuned LightGBM)": engine}
    if data.contract.snapshot and data.contract.snapshot[1].shape == Shape.SNAPSHOT and not data.rfm:
        models["logistic regression, one-hot"] = lambda: OneHotLogistic(data.feature_names, data.categorical)
    else:
        models["logistic regression, RFM"] = lambda: RFMLogistic(data.rfm)
    # one thread each: `jobs` of them run at once, as the engine's fits do
    models["LightGBM defaults"] = lambda: DefaultLightGBM(data.feature_names, data.categorical, seed, n_jobs=1)
    models["LightGBM, small hand-tuned"] = lambda: TunedLightGBM(data.feature_names, data.categorical, seed, n_jobs=1)
    models["HistGradientBoosting defaults"] = lambda: HistGradientBoosting(data.feature_names, data.categorical, seed)
    return models


def _imports() -> None:
    import sklearn.ensemble  # noqa: F401
    import training.tuning  # noqa: F401


def _warm_workers(jobs: int) -> None:
    """Start the worker processes (and their imports) before any timing, so that no model pays for them."""
    joblib.Parallel(n_jobs=jobs)(joblib.delayed(_imports)() for _ in range(jobs))


def report(name: str, results: dict, info: dict) -> None:
    rates = ", ".join(f"{r:.1%}" for r in info["churn_rate"])
    print(f"\n## {name}: {info['rows']:,} training rows, {info['features']} features; splits: {', '.join(info['splits'])}")
    print(f"churn rate per split: {rates}; " + ", ".join(f"{k} {v:.0f}s" for k, v in info["timings"].items()))
    seeds = info["seeds"]
    print(f"wall time: evaluation ({len(info['splits'])} splits) plus the final fit, {info['jobs']} fit(s) at a time, "
          f"mean over model seeds {seeds}")
    for column, why in info["left_out"].items():
        print(f"left out {column}: {why}")
    print("| model | ROC AUC | PR AUC | top-decile lift | ROC AUC per split (seed mean) | ROC AUC per seed | wall time |")
    print("|---|---|---|---|---|---|---|")
    k = len(info["splits"])
    for model, runs in results.items():
        s = summarize(runs)
        cells = " | ".join(f"{s[m][0]:.3f} ± {s[m][1]:.3f}" for m in METRICS)
        per_split = " ".join(f"{np.mean([r['roc_auc'] for r in runs[i::k]]):.3f}" for i in range(k))
        per_seed = " ".join(f"{np.mean([r['roc_auc'] for r in runs[j * k:(j + 1) * k]]):.4f}" for j in range(len(seeds)))
        print(f"| {model} | {cells} | {per_split} | {per_seed} | {np.mean(info['walls'][model]):.1f} s |")
    names = list(results)
    auc = {m: summarize(results[m])["roc_auc"][0] for m in names}
    best = max(names[1:], key=auc.get)
    print(f"engine ROC AUC / best baseline ({best}): {auc[names[0]]:.4f} / {auc[best]:.4f} = {auc[names[0]] / auc[best]:.4f}")
    tuned = "LightGBM, small hand-tuned"
    engine_s, tuned_s = np.mean(info["walls"][names[0]]), np.mean(info["walls"][tuned])
    print(f"engine wall time / {tuned}: {engine_s:.1f} s / {tuned_s:.1f} s = {engine_s / tuned_s:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets", help="folder of the public data sets")
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append", help="run only these data sets")
    parser.add_argument("--jobs", type=int, default=usable_cores(), help="fits at a time (default: the usable cores)")
    parser.add_argument("--seeds", default="0,1,2", help="model seeds, comma-separated (each model is fitted once per seed)")
    parser.add_argument("--keep", type=Path, help="keep the engine's files under this folder (default: a temp folder)")
    args = parser.parse_args()
    if not args.datasets.exists():
        raise SystemExit(f"{args.datasets} not found; pass --datasets (see ../shared/datasets/README.md)")
    warnings.filterwarnings("ignore")
    for name in args.only or CONFIGS:
        work = Path(tempfile.mkdtemp(prefix=f"real-{name}-", dir=args.keep))
        try:
            results, info = run(ROOT / "examples" / CONFIGS[name], args.datasets, work, args.jobs, [int(x) for x in args.seeds.split(",")])
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        report(name, results, info)


if __name__ == "__main__":
    main()
