"""The embedded raw-data source: a seeded simulator of a subscription business.

It writes the four raw tables of the raw-data contract (`docs/raw-data-contract.md`):
customers, events, transactions, cancellations, plus the hidden truth that no model may
read (each customer's true response to each retention action), so that a policy can
later be scored against what would really have happened.

How churn arises (why the models can see it coming):
- every customer has a base engagement, set partly by observable traits (channel, tier),
  plus a slow random mood (an AR(1) process), so activity dips happen without churn;
- each day an active customer may *start to disengage*, with a hazard raised by low
  engagement, a recent complaint, a recent failed payment, early tenure, a monthly plan
  and paid acquisition;
- while disengaging, engagement falls over 2-8 weeks (20% fall within 1-3 days, with no
  warning), tickets become likelier, downgrades happen; a quarter recover;
- the rest cancel: monthly plans at the next billing day, annual plans mostly at renewal;
- failed payments that fail again on retry end the subscription (involuntary churn).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
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
RESPONSE_TYPES = ("sure_thing", "lost_cause", "persuadable", "sleeping_dog")

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


def simulate(
    raw_dir: Path,
    truth_dir: Path,
    n_customers: int = 20_000,
    start: date = date(2024, 11, 1),
    days: int = 730,
    seed: int = 42,
    progress=None,
) -> SimulationResult:
    """Simulate `n_customers` over `days` days from `start` and write the raw tables.

    `progress`, if given, is called with the number of days just simulated (for a progress bar).
    The same arguments always write the same tables.
    """
    raw_dir = Path(raw_dir)
    truth_dir = Path(truth_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_customers
    day0_us = int(datetime.combine(start, time(), tzinfo=timezone.utc).timestamp() * 1_000_000)
    day_us = 86_400 * 1_000_000

    # --- who the customers are (observable traits) ---
    existing = rng.random(n) < 0.35
    signup_day = np.where(
        existing,
        -rng.integers(1, 540, n),
        rng.integers(0, days - 14, n),
    ).astype(np.int32)
    plan = (rng.random(n) < 0.3).astype(np.int8)  # 1 = annual
    tier = rng.choice(3, n, p=[0.5, 0.35, 0.15]).astype(np.int8)
    channel = rng.choice(4, n, p=[0.4, 0.3, 0.15, 0.15]).astype(np.int8)
    region = rng.integers(0, 4, n).astype(np.int8)
    signup_seconds = rng.integers(0, 86_400, n)

    channel_engagement = np.array([0.2, -0.3, 0.4, 0.0])
    base = 0.7 + channel_engagement[channel] + 0.2 * tier + rng.normal(0, 0.6, n)
    channel_hazard = np.array([0.0, 0.45, -0.3, 0.1])
    trait_hazard = channel_hazard[channel] + 0.35 * (plan == 0) - 0.15 * tier

    # --- state ---
    mood = rng.normal(0, 0.5, n)
    dis_start = np.full(n, _NEVER, np.int32)
    dis_len = np.zeros(n, np.int32)
    recovers = np.zeros(n, bool)
    cancel_day = np.full(n, _NEVER, np.int32)
    cancel_reason = np.zeros(n, np.int8)  # 0 voluntary, 1 payment_failed
    last_complaint = np.full(n, -_NEVER, np.int64)
    last_payment_failure = np.full(n, -_NEVER, np.int64)
    retry_day = np.full(n, _NEVER, np.int32)
    retries = np.zeros(n, np.int8)
    current_tier = tier.copy()

    events = _Buffer(raw_dir / "events.parquet", _EVENTS_SCHEMA, "event_time", "event_type", EVENT_TYPES)
    transactions = _Buffer(
        raw_dir / "transactions.parquet", _TRANSACTIONS_SCHEMA, "transaction_time", "kind", TRANSACTION_KINDS
    )
    ev = {name: i for i, name in enumerate(EVENT_TYPES)}

    def stamp(day: int, idx: np.ndarray) -> np.ndarray:
        # a random time in the day, but never before the customer signed up on that day
        earliest = np.where(signup_day[idx] == day, signup_seconds[idx] * 1_000_000, 0)
        return day0_us + day * day_us + rng.integers(earliest, day_us, len(idx))

    for t in range(days):
        active = (signup_day <= t) & (cancel_day > t)
        idx = np.flatnonzero(active)
        mood[idx] = 0.97 * mood[idx] + rng.normal(0, 0.12, len(idx))

        # disengagement: engagement falls over dis_len days, then the customer leaves or recovers
        disengaging = dis_start[idx] <= t
        progress_frac = np.where(
            disengaging, np.clip((t - dis_start[idx] + 1) / np.maximum(dis_len[idx], 1), 0, 1), 0.0
        )
        engagement = base[idx] + mood[idx] - 3.2 * progress_frac

        # entering disengagement
        calm = idx[~disengaging]
        tenure = t - signup_day[calm]
        log_h = (
            np.log(0.0011)
            - 0.6 * (base[calm] + mood[calm])
            + trait_hazard[calm]
            + 1.1 * (t - last_complaint[calm] < 30)
            + 0.9 * (t - last_payment_failure[calm] < 30)
            + 0.5 * (tenure < 90)
        )
        starts = calm[rng.random(len(calm)) < np.exp(log_h)]
        dis_start[starts] = t
        sudden = rng.random(len(starts)) < 0.2
        dis_len[starts] = np.where(sudden, rng.integers(1, 4, len(starts)), rng.integers(14, 57, len(starts)))
        recovers[starts] = rng.random(len(starts)) < 0.25

        # end of the fall: recover, or schedule the cancellation
        ends = idx[disengaging & (t - dis_start[idx] + 1 == dis_len[idx])]
        back = ends[recovers[ends]]
        dis_start[back] = _NEVER
        leave = ends[~recovers[ends]]
        age = t - signup_day[leave]
        next_monthly = t + (30 - age % 30) % 30
        next_renewal = t + (365 - age % 365) % 365
        midterm = rng.random(len(leave)) < 0.2
        cancel_day[leave] = np.where(plan[leave] == 0, next_monthly, np.where(midterm, t, next_renewal))
        # a customer who cancels today is not active today
        keep = cancel_day[idx] > t
        idx, engagement, disengaging = idx[keep], engagement[keep], disengaging[keep]

        # daily activity
        active_today = rng.random(len(idx)) < _sigmoid(1.1 * engagement + 0.3)
        a_idx = idx[active_today]
        sessions = 1 + rng.poisson(np.exp(0.35 * engagement[active_today]))
        events.add(a_idx, stamp(t, a_idx), ev["activity"], sessions)

        # support tickets and complaints (likelier while disengaging)
        p_ticket = 0.003 + 0.012 * disengaging
        tickets = idx[rng.random(len(idx)) < p_ticket]
        events.add(tickets, stamp(t, tickets), ev["support_ticket"], np.ones(len(tickets)))
        complaints = tickets[rng.random(len(tickets)) < 0.3]
        events.add(complaints, stamp(t, complaints), ev["complaint"], np.ones(len(complaints)))
        last_complaint[complaints] = t
        # unprompted complaints (service outages) that may start a disengagement
        outages = idx[rng.random(len(idx)) < 0.0008]
        events.add(outages, stamp(t, outages), ev["complaint"], np.ones(len(outages)))
        last_complaint[outages] = t

        # NPS answers, roughly one a quarter
        nps_idx = rng.random(len(idx)) < 1 / 90
        score = np.clip(np.round(7 + 1.4 * engagement[nps_idx] + rng.normal(0, 1.3, nps_idx.sum())), 0, 10)
        events.add(idx[nps_idx], stamp(t, idx[nps_idx]), ev["nps"], score)

        # downgrades while disengaging (monthly plans above basic)
        down = idx[disengaging & (plan[idx] == 0) & (current_tier[idx] > 0) & (rng.random(len(idx)) < 0.012)]
        current_tier[down] -= 1
        events.add(down, stamp(t, down), ev["downgrade"], TIER_PRICE[current_tier[down]])

        # billing: monthly every 30 days, annual every 365 days from signup; retries 3 days after a failure
        age = t - signup_day[idx]
        cycle = np.where(plan[idx] == 0, 30, 365)
        due = idx[(age % cycle == 0) | (retry_day[idx] == t)]
        fail_p = np.where(channel[due] == 1, 0.05, 0.025) + np.where(retry_day[due] == t, 0.35, 0.0)
        failed = rng.random(len(due)) < fail_p
        paid = due[~failed]
        price = TIER_PRICE[current_tier[paid]] * np.where(plan[paid] == 0, 1.0, 10.0)
        transactions.add(paid, stamp(t, paid), 0, price)
        retry_day[paid] = _NEVER
        retries[paid] = 0
        bad = due[failed]
        events.add(bad, stamp(t, bad), ev["payment_failed"], TIER_PRICE[current_tier[bad]])
        last_payment_failure[bad] = t
        second = bad[retries[bad] >= 1]
        cancel_day[second] = np.minimum(cancel_day[second], t + 1)
        cancel_reason[second] = 1
        first = bad[retries[bad] == 0]
        retries[first] = 1
        retry_day[first] = t + 3

        # add-on purchases by engaged customers
        buyers = idx[rng.random(len(idx)) < 0.004 * np.exp(0.5 * engagement)]
        transactions.add(buyers, stamp(t, buyers), 1, np.round(rng.lognormal(2.4, 0.5, len(buyers)), 2))

        if (t + 1) % _FLUSH_EVERY_DAYS == 0:
            events.flush()
            transactions.flush()
        if progress is not None:
            progress(1)

    events.close()
    transactions.close()

    ids = np.arange(1, n + 1, dtype=np.int64)
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_at": pd.to_datetime(day0_us + signup_day.astype(np.int64) * day_us + signup_seconds * 1_000_000, unit="us", utc=True),
            "plan": pd.Categorical.from_codes(plan, PLANS).astype(str),
            "price_tier": pd.Categorical.from_codes(tier, PRICE_TIERS).astype(str),
            "monthly_price": TIER_PRICE[tier],
            "channel": pd.Categorical.from_codes(channel, CHANNELS).astype(str),
            "region": pd.Categorical.from_codes(region, REGIONS).astype(str),
        }
    )
    customers.to_parquet(raw_dir / "customers.parquet", index=False)

    gone = np.flatnonzero(cancel_day < days)
    cancellations = pd.DataFrame(
        {
            "customer_id": ids[gone],
            "cancelled_at": pd.to_datetime(
                day0_us + cancel_day[gone].astype(np.int64) * day_us + rng.integers(0, day_us, len(gone)),
                unit="us",
                utc=True,
            ),
            "reason": np.where(cancel_reason[gone] == 1, "payment_failed", "voluntary"),
        }
    ).sort_values("cancelled_at", kind="stable")
    cancellations.to_parquet(raw_dir / "cancellations.parquet", index=False)

    _write_truth(truth_dir, rng, ids, base, plan, tier, channel, signup_day, days)
    as_of = datetime.combine(start, time(), tzinfo=timezone.utc) + pd.Timedelta(days=days)
    (raw_dir / "manifest.json").write_text(
        json.dumps(
            {"source": "simulator", "seed": seed, "n_customers": n, "start": start.isoformat(), "as_of": as_of.isoformat()},
            indent=2,
        )
    )
    write_config(raw_dir)
    return SimulationResult(raw_dir, truth_dir, n, events.rows, transactions.rows, len(cancellations), as_of)


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
    base: np.ndarray,
    plan: np.ndarray,
    tier: np.ndarray,
    channel: np.ndarray,
    signup_day: np.ndarray,
    days: int,
) -> None:
    """Each customer's hidden response type and true effect of each action.

    The effect is the relative reduction of the customer's churn probability over the
    horizon if contacted (negative: the contact drives them away). It depends on
    observable traits only in part; a hidden trait and noise carry the rest, so no model
    can recover it exactly.
    """
    n = len(ids)
    hidden = rng.normal(0, 1, n)
    # response type: persuadable likelier with mid engagement; sleeping dogs among the very engaged
    logits = np.column_stack(
        [
            0.8 * base,  # sure_thing
            -0.6 * base - 0.3,  # lost_cause
            0.6 - 0.4 * np.abs(base - 0.6) + 0.5 * hidden,  # persuadable
            -2.3 + 0.4 * base - 0.5 * hidden,  # sleeping_dog
        ]
    )
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    kind = (probs.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    tenure_at_end = days - signup_day
    observable_fit = {
        "onboarding_activation": 0.25 * (tenure_at_end < 120) + 0.05,
        "advisor_call": 0.10 + 0.12 * (tier == 2) + 0.06 * (plan == 1),
        "discount_offer": 0.08 + 0.15 * (channel == 1) + 0.08 * (tier == 0),
        "reengagement_message": 0.06 + 0.05 * (base < 0.5),
        "service_recovery": 0.20 + 0.0 * base,
        "payment_rescue": 0.30 + 0.0 * base,
        "early_warning_offer": 0.08 + 0.06 * (base < 0.5),  # drawn last: the other actions' truth is unchanged
    }
    rows = []
    for action in ACTIONS:
        effect = observable_fit[action] + 0.10 * hidden + rng.normal(0, 0.08, n)
        effect = np.where(kind == 2, np.clip(effect + 0.15, 0.05, 0.9), effect)  # persuadable
        effect = np.where(kind == 1, rng.normal(0.0, 0.02, n), effect)  # lost cause: nothing works
        effect = np.where(kind == 3, -np.abs(effect) - 0.1, effect)  # sleeping dog: contact hurts
        effect = np.where(kind == 0, np.clip(effect, -0.05, 0.3), effect)  # would stay anyway: little to gain
        rows.append(pd.DataFrame({"customer_id": ids, "action": action, "true_effect": np.round(effect, 4)}))
    pd.concat(rows, ignore_index=True).to_parquet(truth_dir / "responses.parquet", index=False)
    pd.DataFrame(
        {"customer_id": ids, "response_type": np.array(RESPONSE_TYPES)[kind], "base_engagement": base.round(4)}
    ).to_parquet(truth_dir / "customers.parquet", index=False)
