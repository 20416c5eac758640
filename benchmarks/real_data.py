"""The engine on public data sets, beside the usual baselines on the same splits.

Each data set goes through the engine's own path, driven only by its config in `examples/`:
config -> ingest -> feature tables -> Feast apply -> point-in-time training set ->
evaluation. In the same run, on the same splits:
- snapshot (Telco): logistic regression on one-hot features, LightGBM with default
  parameters on the raw columns; 5 stratified folds;
- logs (Online Retail, CDNOW): logistic regression on recency/frequency/monetary, LightGBM
  with default parameters on the engine's own features; rolling cutoffs.
Prints ROC AUC, PR AUC and top-decile lift (mean and spread over the splits) per model.

    PYTHONPATH=. .venv/bin/python benchmarks/real_data.py [--datasets ../shared/datasets] [--only telco]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from churn.settings import load_settings
from features.contract import Shape, load_contract
from features.build import build_features
from features.ingest import ingest
from features.store import apply_definitions
from training.backtest import METRICS, backtest, training_data, engine_model, summarize
from training.baselines import DefaultLightGBM, OneHotLogistic, RFMLogistic

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"telco": "telco.yaml", "online_retail": "online_retail.yaml", "cdnow": "cdnow.toml"}


def run(config: Path, datasets: Path, work: Path) -> tuple[dict, dict]:
    """The engine path on one config, then every model on the same splits."""
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
    seed = contract.evaluation.seed
    models = {"engine (auto-tuned LightGBM)": lambda: engine_model(data)}
    if contract.snapshot and contract.snapshot[1].shape == Shape.SNAPSHOT and not data.rfm:
        models["logistic regression, one-hot"] = lambda: OneHotLogistic(data.feature_names, data.categorical)
        models["LightGBM defaults, raw columns"] = lambda: DefaultLightGBM(data.feature_names, data.categorical, seed)
    else:
        models["logistic regression, RFM"] = lambda: RFMLogistic(data.rfm)
        models["LightGBM defaults, engine features"] = lambda: DefaultLightGBM(data.feature_names, data.categorical, seed)
    start = time.perf_counter()
    results = backtest(data, models)
    timings["evaluation (all models)"] = time.perf_counter() - start
    info = {
        "rows": len(data.frame),
        "features": len(data.feature_names),
        "splits": data.split_names,
        "churn_rate": [r["churn_rate"] for r in next(iter(results.values()))],
        "timings": timings,
    }
    return results, info


def report(name: str, results: dict, info: dict) -> None:
    rates = ", ".join(f"{r:.1%}" for r in info["churn_rate"])
    print(f"\n## {name}: {info['rows']:,} training rows, {info['features']} features; splits: {', '.join(info['splits'])}")
    print(f"churn rate per split: {rates}; " + ", ".join(f"{k} {v:.0f}s" for k, v in info["timings"].items()))
    print("| model | ROC AUC | PR AUC | top-decile lift | ROC AUC per split |")
    print("|---|---|---|---|---|")
    for model, per_split in results.items():
        s = summarize(per_split)
        cells = " | ".join(f"{s[m][0]:.3f} ± {s[m][1]:.3f}" for m in METRICS)
        per = " ".join(f"{r['roc_auc']:.3f}" for r in per_split)
        print(f"| {model} | {cells} | {per} |")
    engine = summarize(next(iter(results.values())))["roc_auc"][0]
    best = max(summarize(r)["roc_auc"][0] for m, r in list(results.items())[1:])
    print(f"engine ROC AUC / best baseline: {engine:.4f} / {best:.4f} = {engine / best:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets", help="folder of the public data sets")
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append", help="run only these data sets")
    parser.add_argument("--keep", type=Path, help="keep the engine's files under this folder (default: a temp folder)")
    args = parser.parse_args()
    if not args.datasets.exists():
        raise SystemExit(f"{args.datasets} not found; pass --datasets (see ../shared/datasets/README.md)")
    warnings.filterwarnings("ignore")
    for name in args.only or CONFIGS:
        work = Path(tempfile.mkdtemp(prefix=f"real-{name}-", dir=args.keep))
        try:
            results, info = run(ROOT / "examples" / CONFIGS[name], args.datasets, work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        report(name, results, info)


if __name__ == "__main__":
    main()
