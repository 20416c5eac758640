"""Scale benchmark: every offline stage of the one path at `--customers` (default 1,000,000) on this machine.

Stages, the path of `churn demo` and of any data set: simulate (400 days) -> `churn ingest` of
the simulator's tables through their config (`<raw_dir>/simulated.yaml`, `features.ingest`)
-> feature build (`build_features`) -> feast apply -> labels at the training cutoffs
(`training.backtest.training_labels`) -> point-in-time training set (Feast) -> train
(`train`: evaluation, fits, calibration, value model, MLflow) -> score every active
customer -> bulk materialize into Redis (and SQLite). Each stage prints its wall time and the
peak resident memory of this process and its children while it ran (sampled every 50 ms).

Baselines measured in the same run, printed side by side:
- our PIT training set (Feast's DuckDB offline store, `historical_features`) vs a hand-written
  DuckDB ASOF JOIN (`features/pit.py`) on the same entity rows (values compared, rows
  counted); the baseline runs in a child process, as ours does at this size, and is timed
  there around the join alone;
- Feast's DuckDB store vs Feast's Dask (file) store on a sample of `--dask-rows` entity rows
  (off by default: the Dask store reads whole tables into pandas);
- chunked batch scoring (reading features included) vs raw `Booster.predict` of both models
  on the same rows already in memory as NumPy arrays;
- bulk materialize rate into Redis and into SQLite (customers per second).

`--sample-customers N` sets `training.sample_customers`: labels, the PIT training set and
training see N customers (a stable hash sample), scoring and materialization all of them.

Usage (from the project root):
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. .venv/bin/python benchmarks/scale.py --customers 1000000 --workdir /tmp/scale \
        --sample-customers 50000
The Redis database given by `--redis-url` receives the online features (default db 7).
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
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
import psutil


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    peak_rss_gb: float = 0.0
    facts: dict = field(default_factory=dict)


class PeakMemory:
    """Peak RSS of this process plus its children, sampled in a thread, reset per stage (and per step within one)."""

    def __init__(self, every: float = 0.05):
        self._proc = psutil.Process()
        self._every = every
        self.peak = self.step_peak = 0
        self._step = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stage = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            stage, step = self._stage, self._step
            rss = self._rss()
            with self._lock:  # a sample taken before `reset` must not carry the last stage's peak into the next
                if stage == self._stage:
                    self.peak = max(self.peak, rss)
                if step == self._step:
                    self.step_peak = max(self.step_peak, rss)
            time.sleep(self._every)

    def reset(self) -> None:
        with self._lock:
            self._stage += 1
            self.peak = self._rss()

    def reset_step(self) -> None:
        with self._lock:
            self._step += 1
            self.step_peak = self._rss()

    def stop(self) -> None:
        self._stop.set()


class StepClock:
    """`train`'s `step` callback: each step's wall time and peak memory (this process and its children)."""

    def __init__(self):
        self.done: list[tuple[str, float, int]] = []
        self._what, self._start = None, 0.0

    def __call__(self, what: str, done=None, total=None) -> None:
        if what == self._what:  # the same step reporting its parts
            return
        self.stop()
        MEMORY.reset_step()
        self._what, self._start = what, time.perf_counter()

    def stop(self) -> None:
        if self._what is not None:
            self.done.append((self._what, time.perf_counter() - self._start, MEMORY.step_peak))
            self._what = None


STAGES: list[Stage] = []
MEMORY: PeakMemory | None = None


@contextmanager
def stage(name: str):
    """Time a stage and record its peak memory; print it when done."""
    record = Stage(name)
    MEMORY.reset()
    start = time.perf_counter()
    yield record
    record.seconds = time.perf_counter() - start
    record.peak_rss_gb = MEMORY.peak / 1e9
    STAGES.append(record)
    facts = "  ".join(f"{k}={v}" for k, v in record.facts.items())
    print(f"{name:<34} {record.seconds:9.1f} s  peak {record.peak_rss_gb:6.2f} GB  {facts}", flush=True)


def _settings(workdir: Path, sample_customers: int | None = None, **overrides):
    from churn.settings import load_settings

    settings = load_settings(
        **{"data_dir": workdir / "data", "mlruns_dir": workdir / "mlruns", "training": {"sample_customers": sample_customers}, **overrides}
    )
    settings.ensure_dirs()
    return settings


def _dask_store(settings):
    """A FeatureStore on the same registry and tables whose offline store is Feast's Dask (file) store."""
    import yaml
    from feast import FeatureStore

    from features.store import _config

    repo = settings.data_dir / "feast_dask"
    repo.mkdir(parents=True, exist_ok=True)
    config = _config(settings)
    config["offline_store"] = {"type": "file"}
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return FeatureStore(repo_path=str(repo.resolve()))


def _data_end(settings) -> datetime:
    from features.build import read_views

    return datetime.fromisoformat(read_views(settings.feature_tables_dir)["data_end"])


def run(args: argparse.Namespace) -> None:
    from churn import clock
    from features.contract import load_contract
    from features.build import build_features
    from features.ingest import ingest
    from features.simulate import CONFIG_FILE, simulate
    from features.store import apply_definitions

    workdir = Path(args.workdir)
    settings = _settings(workdir, args.sample_customers)
    manifest = settings.raw_dir / "manifest.json"
    reuse = manifest.exists() and json.loads(manifest.read_text())["n_customers"] == args.customers and args.reuse
    with stage("simulate (400 days)") as s:
        if reuse:
            s.facts["reused"] = str(settings.raw_dir)
        else:
            sim = simulate(settings.raw_dir, settings.truth_dir, n_customers=args.customers, days=400, seed=42)
            s.facts.update(customers=f"{sim.n_customers:,}", events=f"{sim.n_events:,}", transactions=f"{sim.n_transactions:,}")

    built_before = (settings.feature_tables_dir / "views.json").exists()
    if args.scoring_only:
        if args.models_from:  # champions of another run's registry (same features), e.g. while this one trains
            settings = _settings(workdir, args.sample_customers, mlruns_dir=Path(args.models_from))
        settings = clock.pinned(settings, _data_end(settings))
        _scoring_and_materialize(args, workdir, settings)
        return
    reuse_features = reuse and args.reuse_features and built_before
    with stage("ingest (simulated.yaml)") as s:
        if reuse_features:
            s.facts["reused"] = str(settings.ingested_dir)
        else:
            contract, root = load_contract(settings.raw_dir / CONFIG_FILE)
            done = ingest(contract, root, settings.ingested_dir)
            s.facts.update(rows=f"{sum(done.rows.values()):,}", customers=f"{done.customers:,}")
    with stage("feature build (weekly engine)") as s:
        if reuse_features:
            s.facts["reused"] = str(settings.feature_tables_dir)
        else:
            built = build_features(settings.ingested_dir, settings.feature_tables_dir, memory_limit=args.duckdb_memory)
            s.facts.update(**{view: f"{n:,} rows" for view, n in built.rows.items()})
    settings = clock.pinned(settings, _data_end(settings))  # as `churn demo`: the clock at the end of the data

    with stage("feast apply") as s:
        apply_definitions(settings)
    _pit_and_train(args, settings)
    _scoring_and_materialize(args, workdir, settings)


def _pit_and_train(args: argparse.Namespace, settings) -> None:
    """Labels, our PIT training set and the ASOF baseline (values compared), then `train`."""
    from features.contract import Contract
    from features.definitions import service_name
    from features.ingest import read_manifest
    from features.pit import feature_columns
    from features.store import historical_features
    from training.backtest import training_labels
    from training.train import train

    contract = Contract.model_validate(read_manifest(settings.ingested_dir)["contract"])
    with stage("labels (training cutoffs)") as s:
        entity = training_labels(settings)
        s.facts.update(
            entity_rows=f"{len(entity):,}", cutoffs=entity["event_timestamp"].nunique(),
            customers=f"{entity['customer_id'].nunique():,}",
        )

    columns = feature_columns(settings.feature_tables_dir)
    if args.pit_rows and args.pit_rows < len(entity):  # the comparison holds both frames at once, in float64 for the baseline
        entity = entity.sample(args.pit_rows, random_state=0).reset_index(drop=True)
    with stage("PIT training set: Feast DuckDB") as s:
        ours = historical_features(settings, entity, service_name(contract.name), lean=True)  # as `training_data` joins it
        s.facts.update(rows=f"{len(ours):,}", one_per_entity_row=len(ours) == len(entity), features=len(columns))
    pit_ours = STAGES[-1].seconds
    with stage("PIT baseline: DuckDB ASOF JOIN") as s:
        reference, pit_ref = _asof_baseline(settings, entity, args.asof_memory)
        s.facts.update(rows=f"{len(reference):,}", join_seconds=f"{pit_ref:.1f}")
    # ours holds float32 where that is exact (`lean`): equal values, compared as numbers
    pd.testing.assert_frame_equal(
        ours[columns].reset_index(drop=True), reference[columns].reset_index(drop=True), check_dtype=False, check_exact=True
    )
    identical = True
    STAGES[-2].facts.update(ratio_to_asof=f"{pit_ours / pit_ref:.2f}x", values_identical=identical)
    print(f"  our PIT / ASOF JOIN time: {pit_ours / pit_ref:.2f}x; values identical: {identical}", flush=True)
    del reference, ours
    if args.dask_rows:  # Feast's Dask store reads whole tables into pandas (memory grows with them)
        _feast_stores(args, settings, entity, service_name(contract.name))
    del entity

    with stage("train (labels+PIT+evaluation+fits+MLflow)") as s:
        steps = StepClock()
        trained = train(settings, step=steps)
        steps.stop()
        auc = trained.summary["roc_auc"]
        s.facts.update(
            train_rows=f"{trained.n_train_rows:,}", churn_auc=f"{auc[0]:.3f}+-{auc[1]:.3f}",
            clv_spearman=f"{trained.clv_metrics['spearman']:.3f}" if trained.clv_metrics else "none",
        )
        for what, seconds, peak in steps.done:
            print(f"    {seconds:8.1f} s  peak {peak / 1e9:6.2f} GB  {what}", flush=True)
        s.facts["steps"] = [{"step": w, "seconds": round(t, 1), "peak_rss_gb": round(m / 1e9, 2)} for w, t, m in steps.done]


def _timed_asof_join(tables_dir: Path, entity: pd.DataFrame, memory_limit: str):
    """The hand-written ASOF join (in a process of its own): its rows as Arrow, and its seconds."""
    import pyarrow as pa

    from features.pit import asof_features

    start = time.perf_counter()
    out = asof_features(tables_dir, entity, memory_limit=memory_limit)
    seconds = time.perf_counter() - start
    return pa.Table.from_pandas(out, preserve_index=False), seconds


def _asof_baseline(settings, entity: pd.DataFrame, memory_limit: str) -> tuple[pd.DataFrame, float]:
    """The baseline join and the seconds of the join alone (without starting the process or the file).

    Our join of this size runs in a child process (`features.store.historical_features`), so
    the memory DuckDB keeps after it leaves with that process; the baseline gets the same, or
    what it keeps would sit under the training stage that follows. Its time is taken inside
    the child, around the join only, so the ratio does not charge it the process start that
    ours pays.
    """
    from churn.child import frame_from_child

    return frame_from_child(_timed_asof_join, (settings.feature_tables_dir, entity, memory_limit), settings.data_dir / "scratch")


def _feast_stores(args: argparse.Namespace, settings, entity: pd.DataFrame, service: str) -> None:
    """Feast's DuckDB offline store vs its Dask (file) store on the same sample of entity rows."""
    from features.store import feature_refs, feature_store

    sample = entity.sample(min(args.dask_rows, len(entity)), random_state=0)[["customer_id", "event_timestamp"]]
    with stage(f"Feast DuckDB store, {len(sample):,} rows") as s:
        duck = feature_store(settings).get_historical_features(
            entity_df=sample, features=feature_refs(feature_store(settings), service)
        ).to_df()
        s.facts["rows_returned"] = f"{len(duck):,}"
    duck_seconds = STAGES[-1].seconds
    with stage(f"Feast Dask store, {len(sample):,} rows") as s:
        dask_store = _dask_store(settings)
        dask_rows = dask_store.get_historical_features(entity_df=sample, features=feature_refs(dask_store, service)).to_df()
        s.facts["rows_returned"] = f"{len(dask_rows):,}"
    print(f"  Feast Dask store / Feast DuckDB store time: {STAGES[-1].seconds / duck_seconds:.2f}x", flush=True)
    STAGES[-1].facts["ratio_to_duckdb"] = f"{STAGES[-1].seconds / duck_seconds:.2f}x"
    del duck, dask_rows


def _scoring_and_materialize(args: argparse.Namespace, workdir: Path, settings) -> None:
    """Score every active customer, the raw-booster baseline, and bulk materialize (the stages after training)."""
    from churn import clock
    from features.definitions import FEATURE_TTL
    from features.online_bulk import materialize_bulk
    from features.pit import active_feature_batches
    from features.store import active_customers, feature_refs, feature_store, latest_snapshot
    from serving.bulk_scoring import score_all
    from serving.scoring import Scorer
    from training.dataset import to_matrix

    as_of = latest_snapshot(settings, clock.now(settings))
    scorer = Scorer.load(settings)
    with stage("score all active (chunked)") as s:
        scored = score_all(settings, scorer, as_of, chunk_rows=args.chunk_rows)
        s.facts.update(rows=f"{scored.rows:,}", chunks=scored.chunks, rows_per_s=f"{scored.rows_per_second:,.0f}")
    with stage("baseline: raw Booster.predict") as s:
        customers = active_customers(settings, as_of)["customer_id"]
        frame = pd.concat(
            active_feature_batches(settings.feature_tables_dir, as_of, args.chunk_rows, customers=customers), ignore_index=True
        )
        x_churn = to_matrix(frame, scorer.churn.feature_names, scorer.churn.categories)
        x_clv = None if scorer.clv is None else to_matrix(frame, scorer.clv.feature_names, scorer.clv.categories)
        del frame, customers
        start = time.perf_counter()
        scorer.churn.booster.predict(x_churn)
        if x_clv is not None:
            scorer.clv.booster.predict(x_clv)
        raw = len(x_churn) / (time.perf_counter() - start)
        s.facts.update(rows=f"{len(x_churn):,}", rows_per_s=f"{raw:,.0f}", ours_vs_raw=f"{scored.rows_per_second / raw:.0%}")
        del x_churn, x_clv

    redis_settings = clock.pinned(
        _settings(workdir, args.sample_customers, online_store="redis", redis_url=args.redis_url), settings.now
    )
    with stage("materialize bulk -> Redis") as s:
        done = materialize_bulk(redis_settings, as_of - FEATURE_TTL, as_of)
        s.facts.update(customers=f"{done.customers:,}", customers_per_s=f"{done.customers_per_second:,.0f}")
    if not args.skip_sqlite:
        with stage("materialize bulk -> SQLite") as s:
            done = materialize_bulk(settings, as_of - FEATURE_TTL, as_of)
            s.facts.update(customers=f"{done.customers:,}", customers_per_s=f"{done.customers_per_second:,.0f}")
    # the online store answers through Feast's own reader, as the service reads it
    ids = pd.read_parquet(scored.path, columns=["customer_id"])["customer_id"].head(5).tolist()
    service = scorer.feature_services
    online = feature_store(redis_settings).get_online_features(
        features=feature_refs(feature_store(redis_settings), service), entity_rows=[{"customer_id": i} for i in ids]
    ).to_df()
    names = [r.split(":", 1)[1] for r in feature_refs(feature_store(redis_settings), service)]
    assert online[names].notna().any(axis=1).all(), "online store misses active customers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--workdir", default="/tmp/churn-scale")
    parser.add_argument("--reuse", action="store_true", help="reuse raw tables of the same size in workdir")
    parser.add_argument(
        "--dask-rows", type=int, default=0, help="entity rows for the Feast DuckDB vs Dask comparison (0: skip it)"
    )
    parser.add_argument(
        "--reuse-features", action="store_true", help="with --reuse, also reuse the ingested data and feature tables in workdir"
    )
    parser.add_argument(
        "--sample-customers", type=int, default=None,
        help="training.sample_customers: customers of the labels, PIT training set and training (default: all)",
    )
    parser.add_argument(
        "--pit-rows", type=int, default=None,
        help="entity rows (a random sample of the training labels) of the PIT comparison; default: all. "
        "`train` joins every row either way",
    )
    parser.add_argument("--chunk-rows", type=int, default=200_000, help="customers per scoring chunk")
    parser.add_argument("--duckdb-memory", default="4GB", help="DuckDB memory limit of the feature build")
    parser.add_argument(
        "--asof-memory", default="4GB",
        help="DuckDB memory limit of the ASOF baseline (ours runs Feast's store under offline.memory_limit, 2 GB)",
    )
    parser.add_argument("--redis-url", default="127.0.0.1:6379,db=7")
    parser.add_argument("--skip-sqlite", action="store_true", help="skip the SQLite materialization")
    parser.add_argument(
        "--scoring-only", action="store_true",
        help="reuse the feature tables and registered models of an earlier run in workdir: only score, baseline, materialize",
    )
    parser.add_argument("--models-from", help="with --scoring-only: the mlruns folder to load the champion models from")
    parser.add_argument("--json", help="also write the stage figures to this file")
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    global MEMORY
    MEMORY = PeakMemory()
    print(f"scale benchmark: {args.customers:,} customers, workdir {args.workdir}", flush=True)
    start = time.perf_counter()
    try:
        run(args)
    finally:
        MEMORY.stop()
        total = time.perf_counter() - start
        peak = max((s.peak_rss_gb for s in STAGES), default=0.0)
        print(f"{'total':<34} {total:9.1f} s  peak {peak:6.2f} GB (max over stages)", flush=True)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {"customers": args.customers, "sample_customers": args.sample_customers, "total_seconds": total, "peak_rss_gb": peak,
                     "stages": [s.__dict__ for s in STAGES]},
                    indent=2, default=str,
                )
            )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
