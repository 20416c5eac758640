"""Serving benchmark: /score latency and throughput, our BentoML service beside its baselines.

    PYTHONPATH=. .venv/bin/python benchmarks/serving.py --workdir /tmp/churn-bench --seconds 5

All in one run, on this machine, over loopback, one customer per request and batches of 100,
at concurrency 1 and 8:
- floor: the same online read + booster predict + risk band / segment, in process, no HTTP;
- FastAPI: a plain FastAPI app (uvicorn, one worker) calling the very same service code;
- BentoML on the SQLite online store, and BentoML on Redis (our service as deployed,
  API-key check included).
The floor and FastAPI read Redis, like the service they are compared with. The first run
builds a small engine as `churn demo` does (simulate, ingest, features, train) in `--workdir`;
later runs reuse it.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from fastapi import FastAPI
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.load import LoadResult, run_load  # noqa: E402
from churn import clock  # noqa: E402
from churn.settings import Settings, load_settings  # noqa: E402
from serving.launch import running, serve_command, serve_env  # noqa: E402
from serving.service import ChurnService, CustomerIds, ScoreResponse  # noqa: E402

API_KEY = "benchmark-key-5e1f0c9d8b7a6f5e"
REDIS_DB = 6  # this project's database on the shared local Redis
PORTS = {"fastapi": 3610, "bentoml-sqlite": 3611, "bentoml-redis": 3612}
WORKLOADS = [(1, 1), (1, 8), (100, 1), (100, 8)]  # (ids per request, concurrency)


@dataclass(frozen=True)
class Engines:
    sqlite: Settings
    redis: Settings
    customer_ids: list[str]


def prepare(workdir: Path, customers: int, redis_url: str) -> Engines:
    """A trained engine on SQLite (built once, as `churn demo` builds it) and a copy of its features in Redis."""
    from datetime import datetime

    from features.contract import load_contract
    from features.build import build_features
    from features.ingest import ingest, read_manifest
    from features.simulate import CONFIG_FILE, simulate
    from features.store import active_customers, apply_definitions, materialize
    from training.train import train

    sqlite = load_settings(data_dir=workdir / "data", mlruns_dir=workdir / "mlruns")
    sqlite.ensure_dirs()
    ready_mark = workdir / ".trained"
    if not ready_mark.exists():
        print(f"building a {customers}-customer engine in {workdir} (first run only) ...", flush=True)
        simulate(sqlite.raw_dir, sqlite.truth_dir, n_customers=customers, seed=11)
        contract, root = load_contract(sqlite.raw_dir / CONFIG_FILE)  # the simulator is an ingested data set
        ingest(contract, root, sqlite.ingested_dir)
        build_features(sqlite.ingested_dir, sqlite.feature_tables_dir)
        apply_definitions(sqlite)
        as_of = datetime.fromisoformat(read_manifest(sqlite.ingested_dir)["data_end"])
        materialize(sqlite, as_of)
        train(clock.pinned(sqlite, as_of))
        ready_mark.touch()
    as_of = datetime.fromisoformat(read_manifest(sqlite.ingested_dir)["data_end"])
    sqlite = clock.pinned(sqlite, as_of)  # both services decide at the end of the data, on any date
    on_redis = load_settings(
        data_dir=workdir / "redis-data", mlruns_dir=workdir / "mlruns", online_store="redis", redis_url=redis_url,
        now=as_of,
    )
    on_redis.ensure_dirs()
    shutil.copytree(sqlite.ingested_dir, on_redis.ingested_dir, dirs_exist_ok=True)  # the same data set
    for table in sqlite.feature_tables_dir.iterdir():
        if table.is_file():  # the tables and their views.json
            shutil.copy(table, on_redis.feature_tables_dir / table.name)
    apply_definitions(on_redis)
    materialize(on_redis, as_of)
    ids = active_customers(sqlite, as_of)["customer_id"].astype(str).tolist()
    return Engines(sqlite, on_redis, ids)


def _env(settings: Settings) -> dict[str, str]:
    """What `churn serve` runs the service with (both servers get it), with this checkout and the benchmark key."""
    return serve_env(
        settings,
        PYTHONPATH=str(ROOT),
        CHURN_SERVING__API_KEYS=f'["{API_KEY}"]',
        BENTOML_HOME=str((settings.data_dir / "bentoml_home").resolve()),
    )


class ScoreRequest(BaseModel):
    """The body of /score, for the FastAPI baseline."""

    customer_ids: CustomerIds


def baseline_app() -> FastAPI:
    """The FastAPI baseline (a uvicorn factory): the service's own code behind a plain FastAPI route."""
    service = ChurnService.inner()
    app = FastAPI()

    @app.post("/score", response_model=ScoreResponse)
    def score(request: ScoreRequest):
        return service.score(customer_ids=request.customer_ids)

    @app.get("/ready")
    async def ready():
        return await service.readiness()

    return app


def _bodies(ids: list[str], size: int):
    rng = random.Random(size)

    def make(i: int) -> dict:
        return {"customer_ids": rng.sample(ids, size)}

    return make


def floor(settings: Settings, ids: list[str], size: int, concurrency: int, seconds: float) -> LoadResult:
    """The work of /score with no HTTP: online read, both boosters, bands; `concurrency` threads."""
    from features.store import feature_store
    from serving.online import FastScorer, OnlineReader
    from serving.scoring import Scorer

    scorer = Scorer.load(settings)
    reader = OnlineReader(feature_store(settings), scorer.feature_services, scorer.required_features)
    fast = FastScorer(scorer)
    make = _bodies(ids, size)
    result = LoadResult()
    lock = threading.Lock()

    def worker(w: int, deadline: float) -> None:
        n = 0
        while time.perf_counter() < deadline:
            batch = make(w * 1_000_003 + n)["customer_ids"]
            n += 1
            start = time.perf_counter()
            rows = reader.read(batch)
            fast.score(rows.take(rows.complete), explain=True)
            with lock:
                result.latencies.append(time.perf_counter() - start)
                result.statuses[200] = result.statuses.get(200, 0) + 1

    for phase_seconds in (1.0, seconds):  # warm-up, then measured
        result.latencies.clear()
        result.statuses.clear()
        deadline = time.perf_counter() + phase_seconds
        threads = [threading.Thread(target=worker, args=(w, deadline)) for w in range(concurrency)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        result.elapsed = time.perf_counter() - began
    return result


def _row(name: str, size: int, concurrency: int, r: LoadResult) -> str:
    return (
        f"| {name:<15} | {size:>3} | {concurrency:>2} | {r.percentile_ms(50):7.2f} | {r.percentile_ms(99):7.2f} "
        f"| {r.throughput:8.0f} | {r.requests:>6} | {r.errors:>3} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/churn-bench"))
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="Measured seconds per cell (after 1 s warm-up).")
    parser.add_argument("--redis-url", default=f"127.0.0.1:6379,db={REDIS_DB}")
    args = parser.parse_args()

    host, port = args.redis_url.split(",")[0].split(":")
    db = int(args.redis_url.split("db=")[1]) if "db=" in args.redis_url else 0
    redis.Redis(host=host, port=int(port), db=db).flushdb()  # our own database: start from what we materialize
    engines = prepare(args.workdir, args.customers, args.redis_url)
    logs = args.workdir / "logs"
    logs.mkdir(exist_ok=True)
    results: dict[tuple[str, int, int], LoadResult] = {}
    startup: dict[str, float] = {}

    for size, concurrency in WORKLOADS:
        results[("floor", size, concurrency)] = floor(
            engines.redis, engines.customer_ids, size, concurrency, args.seconds
        )
    py = sys.executable
    servers = {
        "fastapi": (
            [py, "-m", "uvicorn", "benchmarks.serving:baseline_app", "--factory", "--host", "127.0.0.1",
             "--port", str(PORTS["fastapi"]), "--log-level", "warning", "--no-access-log"],
            engines.redis, "/ready",
        ),
        "bentoml-sqlite": (serve_command("127.0.0.1", PORTS["bentoml-sqlite"]), engines.sqlite, "/readyz"),
        "bentoml-redis": (serve_command("127.0.0.1", PORTS["bentoml-redis"]), engines.redis, "/readyz"),
    }
    for name, (command, settings, ready_path) in servers.items():
        base = f"http://127.0.0.1:{PORTS[name]}"
        with running(
            command, _env(settings), base + ready_path, logs / f"{name}.log",
            headers={"Authorization": f"Bearer {API_KEY}"}, cwd=ROOT,
        ) as seconds_to_ready:
            startup[name] = seconds_to_ready
            for size, concurrency in WORKLOADS:
                results[(name, size, concurrency)] = run_load(
                    f"{base}/score", _bodies(engines.customer_ids, size), concurrency, args.seconds,
                    headers={"Authorization": f"Bearer {API_KEY}"},
                )

    print(f"\n/score, {args.seconds:.0f} s per cell after 1 s warm-up, {len(engines.customer_ids)} active customers")
    print("| system          | ids | c  | p50 ms  | p99 ms  | req/s    | n      | err |")
    print("|-----------------|-----|----|---------|---------|----------|--------|-----|")
    for name in ["floor", *servers]:
        for size, concurrency in WORKLOADS:
            print(_row(name, size, concurrency, results[(name, size, concurrency)]))
    print("\nseconds from launch to ready: " + ", ".join(f"{k} {v:.1f}" for k, v in startup.items()))

    ours, base = results[("bentoml-redis", 1, 1)], results[("fastapi", 1, 1)]
    ours8, base8 = results[("bentoml-redis", 1, 8)], results[("fastapi", 1, 8)]
    errors = sum(r.errors for r in results.values())
    checks = [
        ("p50 one customer, Redis <= 5 ms", ours.percentile_ms(50), ours.percentile_ms(50) <= 5),
        ("p99 one customer, Redis <= 15 ms", ours.percentile_ms(99), ours.percentile_ms(99) <= 15),
        ("p50 / FastAPI p50 <= 1.5", ours.percentile_ms(50) / base.percentile_ms(50),
         ours.percentile_ms(50) <= 1.5 * base.percentile_ms(50)),
        ("req/s at c=8 / FastAPI's >= 0.5", ours8.throughput / base8.throughput, ours8.throughput >= 0.5 * base8.throughput),
        ("errors in all cells == 0", errors, errors == 0),
        ("seconds from launch to ready, Redis <= 10", startup["bentoml-redis"], startup["bentoml-redis"] <= 10),
    ]
    print("\nacceptance (BentoML on Redis, one customer per request):")
    for label, value, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}: {value:.2f}")
    sys.exit(0 if all(ok for *_, ok in checks) else 1)


if __name__ == "__main__":
    main()
