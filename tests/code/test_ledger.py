"""The decision ledger: idempotent per (campaign, customer), on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from churn.errors import StoreUnavailableError
from serving.ledger import LEDGER_COLUMNS, Ledger

# the local PostgreSQL (trust auth); CI starts it, so an unreachable server fails the test
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"

FIRST = datetime(2025, 3, 1, 8, 30, tzinfo=timezone.utc)


@contextmanager
def _ledger(backend: str, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger on a fresh store of `backend`, dropped afterwards."""
    if backend == "sqlite":
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        try:
            yield ledger
        finally:
            ledger.close()
        return
    db = f"churn_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE DATABASE {db}")
    try:
        ledger = Ledger(POSTGRES_URL.format(db=db))
        try:
            yield ledger
        finally:
            ledger.close()
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _decisions(customer_ids: list[int], action: str = "advisor_call", value: float = 10.0) -> pd.DataFrame:
    """Decision rows as `decide` + scoring produce them (everything but campaign and decided_at)."""
    n = len(customer_ids)
    rows = pd.DataFrame(
        {
            "customer_id": customer_ids,
            "action": action,
            "channel": "phone",
            "cost": 25.0,
            "expected_value": [value + i for i in range(n)],
            "churn_probability": 0.4,
            "clv": 300.0,
            "segment": "high",
            "risk_band": "high",
            "reason": "high-value customer at risk",
            "model_version": "churn-risk/3",
        }
    )
    assert sorted(rows.columns) == sorted(set(LEDGER_COLUMNS) - {"campaign", "decided_at"})
    return rows


BACKENDS = ["sqlite", "postgresql"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_record_returns_the_recorded_rows(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        recorded = ledger.record(_decisions([3, 1, 2]), "c1", decided_at=FIRST)
        assert list(recorded.columns) == LEDGER_COLUMNS
        assert recorded["customer_id"].tolist() == [1, 2, 3]
        assert (recorded["campaign"] == "c1").all()
        assert (recorded["action"] == "advisor_call").all()
        # customer 3 came first in the input, so has the smallest expected value
        assert recorded["expected_value"].tolist() == [11.0, 12.0, 10.0]
        assert (recorded["decided_at"] == pd.Timestamp(FIRST)).all()
        assert str(recorded["decided_at"].dt.tz) == "UTC"


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_run_keeps_the_first_decision(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        first = ledger.record(_decisions([1, 2], action="advisor_call", value=10.0), "c1", decided_at=FIRST)
        later = FIRST + timedelta(days=1)
        second = ledger.record(_decisions([1, 2], action="discount_offer", value=99.0), "c1", decided_at=later)
        pd.testing.assert_frame_equal(second, first)
        assert second["action"].tolist() == ["advisor_call", "advisor_call"]
        assert (second["decided_at"] == pd.Timestamp(FIRST)).all()
        assert len(ledger.campaign_decisions("c1")) == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_partly_new_run_adds_only_the_new_customers(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        ledger.record(_decisions([1, 2], action="advisor_call"), "c1", decided_at=FIRST)
        again = ledger.record(_decisions([2, 3], action="discount_offer"), "c1", decided_at=FIRST + timedelta(hours=1))
        # the returned frame covers only the customers asked about
        assert again["customer_id"].tolist() == [2, 3]
        assert again["action"].tolist() == ["advisor_call", "discount_offer"]
        assert ledger.campaign_decisions("c1")["customer_id"].tolist() == [1, 2, 3]


@pytest.mark.parametrize("backend", BACKENDS)
def test_campaigns_are_separate(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        ledger.record(_decisions([1, 2], action="advisor_call"), "c1", decided_at=FIRST)
        other = ledger.record(_decisions([1], action="discount_offer"), "c2", decided_at=FIRST)
        assert other["action"].tolist() == ["discount_offer"]
        assert ledger.campaign_decisions("c1")["action"].tolist() == ["advisor_call", "advisor_call"]
        assert ledger.campaign_decisions("c2")["customer_id"].tolist() == [1]
        assert ledger.campaign_decisions("c3").empty


@pytest.mark.parametrize("backend", BACKENDS)
def test_decisions_survive_a_new_ledger_object(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        ledger.record(_decisions([5]), "c1", decided_at=FIRST)
        reopened = Ledger(ledger.url)
        try:
            kept = reopened.record(_decisions([5], action="discount_offer"), "c1")
        finally:
            reopened.close()
        assert kept["action"].tolist() == ["advisor_call"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_batch_beyond_one_chunk(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        ids = list(range(1, 12_002))
        recorded = ledger.record(_decisions(ids, value=0.0), "big", decided_at=FIRST)
        assert len(recorded) == 12_001
        assert recorded["customer_id"].tolist() == ids
        assert recorded["expected_value"].iloc[-1] == 12_000.0


def test_unreachable_ledger_names_the_url_without_password():
    with pytest.raises(
        StoreUnavailableError, match=r"ledger at postgresql\+psycopg://postgres:\*\*\*@127\.0\.0\.1:1/x is unreachable"
    ) as info:
        Ledger("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x")
    assert "s3cret" not in str(info.value)


def test_ledger_store_going_away_is_store_unavailable(tmp_path):
    """A SQLite ledger whose folder is gone: recording reports the store, not a raw SQL error."""
    folder = tmp_path / "gone"
    folder.mkdir()
    ledger = Ledger(f"sqlite:///{folder / 'ledger.db'}")
    try:
        (folder / "ledger.db").unlink()
        folder.rmdir()
        with pytest.raises(StoreUnavailableError, match=r"ledger at sqlite:///.*gone/ledger\.db is unreachable"):
            ledger.record(_decisions([1]), "c1")
    finally:
        ledger.close()
