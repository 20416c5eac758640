"""Feature engines benchmark: the simulator's builder vs the weekly engine of ingested logs.

On the same simulated company (`--customers`, 400 days): `features/build.py`
(`build_feature_tables` on the raw tables) against `features/weekly.py` on the same tables
brought through `churn ingest` with the simulator's own config (`features.simulate.write_config`:
its event types declared as signals), as `churn demo` does.
Prints each stage's wall time and the peak resident memory of this process (sampled every
50 ms), then the two engines side by side with the ratio.

Usage (from the project root):
    PYTHONPATH=. .venv/bin/python benchmarks/feature_engines.py --customers 20000 --workdir /tmp/engines
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path: put the project root in its place.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
from datetime import datetime

from benchmarks import scale
from benchmarks.scale import STAGES, PeakMemory, stage


def run(args: argparse.Namespace) -> None:
    from features.build import build_feature_tables
    from features.contract import load_contract
    from features.ingest import ingest, read_manifest
    from features.simulate import simulate, write_config
    from features.weekly import weekly_log_features

    workdir = Path(args.workdir)
    raw_dir = workdir / "raw"
    manifest = raw_dir / "manifest.json"
    with stage("simulate (400 days)") as s:
        if manifest.exists() and json.loads(manifest.read_text())["n_customers"] == args.customers:
            s.facts["reused"] = str(raw_dir)
        else:
            sim = simulate(raw_dir, workdir / "truth", n_customers=args.customers, days=400, seed=42)
            s.facts.update(customers=f"{sim.n_customers:,}", events=f"{sim.n_events:,}", transactions=f"{sim.n_transactions:,}")

    with stage("simulator's builder (build.py)") as s:  # its four views: 29 features in all
        built = build_feature_tables(raw_dir, workdir / "sim_tables", memory_limit=args.memory)
        s.facts.update(rows=f"{built.rows:,}", partitions=built.partitions)
    simulator = STAGES[-1]

    # the simulator's tables as `churn demo` ingests them (their own contract config)
    contract, _ = load_contract(write_config(raw_dir))
    ingested = workdir / "ingested"
    with stage("ingest (churn ingest)") as s:
        if args.reuse and (ingested / "manifest.json").exists():
            s.facts["reused"] = str(ingested)
        else:
            done = ingest(contract, raw_dir, ingested)
            s.facts.update(customers=f"{done.customers:,}", rows=f"{sum(done.rows.values()):,}")

    meta = read_manifest(ingested)
    end = datetime.fromisoformat(meta["data_end"])
    with stage("weekly engine (weekly.py)") as s:
        for name in ("events", "payments"):
            table = weekly_log_features(
                ingested / f"{name}.parquet", name, contract, end, meta["types"][name],
                workdir / "weekly_tables" / f"sim_{name}.parquet", memory_limit=args.memory,
            )
            s.facts[f"{name}_rows"] = f"{table.rows:,}"
            s.facts[f"{name}_columns"] = len(table.fields)
        s.facts["partitions"] = table.partitions
    weekly = STAGES[-1]
    print(
        f"  weekly engine / simulator's builder: time {weekly.seconds / simulator.seconds:.2f}x, "
        f"peak RSS {weekly.peak_rss_gb / simulator.peak_rss_gb:.2f}x",
        flush=True,
    )
    common, differ = _agreement(workdir / "sim_tables", workdir / "weekly_tables" / "sim_events.parquet")
    print(f"  declared signals vs the simulator's own features: {common:,} common rows, {differ} differ", flush=True)


def _agreement(sim_tables: Path, events_table: Path) -> tuple[int, int]:
    """Rows at which both engines have the customer, and how many of them disagree.

    The signals declared in the simulator's config (`features.simulate.write_config`) are its
    own features under the same names (active days, tickets, complaints, failed payments, last
    NPS, days since the last activity): on a (customer, stamp) both tables hold, they must be
    equal.
    """
    import duckdb

    row = duckdb.connect().execute(
        f"""
        WITH sim AS (
            SELECT CAST(customer_id AS VARCHAR) AS customer_id, event_timestamp, b.active_days_7d, b.active_days_28d,
                b.active_days_91d, b.days_since_last_activity, e.tickets_28d, e.tickets_91d, e.complaints_28d,
                e.complaints_91d, e.last_nps, l.payment_failures_28d, l.payment_failures_91d
            FROM read_parquet('{sim_tables}/behavioral.parquet') b
            JOIN read_parquet('{sim_tables}/experience.parquet') e USING (customer_id, event_timestamp)
            JOIN read_parquet('{sim_tables}/lifecycle.parquet') l USING (customer_id, event_timestamp)
        )
        SELECT count(*), count(*) FILTER (WHERE
            s.active_days_7d <> o.active_days_7d OR s.active_days_28d <> o.active_days_28d
            OR s.active_days_91d <> o.active_days_91d OR s.tickets_28d <> o.tickets_28d OR s.tickets_91d <> o.tickets_91d
            OR s.complaints_28d <> o.complaints_28d OR s.complaints_91d <> o.complaints_91d
            OR s.payment_failures_28d <> o.payment_failures_28d OR s.payment_failures_91d <> o.payment_failures_91d
            OR s.last_nps IS DISTINCT FROM o.last_survey_score
            -- the simulator counts from signup when there is no activity yet; the generic engine says null
            OR (o.days_since_last_active IS NOT NULL AND s.days_since_last_activity <> o.days_since_last_active))
        FROM sim s JOIN read_parquet('{events_table}') o USING (customer_id, event_timestamp)
        """
    ).fetchone()
    return row[0], row[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--workdir", default="/tmp/churn-engines")
    parser.add_argument("--reuse", action="store_true", help="reuse the ingested tables in workdir (same --customers)")
    parser.add_argument("--memory", default="4GB", help="DuckDB memory limit of both engines")
    parser.add_argument("--json", help="also write the stage figures to this file")
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    scale.MEMORY = PeakMemory()
    print(f"feature engines benchmark: {args.customers:,} customers, workdir {args.workdir}", flush=True)
    try:
        run(args)
    finally:
        scale.MEMORY.stop()
        if args.json:
            Path(args.json).write_text(
                json.dumps({"customers": args.customers, "stages": [s.__dict__ for s in STAGES]}, indent=2, default=str)
            )


if __name__ == "__main__":
    main()
