"""The ledger work of a 1-customer `/interventions` call, on an empty ledger and on one of 500,000 recent decisions.

    PYTHONPATH=. .venv/bin/python benchmarks/ledger.py [--postgres URL] [--rows N] [--calls C]

On two fresh PostgreSQL databases (made on the server of `--postgres`, dropped at the end)
it times `decide_campaign` for one customer per call, as the service calls it (deadline
`timeouts.ledger_seconds`, the packaged catalog without its budget so that each call decides
afresh): the locks, the customer's decision in the campaign, its recent actions in other
campaigns, the campaign's spend, the insert and the read-back. One ledger is empty; the
other holds `--rows` decisions (default 500,000) made within the last 170 days: 40 % of them
in the campaign the calls decide, the rest in 30 other campaigns, every customer once, and
the timed customers among them (so their cooldown reads find rows). The calls alternate
between the two ledgers, so that both see the same load of a shared machine. The engine's
clock is pinned (2026-11-01), as in the other benchmarks.

Baseline: what a call read before issue 16, once each on the full ledger: every action of
the cooldown period (`recent_actions` without customers) and the whole campaign
(`campaign_decisions`).
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
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa

from churn.settings import TimeoutSettings
from serving.batch import decide_campaign
from serving.ledger import Ledger
from serving.policy import load_catalog, max_cooldown_days

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)
CAMPAIGN = "online-20261101"


def _one_customer(customer_id: int, rng: np.random.Generator) -> pd.DataFrame:
    """One scored customer with the columns `decide` reads (a high-risk, high-value one: an action is worth it)."""
    return pd.DataFrame(
        {
            "customer_id": [customer_id],
            "churn_probability": [rng.uniform(0.3, 0.9)],
            "clv": [rng.gamma(4.0, 150.0)],
            "segment": ["high"],
            "risk_band": ["high"],
            "tenure_days": [int(rng.integers(0, 800))],
            "activity_trend_7d_28d": [rng.uniform(0, 2)],
            "complaints_28d": [int(rng.integers(0, 2))],
            "payment_failures_28d": [int(rng.integers(0, 2))],
            "model_version": ["churn-risk/1;customer-clv/1"],
        }
    )


def time_calls(ledgers: list[Ledger], customer_ids: list[list[int]], seconds: float) -> list[np.ndarray]:
    """Milliseconds of `decide_campaign` for each customer, one call each, alternating between the ledgers."""
    catalog = load_catalog().model_copy(update={"budget": None})
    rng = np.random.default_rng(16)
    times: list[list[float]] = [[] for _ in ledgers]
    for calls in zip(*customer_ids, strict=True):
        for i, (ledger, customer) in enumerate(zip(ledgers, calls, strict=True)):
            scores = _one_customer(customer, rng)
            began = time.perf_counter()
            recorded = decide_campaign(
                scores, catalog, ledger, CAMPAIGN, as_of=NOW, decided_at=NOW, deadline=time.monotonic() + seconds
            )
            times[i].append((time.perf_counter() - began) * 1000)
            assert len(recorded) == 1
    return [np.array(t) for t in times]


def fill(url: str, rows: int) -> None:
    """`rows` decisions within the last 170 days: 40 % in CAMPAIGN, the rest in 30 other campaigns; spend kept."""
    in_campaign = int(rows * 0.4)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO decisions (campaign, customer_id, action, channel, cost, expected_value, churn_probability,
                                   clv, segment, risk_band, reason, model_version, decided_at, holdout, as_of)
            SELECT CASE WHEN g <= %(in_campaign)s THEN %(campaign)s ELSE 'run-' || (g %% 30) END,
                   g::text,
                   (ARRAY['none', 'reengagement_message', 'discount_offer', 'service_recovery'])[1 + g %% 4],
                   'email', (g %% 4) * 2.0, 1.0, 0.3, 400.0, 'high', 'high', 'benchmark row', 'churn-risk/1',
                   %(now)s - make_interval(days => g %% 170, secs => g %% 86400), g %% 5 = 0,
                   %(now)s - make_interval(days => g %% 170)
            FROM generate_series(1, %(rows)s) AS g
            """,
            {"rows": rows, "in_campaign": in_campaign, "campaign": CAMPAIGN, "now": NOW},
        )
        conn.execute("INSERT INTO customer_locks SELECT customer_id FROM decisions ON CONFLICT DO NOTHING")
        conn.execute(
            """
            INSERT INTO campaign_spend (campaign, action, contacts, cost)
            SELECT campaign, action, count(*), sum(cost) FROM decisions WHERE action <> 'none' GROUP BY campaign, action
            ON CONFLICT (campaign, action) DO UPDATE SET contacts = excluded.contacts, cost = excluded.cost
            """
        )
        conn.execute("VACUUM ANALYZE")  # now, not by autovacuum during the timed calls


def _summary(label: str, rows: int, times: np.ndarray) -> str:
    return (
        f"| {label} | {rows:,} | {np.median(times):.2f} | {np.quantile(times, 0.95):.2f} | {times.max():.2f} |"
    )


@dataclass(frozen=True)
class LedgerFigures:
    """Milliseconds per call on each ledger, and the baseline reads on the full one."""

    rows: int
    empty: np.ndarray
    full: np.ndarray
    filled_seconds: float
    period_ms: float | None = None
    period_rows: int = 0
    campaign_ms: float | None = None
    campaign_rows: int = 0

    @property
    def ratio(self) -> float:
        """Median on the full ledger over median on the empty one."""
        return float(np.median(self.full) / np.median(self.empty))


def measure(postgres: str, rows: int, calls: int, baseline: bool = True) -> LedgerFigures:
    """Time the calls on an empty and a full ledger made on the server of `postgres` (dropped afterwards)."""
    tag = uuid.uuid4().hex[:8]
    databases = [f"churn_bench_ledger_empty_{tag}", f"churn_bench_ledger_full_{tag}"]
    with psycopg.connect(postgres, autocommit=True, connect_timeout=5) as admin:
        for database in databases:
            admin.execute(f"CREATE DATABASE {database}")
    server = sa.engine.make_url(postgres.replace("postgresql://", "postgresql+psycopg://", 1))
    urls = [server.set(database=d).render_as_string(hide_password=False) for d in databases]
    timeouts = TimeoutSettings()
    ledgers = []
    try:
        ledgers = [
            Ledger(url, timeout_seconds=timeouts.ledger_seconds, connect_timeout_seconds=timeouts.ledger_connect_seconds)
            for url in urls
        ]
        began = time.perf_counter()
        fill(urls[1].replace("postgresql+psycopg://", "postgresql://", 1), rows)
        filled_seconds = time.perf_counter() - began
        # in the full ledger, customers past the campaign's share: each has one recent action in another campaign
        start = int(rows * 0.4) + 1
        fresh = [20_000_000 + i for i in range(20 + calls)]
        known = list(range(start, start + 20 + calls))
        time_calls(ledgers, [fresh[:20], known[:20]], timeouts.ledger_seconds)  # warm the pools and caches
        empty, full = time_calls(ledgers, [fresh[20:], known[20:]], timeouts.ledger_seconds)
        figures = LedgerFigures(rows, empty, full, filled_seconds)
        if baseline:
            since = pd.Timestamp(NOW) - pd.Timedelta(days=max_cooldown_days(load_catalog()))
            began = time.perf_counter()
            period = ledgers[1].recent_actions(since, pd.Timestamp(NOW), exclude_campaign=CAMPAIGN)
            period_ms = (time.perf_counter() - began) * 1000
            began = time.perf_counter()
            campaign = ledgers[1].campaign_decisions(CAMPAIGN)
            campaign_ms = (time.perf_counter() - began) * 1000
            figures = LedgerFigures(
                rows, empty, full, filled_seconds, period_ms, len(period), campaign_ms, len(campaign)
            )
        return figures
    finally:
        for ledger in ledgers:
            ledger.close()
        with psycopg.connect(postgres, autocommit=True, connect_timeout=5) as admin:
            for database in databases:
                admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres", help="server (admin database)")
    parser.add_argument("--rows", type=int, default=500_000, help="recent decisions in the full ledger")
    parser.add_argument("--calls", type=int, default=200, help="timed 1-customer calls per ledger")
    args = parser.parse_args()
    f = measure(args.postgres, args.rows, args.calls)
    print(f"1-customer decide_campaign on PostgreSQL, {args.calls} calls per ledger, alternating (filled in {f.filled_seconds:.1f} s)\n")
    print("| ledger | decisions | median ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    print(_summary("empty", 0, f.empty))
    print(_summary("recent decisions", f.rows, f.full))
    print(f"\nratio of medians (full / empty): {f.ratio:.2f}  (acceptance: within 2)")
    print(f"ratio of p95: {np.quantile(f.full, 0.95) / np.quantile(f.empty, 0.95):.2f}")
    print(
        f"\nbaseline, what a call read before: every action of the cooldown period {f.period_ms:,.0f} ms "
        f"({f.period_rows:,} rows), the whole campaign {f.campaign_ms:,.0f} ms ({f.campaign_rows:,} rows)"
    )


if __name__ == "__main__":
    main()
