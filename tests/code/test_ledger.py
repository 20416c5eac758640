"""The decision ledger: idempotent per (campaign, customer), on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from churn.errors import DataError, StoreUnavailableError
from serving.batch import decide_campaign
from serving.ledger import LEDGER_COLUMNS, Ledger
from serving.policy import load_catalog

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
    assert sorted(rows.columns) == sorted(set(LEDGER_COLUMNS) - {"campaign", "decided_at", "holdout", "as_of"})
    return rows


BACKENDS = ["sqlite", "postgresql"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_record_returns_the_recorded_rows(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        recorded = ledger.record(_decisions([3, 1, 2]), "c1", decided_at=FIRST)
        assert list(recorded.columns) == LEDGER_COLUMNS
        assert recorded["customer_id"].tolist() == ["1", "2", "3"]  # ids are text
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
        assert again["customer_id"].tolist() == ["2", "3"]
        assert again["action"].tolist() == ["advisor_call", "discount_offer"]
        assert ledger.campaign_decisions("c1")["customer_id"].tolist() == ["1", "2", "3"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_campaigns_are_separate(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        ledger.record(_decisions([1, 2], action="advisor_call"), "c1", decided_at=FIRST)
        other = ledger.record(_decisions([1], action="discount_offer"), "c2", decided_at=FIRST)
        assert other["action"].tolist() == ["discount_offer"]
        assert ledger.campaign_decisions("c1")["action"].tolist() == ["advisor_call", "advisor_call"]
        assert ledger.campaign_decisions("c2")["customer_id"].tolist() == ["1"]
        assert ledger.campaign_decisions("c3").empty


@pytest.mark.parametrize("backend", BACKENDS)
def test_decisions_survive_a_new_ledger_object(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        ledger.record(_decisions([5]), "c1", decided_at=FIRST)
        reopened = Ledger(ledger.url)
        try:
            kept = reopened.record(_decisions([5], action="discount_offer"), "c1", decided_at=FIRST + timedelta(days=1))
        finally:
            reopened.close()
        assert kept["action"].tolist() == ["advisor_call"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_batch_beyond_one_chunk(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        ids = list(range(1, 12_002))
        recorded = ledger.record(_decisions(ids, value=0.0), "big", decided_at=FIRST)
        assert len(recorded) == 12_001
        assert recorded["customer_id"].tolist() == sorted(str(i) for i in ids)  # by text: "1", "10", "100", ...
        assert recorded.set_index("customer_id").loc["12001", "expected_value"] == 12_000.0


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
        with pytest.raises(StoreUnavailableError, match=r"ledger at sqlite:///.*gone/ledger\.db cannot be written \(the file or its folder is read-only or gone\)"):
            ledger.record(_decisions([1]), "c1", decided_at=FIRST)
    finally:
        ledger.close()


# --- holdouts, cooldowns and outcomes ------------------------------------------------------


def _scores(n: int, seed: int = 0) -> pd.DataFrame:
    """Scored customers as `Scorer.score` returns them (only the columns the policy reads)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, n + 1),
            "churn_probability": rng.uniform(0.05, 0.9, n),
            "clv": rng.gamma(2.0, 150.0, n),
            "segment": rng.choice(["low", "medium", "high"], n),
            "risk_band": "high",
            "tenure_days": rng.integers(0, 800, n),
            "activity_trend_7d_28d": rng.uniform(0, 2, n),
            "complaints_28d": rng.integers(0, 2, n),
            "payment_failures_28d": rng.integers(0, 2, n),
            "model_version": "churn-risk/1;customer-clv/1",
        }
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_campaign_twice_contacts_nobody_twice(backend, tmp_path):
    catalog = load_catalog()
    scores = _scores(3_000)
    with _ledger(backend, tmp_path) as ledger:
        first = decide_campaign(scores, catalog, ledger, "week-1", FIRST)
        contacted = first[(first["action"] != "none") & ~first["holdout"]]
        assert len(contacted) > 50
        assert first["holdout"].any()
        # the re-run sees other scores (a model update, say): the recorded decisions stand
        again = decide_campaign(_scores(3_000, seed=1), catalog, ledger, "week-1", FIRST + timedelta(hours=2))
        pd.testing.assert_frame_equal(again, first)
        assert len(ledger.campaign_decisions("week-1")) == 3_000
        assert contacted["cost"].sum() <= catalog.budget


@pytest.mark.parametrize("backend", BACKENDS)
def test_cooldown_keeps_a_new_campaign_off_recent_customers(backend, tmp_path):
    catalog = load_catalog()
    scores = _scores(3_000)
    with _ledger(backend, tmp_path) as ledger:
        first = decide_campaign(scores, catalog, ledger, "week-1", FIRST)
        acted = set(first.loc[first["action"] != "none", "customer_id"])
        soon = decide_campaign(scores, catalog, ledger, "week-2", FIRST + timedelta(days=7))
        acted_soon = set(soon.loc[soon["action"] != "none", "customer_id"])
        assert acted_soon and not (acted & acted_soon)
        later = FIRST + timedelta(days=catalog.cooldown_days + 7)
        after = decide_campaign(scores, catalog, ledger, "week-6", later)
        assert set(after.loc[after["action"] != "none", "customer_id"]) & acted


def _outcomes(recorded: pd.DataFrame, campaign: str) -> pd.DataFrame:
    acted = recorded[recorded["action"] != "none"]
    return pd.DataFrame(
        {
            "campaign": campaign,
            "customer_id": acted["customer_id"],
            "churned": acted["customer_id"].astype(int) % 3 == 0,
            "revenue": 10.0,
            "horizon_end": FIRST + timedelta(days=30),
        }
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_outcomes_are_recorded_once_and_joined_to_decisions(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        recorded = decide_campaign(_scores(500), load_catalog(), ledger, "c1", FIRST)
        outcomes = _outcomes(recorded, "c1")
        ended = FIRST + timedelta(days=30)
        assert ledger.record_outcomes(outcomes, "test", recorded_at=ended) == len(outcomes)
        assert ledger.record_outcomes(outcomes.assign(churned=True), "test again", recorded_at=ended) == 0
        joined = ledger.decisions_with_outcomes()
        assert len(joined) == len(outcomes)
        assert joined["churned"].tolist() == (joined["customer_id"].astype(int) % 3 == 0).tolist()
        assert set(joined["holdout"]) == {True, False}


@pytest.mark.parametrize("backend", BACKENDS)
def test_outcome_cells_sum_the_joined_outcomes_as_the_learner_does(backend, tmp_path):
    """The SQL sums per segment x action x holdout equal `serving.learning.outcome_cells` of the joined rows;
    decisions without an outcome, and 'none' decisions, are not in them; the count counts every outcome."""
    from serving.learning import outcome_cells

    with _ledger(backend, tmp_path) as ledger:
        assert ledger.outcome_cells().empty and ledger.outcome_count() == 0
        recorded = decide_campaign(_scores(500), load_catalog(), ledger, "c1", FIRST)
        outcomes = pd.concat([_outcomes(recorded, "c1").iloc[:-7], recorded[recorded["action"] == "none"].head(3).assign(
            campaign="c1", churned=True, revenue=0.0, horizon_end=FIRST
        )[["campaign", "customer_id", "churned", "revenue", "horizon_end"]]])
        ledger.record_outcomes(outcomes, "test", recorded_at=FIRST + timedelta(days=30))
        cells = ledger.outcome_cells()
        assert ledger.outcome_count() == len(outcomes)
        expected = outcome_cells(ledger.decisions_with_outcomes())
        assert cells["n"].sum() == len(outcomes) - 3 and cells["churned"].sum() > 0
        pd.testing.assert_frame_equal(cells.reset_index(drop=True), expected.reset_index(drop=True), check_exact=False)


REFUSED_OUTCOMES = {
    # an outcome must name a recorded decision
    "undecided customer": (
        lambda outcomes: pd.concat([outcomes, outcomes.iloc[:1].assign(customer_id=999_999)]), 30,
        r"1 rows name a campaign/customer with no recorded decision \(first: c1/999999\)",
    ),
    # the engine's clock says when a horizon has ended: an outcome from the future cannot be known
    "horizon not ended": (
        lambda outcomes: outcomes, 29, r"\d+ rows have a horizon_end after now \(.*c1/\d+, horizon_end",
    ),
}


@pytest.mark.parametrize("case", REFUSED_OUTCOMES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_outcomes_with_a_bad_row_are_refused_whole(backend, case, tmp_path):
    change, recorded_after_days, message = REFUSED_OUTCOMES[case]
    with _ledger(backend, tmp_path) as ledger:
        recorded = decide_campaign(_scores(200), load_catalog(), ledger, "c1", FIRST)
        with pytest.raises(DataError, match=message):
            ledger.record_outcomes(
                change(_outcomes(recorded, "c1")), "file.csv", recorded_at=FIRST + timedelta(days=recorded_after_days)
            )
        assert ledger.decisions_with_outcomes().empty


def test_ledger_from_an_older_version_is_named(tmp_path):
    """A decisions table without the holdout and as_of columns: a clear error, nothing changed."""
    import sqlalchemy as sa

    path = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE decisions (campaign VARCHAR(128), customer_id BIGINT, action VARCHAR(64))"))
        conn.execute(sa.text("INSERT INTO decisions VALUES ('c1', 1, 'advisor_call')"))
    with pytest.raises(StoreUnavailableError, match=r"table 'decisions' lacks columns \['channel', .*'holdout', 'as_of'\]"):
        Ledger(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one() == 1
    engine.dispose()


def test_a_decision_needs_a_time_from_the_caller(tmp_path):
    """The ledger reads no clock of its own: the engine's clock reaches it through its callers."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        with pytest.raises(ValueError, match=r"Ledger.record needs decided_at or as_of"):
            ledger.record(_decisions([1]), "c1")
        as_of_only = ledger.record(_decisions([2]), "c1", as_of=FIRST)
        assert as_of_only["decided_at"].tolist() == [pd.Timestamp(FIRST)]
    finally:
        ledger.close()


# --- rules across calls and replicas, bounded waits ------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_campaign_decided_in_13_calls_spends_at_most_its_budget(backend, tmp_path):
    catalog = load_catalog()
    scores = _scores(3_000)
    with _ledger(backend, tmp_path) as ledger:
        calls = [decide_campaign(part, catalog, ledger, "split", FIRST) for part in _parts(scores, 13)]
        first_call = calls[0].loc[calls[0]["action"] != "none", "cost"].sum()
        assert first_call * 13 > 2 * catalog.budget  # each call alone would spend a good part of the budget
        recorded = ledger.campaign_decisions("split")
        assert len(recorded) == 3_000
        committed = recorded.loc[recorded["action"] != "none", "cost"].sum()  # contacted and held out
        assert committed <= catalog.budget + 1e-9
        assert committed > 0.9 * catalog.budget  # the budget is spent, not just capped at the first call


def _with_advisor_capacity(capacity: int | None):
    catalog = load_catalog()
    actions = [a.model_copy(update={"capacity": capacity}) if a.name == "advisor_call" else a for a in catalog.actions]
    return catalog.model_copy(update={"budget": None, "actions": actions})


def _parts(scores: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    return [scores.iloc[idx] for idx in np.array_split(np.arange(len(scores)), n)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_capacities_hold_across_calls(backend, tmp_path):
    scores = _scores(3_000)
    with _ledger(backend, tmp_path) as ledger:
        uncapped = [decide_campaign(p, _with_advisor_capacity(None), ledger, "free", FIRST) for p in _parts(scores, 13)]
        assert sum(int((c["action"] == "advisor_call").sum()) for c in uncapped) > 30  # 15 would bind
        others = scores.assign(customer_id=scores["customer_id"] + 10_000)  # not in the first campaign's cooldown
        capped = [decide_campaign(p, _with_advisor_capacity(15), ledger, "cap", FIRST) for p in _parts(others, 13)]
        per_call = [int((c["action"] == "advisor_call").sum()) for c in capped]
        assert per_call[0] > 0 and per_call[-1] == 0
        assert (ledger.campaign_decisions("cap")["action"] == "advisor_call").sum() == 15


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_ledgers_deciding_the_same_customers_for_two_campaigns_contact_each_once(backend, tmp_path):
    """Two replicas (two Ledger objects, two connections), same customers, two campaigns, at the same moment."""
    catalog = load_catalog().model_copy(update={"budget": None, "holdout_share": 0.0})
    with _ledger(backend, tmp_path) as ledger:
        other = Ledger(ledger.url)
        try:
            for round_ in range(6):
                scores = _scores(20, seed=round_).assign(customer_id=np.arange(20) + 100 * round_, risk_band="high")
                with ThreadPoolExecutor(2) as pool:
                    runs = [
                        pool.submit(decide_campaign, scores, catalog, replica, f"{name}-{round_}", FIRST)
                        for replica, name in ((ledger, "a"), (other, "b"))
                    ]
                    a, b = (run.result() for run in runs)
                acted = lambda frame: set(frame.loc[frame["action"] != "none", "customer_id"])  # noqa: E731
                assert acted(a) or acted(b)
                assert not acted(a) & acted(b), f"round {round_}: contacted twice: {sorted(acted(a) & acted(b))}"
        finally:
            other.close()


def test_a_locked_decisions_table_fails_the_decision_within_the_timeout_and_records_nothing(tmp_path):
    with _ledger("postgresql", tmp_path) as ledger:
        bounded = Ledger(ledger.url, timeout_seconds=1.0)
        holder = psycopg.connect(ledger.url.replace("postgresql+psycopg", "postgresql"))
        try:
            holder.execute("LOCK TABLE decisions IN ACCESS EXCLUSIVE MODE")  # in a transaction until rollback
            began = time.perf_counter()
            with pytest.raises(StoreUnavailableError, match=r"ledger at postgresql\+psycopg://.* (did not answer within 1 s|was not granted within 1 s|ran out of its time \(1 s)"):
                decide_campaign(_scores(5), load_catalog(), bounded, "locked", FIRST, deadline=time.monotonic() + 1.0)
            assert time.perf_counter() - began < 1.6
            with pytest.raises(StoreUnavailableError, match=r"(did not answer|was not granted) within 1 s"):
                bounded.check_writable()
        finally:
            holder.rollback()
            holder.close()
        assert ledger.campaign_decisions("locked").empty
        assert len(decide_campaign(_scores(5), load_catalog(), bounded, "locked", FIRST, deadline=time.monotonic() + 1.0)) == 5
        bounded.close()


def test_sqlite_decision_waits_for_another_writer_at_most_the_timeout(tmp_path):
    path = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{path}", timeout_seconds=0.5)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        began = time.perf_counter()
        with pytest.raises(StoreUnavailableError, match=r"ledger at sqlite:///.* is locked by another writer for more than 0.5 s"):
            decide_campaign(_scores(5), load_catalog(), ledger, "c1", FIRST, deadline=time.monotonic() + 1.0)
        assert time.perf_counter() - began < 1.5
        holder.execute("ROLLBACK")
        assert len(decide_campaign(_scores(5), load_catalog(), ledger, "c1", FIRST, deadline=time.monotonic() + 1.0)) == 5
    finally:
        holder.close()
        ledger.close()


def test_read_only_ledger_is_named_and_missing_tables_are_made_again(tmp_path):
    with _ledger("postgresql", tmp_path) as ledger:
        db = ledger.url.rsplit("/", 1)[1]
        decide_campaign(_scores(5), load_catalog(), ledger, "c1", FIRST)
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {db} SET default_transaction_read_only = on")
        ledger.close()  # new sessions are read-only, as after a failover to a standby
        with pytest.raises(StoreUnavailableError, match=r"ledger at .* is read-only \(a standby after a failover\?\)"):
            ledger.check_writable()
        with pytest.raises(StoreUnavailableError, match=r"is read-only"):
            decide_campaign(_scores(5), load_catalog(), ledger, "c2", FIRST)
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {db} RESET default_transaction_read_only")
        ledger.close()
        ledger.check_writable()
        drop = "DROP TABLE outcomes, decisions, customer_locks, campaign_spend"
        with psycopg.connect(ledger.url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
            conn.execute(drop)
        # a decision meeting the missing tables makes them again and decides (once more) on the empty ledger
        again = decide_campaign(_scores(5, seed=3), load_catalog(), ledger, "c1", FIRST + timedelta(hours=1))
        assert (again["decided_at"] == pd.Timestamp(FIRST + timedelta(hours=1))).all()
        with psycopg.connect(ledger.url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
            conn.execute(drop)
        ledger.check_writable()  # readiness makes them again too
        assert ledger.campaign_decisions("c1").empty


def test_one_customer_decision_costs_the_same_on_500_000_recent_decisions():
    """The ledger benchmark (benchmarks/ledger.py) as a bar: within 2x of the empty ledger's median."""
    from benchmarks.ledger import measure

    figures = measure(POSTGRES_ADMIN, rows=500_000, calls=80, baseline=False)
    print(f"1-customer decision: empty {np.median(figures.empty):.1f} ms, 500,000 decisions {np.median(figures.full):.1f} ms")
    assert figures.ratio < 2.0


def test_outcomes_past_their_deadline_are_rolled_back(tmp_path):
    with _ledger("sqlite", tmp_path) as ledger:
        recorded = decide_campaign(_scores(200), load_catalog(), ledger, "c1", FIRST)
        outcomes = _outcomes(recorded, "c1")
        ended = FIRST + timedelta(days=30)
        with pytest.raises(StoreUnavailableError, match=r"recording the outcomes from api ran out of its time .*nothing recorded"):
            ledger.record_outcomes(outcomes, "api", recorded_at=ended, deadline=time.monotonic() - 0.001)
        assert ledger.decisions_with_outcomes().empty
        assert ledger.record_outcomes(outcomes, "api", recorded_at=ended, deadline=time.monotonic() + 5) == len(outcomes)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_ledger_from_before_issue_16_gets_its_index_and_campaign_spend(backend, tmp_path):
    """Decisions recorded before campaign_spend existed still count against the campaign's budget."""
    import sqlalchemy as sa

    catalog = load_catalog()
    with _ledger(backend, tmp_path) as ledger:
        first = decide_campaign(_scores(1_500), catalog, ledger, "ongoing", FIRST)
        engine = sa.create_engine(ledger.url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE campaign_spend"))
            conn.execute(sa.text("DROP TABLE customer_locks"))
            conn.execute(sa.text("DROP INDEX decisions_customer_decided_at"))
        engine.dispose()
        reopened = Ledger(ledger.url)
        try:
            engine = sa.create_engine(ledger.url)
            assert "decisions_customer_decided_at" in {i["name"] for i in sa.inspect(engine).get_indexes("decisions")}
            engine.dispose()
            spent_before = first.loc[first["action"] != "none", "cost"].sum()
            assert spent_before > 0.9 * catalog.budget  # without the recount, the second call would get it all again
            others = _scores(1_500, seed=5).assign(customer_id=lambda f: f["customer_id"] + 5_000)
            rest = decide_campaign(others, catalog, reopened, "ongoing", FIRST)
            spent_after = rest.loc[rest["action"] != "none", "cost"].sum()
            assert spent_before + spent_after <= catalog.budget + 1e-9
        finally:
            reopened.close()


# --- customer ids are text ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_ids_are_recorded_and_paged_by_text_and_integers_mean_their_text(backend, tmp_path):
    with _ledger(backend, tmp_path) as ledger:
        ledger.record(_decisions(["7590-VHVEG", 10, "9", "Ä-1"]), "c1", decided_at=FIRST)
        # 10 and "10" are one customer: the second record keeps the first decision
        again = ledger.record(_decisions(["10"], action="discount_offer"), "c1", decided_at=FIRST + timedelta(hours=1))
        assert again["action"].tolist() == ["advisor_call"]
        # code-point order on both stores ("10" before "7590-VHVEG" before "9" before "Ä-1")
        assert ledger.campaign_decisions("c1")["customer_id"].tolist() == ["10", "7590-VHVEG", "9", "Ä-1"]
        assert [r["customer_id"] for r in ledger.page("c1", None, 2)] == ["10", "7590-VHVEG"]
        assert [r["customer_id"] for r in ledger.page("c1", "7590-VHVEG", 2)] == ["9", "Ä-1"]
        assert [r["customer_id"] for r in ledger.page("c1", 10, 1)] == ["7590-VHVEG"]
        outcomes = pd.DataFrame(
            {"campaign": "c1", "customer_id": ["7590-VHVEG", 10], "churned": [True, False], "revenue": 5.0,
             "horizon_end": FIRST + timedelta(days=30)}
        )
        assert ledger.record_outcomes(outcomes, "test", recorded_at=FIRST + timedelta(days=30)) == 2
        assert ledger.decisions_with_outcomes()["customer_id"].tolist() == ["10", "7590-VHVEG"]
        with pytest.raises(DataError, match=r"no recorded decision \(first: c1/7590-vhveg\)"):
            ledger.record_outcomes(outcomes[:1].assign(customer_id="7590-vhveg"), "t", recorded_at=FIRST + timedelta(days=30))


def _old_style_ledger(url: str) -> None:
    """The tables as an engine from before text ids made them (integer customer_id), with rows in each."""
    import sqlalchemy as sa

    from serving.ledger import metadata

    old = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(old)
    for name in ("decisions", "outcomes", "customer_locks"):
        old.tables[name].c.customer_id.type = sa.BigInteger()
    engine = sa.create_engine(url)
    rows = _decisions([1, 2, 30]).assign(campaign="old", decided_at=FIRST, as_of=FIRST, holdout=False)
    with engine.begin() as conn:
        old.create_all(conn)
        conn.execute(old.tables["decisions"].insert(), rows.to_dict("records"))
        conn.execute(old.tables["customer_locks"].insert(), [{"customer_id": c} for c in (1, 2, 30)])
        conn.execute(
            old.tables["outcomes"].insert(),
            [{"campaign": "old", "customer_id": 2, "churned": True, "revenue": 3.0, "horizon_end": FIRST,
              "source": "old", "recorded_at": FIRST}],
        )
        conn.execute(
            old.tables["campaign_spend"].insert(), [{"campaign": "old", "action": "advisor_call", "contacts": 3, "cost": 75.0}]
        )
        types = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns("decisions")}
        assert isinstance(types["customer_id"], sa.Integer)
    engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_ledger_with_integer_ids_is_made_text_in_place_keeping_every_row(backend, tmp_path):
    import sqlalchemy as sa

    with _ledger(backend, tmp_path) as made:
        url = made.url
        made.close()
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE outcomes"))
            conn.execute(sa.text("DROP TABLE campaign_spend"))
            conn.execute(sa.text("DROP TABLE customer_locks"))
            conn.execute(sa.text("DROP TABLE decisions"))
        engine.dispose()
        _old_style_ledger(url)
        ledger = Ledger(url)
        try:
            engine = sa.create_engine(url)
            inspector = sa.inspect(engine)
            for name in ("decisions", "outcomes", "customer_locks"):
                kind = next(c["type"] for c in inspector.get_columns(name) if c["name"] == "customer_id")
                assert isinstance(kind, sa.String) and kind.length == 128, (name, kind)
            assert "decisions_customer_decided_at" in {i["name"] for i in inspector.get_indexes("decisions")}
            keys = inspector.get_foreign_keys("outcomes")
            assert [(k["constrained_columns"], k["referred_table"]) for k in keys] == [
                (["campaign", "customer_id"], "decisions")
            ]
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT customer_id FROM customer_locks ORDER BY 1")).scalars().all() == [
                    "1", "2", "30"
                ]
            engine.dispose()
            kept = ledger.campaign_decisions("old")
            assert kept["customer_id"].tolist() == ["1", "2", "30"]
            assert kept["expected_value"].tolist() == [10.0, 11.0, 12.0]
            joined = ledger.decisions_with_outcomes(["old"])
            assert joined[["customer_id", "churned", "revenue"]].values.tolist() == [["2", True, 3.0]]
            # the old rows are the customers' decisions: 30 and "30" are one customer, decided already
            again = ledger.record(_decisions(["30", "7590-VHVEG"], action="discount_offer"), "old", decided_at=FIRST)
            assert again["action"].tolist() == ["advisor_call", "discount_offer"]
            assert [r["customer_id"] for r in ledger.page("old", "2", 10)] == ["30", "7590-VHVEG"]
            Ledger(url).close()  # a second start finds the ledger done
            ledger.check_writable()
        finally:
            ledger.close()
