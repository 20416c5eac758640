"""The embedded raw-data source: a seeded simulator of a subscription business.

It writes the four raw tables of the raw-data contract (`docs/raw-data-contract.md`):
customers, events, transactions, cancellations, plus the hidden truth that no model may
read (each customer's hidden traits, from which `features/truth.py` computes what each
retention action would do at a decision date, and true untreated churn probabilities at
requested dates), so that a policy can later be scored against what would really have happened.

How churn arises, and what the truth keeps: `_World` and `_write_truth`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PLANS = ("monthly", "annual")
PRICE_TIERS = ("basic", "standard", "premium")
TIER_PRICE = np.array([9.99, 19.99, 39.99])
CHANNELS = ("organic", "paid_search", "referral", "partner")
REGIONS = ("north", "south", "east", "west")
EVENT_TYPES = ("activity", "support_ticket", "complaint", "nps", "payment_failed", "downgrade")
TRANSACTION_KINDS = ("subscription", "addon")
# Retention actions whose true effect the simulator knows; serving/actions.yaml uses these names.
ACTIONS = (
    "onboarding_activation",
    "advisor_call",
    "discount_offer",
    "reengagement_message",
    "service_recovery",
    "payment_rescue",
    "early_warning_offer",
)

_EVENTS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("event_type", pa.string()),
        ("value", pa.float64()),
    ]
)
_TRANSACTIONS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("transaction_time", pa.timestamp("us", tz="UTC")),
        ("kind", pa.string()),
        ("amount", pa.float64()),
    ]
)
_NEVER = np.iinfo(np.int32).max
_FLUSH_EVERY_DAYS = 61


@dataclass(frozen=True)
class SimulationResult:
    """Where the simulator wrote its tables and what it simulated."""

    raw_dir: Path
    truth_dir: Path
    n_customers: int
    n_events: int
    n_transactions: int
    n_cancellations: int
    as_of: datetime


class _Buffer:
    """Collects daily rows as arrays and flushes them to one Parquet file in row groups."""

    def __init__(self, path: Path, schema: pa.Schema, time_col: str, label_col: str, labels: tuple[str, ...]):
        self._writer = pq.ParquetWriter(path, schema)
        self._schema = schema
        self._time_col = time_col
        self._label_col = label_col
        self._labels = np.array(labels, dtype=object)
        self._parts: list[tuple[np.ndarray, ...]] = []
        self.rows = 0

    def add(self, customer_idx: np.ndarray, times_us: np.ndarray, label: int, value: np.ndarray) -> None:
        if len(customer_idx):
            self._parts.append((customer_idx, times_us, np.full(len(customer_idx), label, np.int8), value))

    def flush(self) -> None:
        if not self._parts:
            return
        cols = [np.concatenate(c) for c in zip(*self._parts)]
        self._parts = []
        order = np.argsort(cols[1], kind="stable")
        table = pa.table(
            {
                "customer_id": pa.array(cols[0][order].astype(np.int64) + 1),
                self._time_col: pa.array(cols[1][order], type=pa.timestamp("us", tz="UTC")),
                self._label_col: pa.array(self._labels[cols[2][order]], type=pa.string()),
                self._schema.names[3]: pa.array(cols[3][order].astype(np.float64)),
            },
            schema=self._schema,
        )
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        self.flush()
        self._writer.close()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _Tables:
    """Where a simulated day's rows go: the events and transactions buffers, with time stamps."""

    def __init__(self, raw_dir: Path, rng: np.random.Generator, day0_us: int):
        self.events = _Buffer(raw_dir / "events.parquet", _EVENTS_SCHEMA, "event_time", "event_type", EVENT_TYPES)
        self.transactions = _Buffer(
            raw_dir / "transactions.parquet", _TRANSACTIONS_SCHEMA, "transaction_time", "kind", TRANSACTION_KINDS
        )
        self._rng = rng
        self._day0_us = day0_us

    def stamp(self, world: _World, day: int, idx: np.ndarray) -> np.ndarray:
        # a random time in the day, but never before the customer signed up on that day
        earliest = np.where(world.signup_day[idx] == day, world.signup_seconds[idx] * 1_000_000, 0)
        return self._day0_us + day * _DAY_US + self._rng.integers(earliest, _DAY_US, len(idx))

    def event(self, world: _World, day: int, idx: np.ndarray, kind: str, value: np.ndarray) -> None:
        self.events.add(world.row_id[idx], self.stamp(world, day, idx), EVENT_TYPES.index(kind), value)

    def transaction(self, world: _World, day: int, idx: np.ndarray, kind: str, value: np.ndarray) -> None:
        self.transactions.add(world.row_id[idx], self.stamp(world, day, idx), TRANSACTION_KINDS.index(kind), value)


_DAY_US = 86_400 * 1_000_000
# per-customer arrays of the world: traits that never change, then the state a day changes
_TRAITS = ("row_id", "signup_day", "signup_seconds", "plan", "tier", "channel", "region", "base", "trait_hazard", "shock_hazard")
_STATE = (
    "mood", "dis_start", "dis_len", "recovers", "away_until", "cancel_day", "cancel_reason", "doomed_from",
    "last_complaint", "last_payment_failure", "retry_day", "retries", "current_tier",
)


class _World:
    """Every customer's traits and state as arrays, and the rules of one simulated day (`live`).

    How churn arises (what the models can and cannot see coming):
    - every customer has a base engagement, set partly by observable traits (channel, tier),
      plus a slow random mood (an AR(1) process) and spells away (1-3 weeks of little activity
      that end by themselves), so activity dips happen without churn;
    - each day an active customer may *start to disengage*, with a hazard raised by low
      engagement, a recent complaint, a recent failed payment, early tenure, a monthly plan
      and paid acquisition; engagement then falls over 2-8 weeks (20 % within 1-3 days),
      tickets become likelier, downgrades happen; a quarter recover, the rest leave;
    - each day an active customer may also decide to leave *without any decline first* (a
      competitor's offer, a move, a price they no longer accept): a shock, likelier on monthly
      plans, after paid acquisition and after a failed payment;
    - a leaver cancels at the next billing day (monthly) or mostly at renewal (annual);
    - failed payments that fail again on retry end the subscription (involuntary churn).
    `doomed_from` is the day a customer's departure got under way (the first day of a decline
    they will not recover from, or the day of a shock or of the second failed payment): the
    hidden truth's lost causes.
    """

    def __init__(self, **arrays: np.ndarray):
        for name in _TRAITS + _STATE:
            setattr(self, name, arrays[name])

    def rows(self, rows: np.ndarray) -> _World:
        """A copy of the given rows (repeated rows make independent copies of a customer)."""
        return _World(**{name: getattr(self, name)[rows].copy() for name in _TRAITS + _STATE})

    def live(self, t: int, rng: np.random.Generator, tables: _Tables | None) -> None:
        """Live day `t`. With `tables` None (a rollout of the truth), only what decides churn is drawn."""
        idx = np.flatnonzero((self.signup_day <= t) & (self.cancel_day > t))
        self.mood[idx] = 0.97 * self.mood[idx] + rng.normal(0, 0.15, len(idx))

        # disengagement: engagement falls over dis_len days, then the customer leaves or recovers
        disengaging = self.dis_start[idx] <= t
        progress = np.where(
            disengaging, np.clip((t - self.dis_start[idx] + 1) / np.maximum(self.dis_len[idx], 1), 0, 1), 0.0
        )
        away = self.away_until[idx] > t
        engagement = self.base[idx] + self.mood[idx] - 3.2 * progress - 2.2 * away

        # entering disengagement, or deciding to leave at once (a shock), among the calm
        calm = idx[~disengaging & (self.cancel_day[idx] == _NEVER)]
        tenure = t - self.signup_day[calm]
        recent_failure = t - self.last_payment_failure[calm] < 30
        log_h = (
            np.log(0.0011)
            - 0.6 * (self.base[calm] + self.mood[calm])
            + self.trait_hazard[calm]
            + 1.1 * (t - self.last_complaint[calm] < 30)
            + 0.9 * recent_failure
            + 0.5 * (tenure < 90)
        )
        u = rng.random(len(calm))
        starts = calm[u < np.exp(log_h)]
        self.dis_start[starts] = t
        sudden = rng.random(len(starts)) < 0.2
        self.dis_len[starts] = np.where(sudden, rng.integers(1, 4, len(starts)), rng.integers(14, 57, len(starts)))
        self.recovers[starts] = rng.random(len(starts)) < 0.25
        self.doomed_from[starts[~self.recovers[starts]]] = t
        shocked = calm[(u >= np.exp(log_h)) & (rng.random(len(calm)) < np.exp(self.shock_hazard[calm] + 0.8 * recent_failure))]
        self.doomed_from[shocked] = t
        self._schedule_cancel(shocked, t, rng, midterm_share=0.3)

        # away spells: a week or three of little activity, then back as before
        gone = calm[rng.random(len(calm)) < 0.003]
        self.away_until[gone] = t + rng.integers(7, 22, len(gone))

        # end of the fall (its last day, or later for a fall begun today and shorter than a day's step)
        ends = idx[disengaging & (t - self.dis_start[idx] + 1 >= self.dis_len[idx]) & (self.cancel_day[idx] == _NEVER)]
        back = ends[self.recovers[ends]]
        self.dis_start[back] = _NEVER
        self._schedule_cancel(ends[~self.recovers[ends]], t, rng, midterm_share=0.2)

        # a customer who cancels today is not active today
        keep = self.cancel_day[idx] > t
        idx, engagement, disengaging = idx[keep], engagement[keep], disengaging[keep]

        # support tickets and complaints (likelier while disengaging); complaints raise the hazard
        p_ticket = 0.003 + 0.012 * disengaging
        tickets = idx[rng.random(len(idx)) < p_ticket]
        complaints = tickets[rng.random(len(tickets)) < 0.3]
        self.last_complaint[complaints] = t
        # unprompted complaints (service outages) that may start a disengagement
        outages = idx[rng.random(len(idx)) < 0.0008]
        self.last_complaint[outages] = t
        if tables is not None:
            self._activity(t, rng, tables, idx, engagement, disengaging)
            tables.event(self, t, tickets, "support_ticket", np.ones(len(tickets)))
            tables.event(self, t, complaints, "complaint", np.ones(len(complaints)))
            tables.event(self, t, outages, "complaint", np.ones(len(outages)))

        # billing: monthly every 30 days, annual every 365 days from signup; retries 3 days after a failure
        age = t - self.signup_day[idx]
        cycle = np.where(self.plan[idx] == 0, 30, 365)
        due = idx[(age % cycle == 0) | (self.retry_day[idx] == t)]
        fail_p = np.where(self.channel[due] == 1, 0.05, 0.025) + np.where(self.retry_day[due] == t, 0.35, 0.0)
        failed = rng.random(len(due)) < fail_p
        paid = due[~failed]
        self.retry_day[paid] = _NEVER
        self.retries[paid] = 0
        bad = due[failed]
        self.last_payment_failure[bad] = t
        second = bad[self.retries[bad] >= 1]
        self.doomed_from[second] = np.minimum(self.doomed_from[second], t)
        self.cancel_day[second] = np.minimum(self.cancel_day[second], t + 1)
        self.cancel_reason[second] = 1
        first = bad[self.retries[bad] == 0]
        self.retries[first] = 1
        self.retry_day[first] = t + 3
        if tables is not None:
            price = TIER_PRICE[self.current_tier[paid]] * np.where(self.plan[paid] == 0, 1.0, 10.0)
            tables.transaction(self, t, paid, "subscription", price)
            tables.event(self, t, bad, "payment_failed", TIER_PRICE[self.current_tier[bad]])

    def _schedule_cancel(self, leave: np.ndarray, t: int, rng: np.random.Generator, midterm_share: float) -> None:
        """Leavers cancel at the next billing day (monthly), or at once or at renewal (annual)."""
        age = t - self.signup_day[leave]
        next_monthly = t + (30 - age % 30) % 30
        next_renewal = t + (365 - age % 365) % 365
        midterm = rng.random(len(leave)) < midterm_share
        self.cancel_day[leave] = np.where(self.plan[leave] == 0, next_monthly, np.where(midterm, t, next_renewal))

    def _activity(
        self, t: int, rng: np.random.Generator, tables: _Tables, idx: np.ndarray, engagement: np.ndarray, disengaging: np.ndarray
    ) -> None:
        """What shows in the tables but does not decide churn: sessions, NPS, downgrades, add-ons."""
        active_today = rng.random(len(idx)) < _sigmoid(1.1 * engagement + 0.3)
        a_idx = idx[active_today]
        sessions = 1 + rng.poisson(np.exp(0.35 * engagement[active_today]))
        tables.event(self, t, a_idx, "activity", sessions)
        # NPS answers, roughly one a quarter
        nps = rng.random(len(idx)) < 1 / 90
        score = np.clip(np.round(7 + 1.4 * engagement[nps] + rng.normal(0, 1.6, nps.sum())), 0, 10)
        tables.event(self, t, idx[nps], "nps", score)
        # downgrades while disengaging (monthly plans above basic)
        down = idx[disengaging & (self.plan[idx] == 0) & (self.current_tier[idx] > 0) & (rng.random(len(idx)) < 0.012)]
        self.current_tier[down] -= 1
        tables.event(self, t, down, "downgrade", TIER_PRICE[self.current_tier[down]])
        # add-on purchases by engaged customers
        buyers = idx[rng.random(len(idx)) < 0.004 * np.exp(0.5 * engagement)]
        tables.transaction(self, t, buyers, "addon", np.round(rng.lognormal(2.4, 0.5, len(buyers)), 2))


def _new_world(rng: np.random.Generator, n: int, days: int) -> _World:
    """Customers with their observable traits (and the hidden ones the truth keeps), before day 0."""
    existing = rng.random(n) < 0.35
    signup_day = np.where(existing, -rng.integers(1, 540, n), rng.integers(0, days - 14, n)).astype(np.int32)
    plan = (rng.random(n) < 0.3).astype(np.int8)  # 1 = annual
    tier = rng.choice(3, n, p=[0.5, 0.35, 0.15]).astype(np.int8)
    channel = rng.choice(4, n, p=[0.4, 0.3, 0.15, 0.15]).astype(np.int8)
    region = rng.integers(0, 4, n).astype(np.int8)
    signup_seconds = rng.integers(0, 86_400, n)
    base = 0.7 + np.array([0.2, -0.3, 0.4, 0.0])[channel] + 0.2 * tier + rng.normal(0, 0.6, n)
    trait_hazard = np.array([0.0, 0.45, -0.3, 0.1])[channel] + 0.35 * (plan == 0) - 0.15 * tier
    # shocks: about 0.0005 a day (a few % a year); monthly plans and paid acquisition more
    shock_hazard = np.log(0.00025) + 0.5 * (plan == 0) + 0.4 * (channel == 1) + rng.normal(0, 0.3, n)
    return _World(
        row_id=np.arange(n, dtype=np.int64), signup_day=signup_day, signup_seconds=signup_seconds, plan=plan, tier=tier,
        channel=channel, region=region, base=base, trait_hazard=trait_hazard, shock_hazard=shock_hazard,
        mood=rng.normal(0, 0.5, n), dis_start=np.full(n, _NEVER, np.int32), dis_len=np.zeros(n, np.int32),
        recovers=np.zeros(n, bool), away_until=np.full(n, -1, np.int32), cancel_day=np.full(n, _NEVER, np.int32),
        cancel_reason=np.zeros(n, np.int8), doomed_from=np.full(n, _NEVER, np.int32),
        last_complaint=np.full(n, -_NEVER, np.int64), last_payment_failure=np.full(n, -_NEVER, np.int64),
        retry_day=np.full(n, _NEVER, np.int32), retries=np.zeros(n, np.int8), current_tier=tier.copy(),
    )


def untreated_churn(world: _World, day: int, horizon_days: int, rollouts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each active customer's true probability of cancelling within `horizon_days` from the start of `day`.

    Active: signed up before the day, not cancelled before it. The probability is the share of
    `rollouts` independent continuations of the world from that morning (its own random
    stream, so the tables do not change) in which the customer cancels within the horizon;
    a cancellation already scheduled inside it counts in every rollout.
    Returns the customers' row indices and their probabilities.
    """
    idx = np.flatnonzero((world.signup_day < day) & (world.cancel_day >= day))
    copies = world.rows(np.repeat(idx, rollouts))
    rng = np.random.default_rng([seed, day, 1])
    for t in range(day, day + horizon_days):
        copies.live(t, rng, None)
    left = copies.cancel_day < day + horizon_days
    return idx, left.reshape(len(idx), rollouts).mean(axis=1)


def simulate(
    raw_dir: Path,
    truth_dir: Path,
    n_customers: int = 20_000,
    start: date = date(2024, 11, 1),
    days: int = 730,
    seed: int = 42,
    progress=None,
    truth_dates: list[date] = (),
    horizon_days: int = 30,
    rollouts: int = 32,
) -> SimulationResult:
    """Simulate `n_customers` over `days` days from `start` and write the raw tables and the hidden truth.

    `truth_dates`: decision dates at which the truth records each active customer's true
    probability of churning within `horizon_days` uncontacted (`untreated_churn`, from
    `rollouts` continuations; each date costs about as much as simulating the whole span
    again); benchmarks that score strategies against the truth ask for their decision dates.
    `progress`, if given, is called with the number of days just
    simulated (for a progress bar). The same arguments always write the same tables and truth.
    """
    raw_dir = Path(raw_dir)
    truth_dir = Path(truth_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_customers
    day0_us = int(datetime.combine(start, time(), tzinfo=timezone.utc).timestamp() * 1_000_000)
    truth_days = sorted({(d - start).days for d in truth_dates})
    outside = [str(start + timedelta(days=d)) for d in truth_days if not 0 < d <= days - horizon_days]
    if outside:
        raise ValueError(
            f"truth dates {outside} are outside the simulated span: a decision date needs a day before it and "
            f"{horizon_days} days after it, between {start + timedelta(days=1)} and {start + timedelta(days=days - horizon_days)}"
        )

    world = _new_world(rng, n, days)
    tables = _Tables(raw_dir, rng, day0_us)
    untreated = []
    for t in range(days):
        if t in truth_days:
            rows, p = untreated_churn(world, t, horizon_days, rollouts, seed)
            untreated.append(pd.DataFrame({"customer_id": rows + 1, "as_of": start + timedelta(days=t), "churn_probability": p}))
        world.live(t, rng, tables)
        if (t + 1) % _FLUSH_EVERY_DAYS == 0:
            tables.events.flush()
            tables.transactions.flush()
        if progress is not None:
            progress(1)
    tables.events.close()
    tables.transactions.close()

    ids = np.arange(1, n + 1, dtype=np.int64)
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_at": pd.to_datetime(
                day0_us + world.signup_day.astype(np.int64) * _DAY_US + world.signup_seconds * 1_000_000, unit="us", utc=True
            ),
            "plan": pd.Categorical.from_codes(world.plan, PLANS).astype(str),
            "price_tier": pd.Categorical.from_codes(world.tier, PRICE_TIERS).astype(str),
            "monthly_price": TIER_PRICE[world.tier],
            "channel": pd.Categorical.from_codes(world.channel, CHANNELS).astype(str),
            "region": pd.Categorical.from_codes(world.region, REGIONS).astype(str),
        }
    )
    customers.to_parquet(raw_dir / "customers.parquet", index=False)

    gone = np.flatnonzero(world.cancel_day < days)
    # a customer who leaves on their signup day leaves after signing up
    same_day_earliest = np.where(world.cancel_day[gone] == world.signup_day[gone], world.signup_seconds[gone] * 1_000_000, 0)
    cancellations = pd.DataFrame(
        {
            "customer_id": ids[gone],
            "cancelled_at": pd.to_datetime(
                day0_us + world.cancel_day[gone].astype(np.int64) * _DAY_US + rng.integers(same_day_earliest, _DAY_US),
                unit="us",
                utc=True,
            ),
            "reason": np.where(world.cancel_reason[gone] == 1, "payment_failed", "voluntary"),
        }
    ).sort_values("cancelled_at", kind="stable")
    cancellations.to_parquet(raw_dir / "cancellations.parquet", index=False)

    _write_truth(truth_dir, rng, ids, world, start, days, untreated, horizon_days)
    as_of = datetime.combine(start, time(), tzinfo=timezone.utc) + pd.Timedelta(days=days)
    (raw_dir / "manifest.json").write_text(
        json.dumps(
            {"source": "simulator", "seed": seed, "n_customers": n, "start": start.isoformat(), "as_of": as_of.isoformat()},
            indent=2,
        )
    )
    write_config(raw_dir)
    return SimulationResult(
        raw_dir, truth_dir, n, tables.events.rows, tables.transactions.rows, len(cancellations), as_of
    )


# The simulator's tables in the data contract (docs/data-contract.md), as a company would describe
# its own: `churn ingest --config <raw_dir>/simulated.yaml` takes them like any other data set.
CONFIG_FILE = "simulated.yaml"
CONFIG_NAME = "simulated"


def write_config(raw_dir: Path) -> Path:
    """Write the contract config of the simulator's tables next to them; returns its path."""
    config = {
        "name": CONFIG_NAME,
        "data_root": ".",
        "sources": {
            "customers": {
                "shape": "customers", "path": "customers.parquet", "customer_id": "customer_id", "signup": "signup_at",
                # the current price follows downgrades up to the end of the data: not known at earlier cutoffs
                "ignore": ["monthly_price"],
            },
            "events": {
                "shape": "events", "path": "events.parquet", "customer_id": "customer_id", "timestamp": "event_time",
                "kind": "event_type", "values": ["value"],
                "signals": {
                    "activity": ["activity"], "support_tickets": ["support_ticket"], "complaints": ["complaint"],
                    "failed_payments": ["payment_failed"], "plan_changes": ["downgrade"], "survey": ["nps"],
                    "survey_score": "value", "activity_sessions": "value",
                },
                "allow_negative": ["value"],
            },
            "payments": {
                "shape": "transactions", "path": "transactions.parquet", "customer_id": "customer_id",
                "timestamp": "transaction_time", "amount": "amount", "kind": "kind",
            },
            "cancellations": {
                "shape": "cancellations", "path": "cancellations.parquet", "customer_id": "customer_id",
                "timestamp": "cancelled_at", "ignore": ["reason"],
            },
        },
        "churn": {"definition": "cancellations", "horizon_days": 30},
        "value": {"method": "model", "horizon_days": 365},
    }
    import yaml  # only where the config is written

    path = Path(raw_dir) / CONFIG_FILE
    path.write_text(
        "# The simulator's tables in the data contract (docs/data-contract.md); written by `churn simulate`.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return path


def _write_truth(
    truth_dir: Path,
    rng: np.random.Generator,
    ids: np.ndarray,
    world: _World,
    start: date,
    days: int,
    untreated: list[pd.DataFrame],
    horizon_days: int,
) -> None:
    """The hidden truth: each customer's hidden traits, and true untreated churn at the truth dates.

    What an action does to a customer is not fixed here: `features/truth.py` computes it at a
    decision date under a named scenario, from these hidden traits and the customer's state
    then (tenure, whether their departure is already under way).
    - `customers.parquet`: base_engagement, responsiveness (answers contacts in general),
      sleeping_dog (contact drives them away; likelier among the engaged), noise_<action>
      (the part of each action's effect nothing explains), doomed_from (the day their
      departure got under way; empty if it never did within the data);
    - `untreated.parquet`: customer_id, as_of, churn_probability at each truth date;
    - `manifest.json`: the span, the horizon and the truth dates.
    """
    n = len(ids)
    responsiveness = rng.normal(0, 1, n)
    sleeping_dog = rng.random(n) < _sigmoid(-3.3 + 0.6 * world.base)
    doomed = world.doomed_from < days
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "base_engagement": world.base.round(4),
            "responsiveness": responsiveness.round(4),
            "sleeping_dog": sleeping_dog,
        }
    )
    day0 = pd.Timestamp(start, tz="UTC")
    frame["doomed_from"] = (day0 + pd.to_timedelta(np.where(doomed, world.doomed_from, 0), unit="D")).where(doomed)
    for action in ACTIONS:
        frame[f"noise_{action}"] = rng.normal(0, 1, n).round(4)
    frame.to_parquet(truth_dir / "customers.parquet", index=False)
    columns = {"customer_id": pd.Series(dtype="int64"), "as_of": pd.Series(dtype="object"), "churn_probability": pd.Series(dtype="float64")}
    table = pd.concat(untreated, ignore_index=True) if untreated else pd.DataFrame(columns)
    table.to_parquet(truth_dir / "untreated.parquet", index=False)
    (truth_dir / "manifest.json").write_text(
        json.dumps(
            {
                "start": start.isoformat(), "days": days, "horizon_days": horizon_days,
                "truth_dates": sorted({d.isoformat() for d in table["as_of"]}),
            },
            indent=2,
        )
    )
