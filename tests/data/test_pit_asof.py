"""Feast's point-in-time join agrees value for value with the hand-written DuckDB ASOF JOIN of features/pit.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from features.definitions import service_name
from features.pit import active_feature_batches, asof_features, feature_columns, open_active_batches, views_of
from features.simulate import CONFIG_NAME
from features.store import active_customers, active_population, historical_features

SERVICE = service_name(CONFIG_NAME)  # the engine's data set: the simulator's tables through `churn ingest`
EVENTS = f"{CONFIG_NAME}_events.parquet"  # its weekly log view of events


def test_feast_join_matches_asof_join(engine):
    rng = np.random.default_rng(3)
    events = pd.read_parquet(engine.settings.feature_tables_dir / EVENTS, columns=["customer_id", "event_timestamp"])
    # entity rows at arbitrary times (not on snapshots), some long after a customer's last row (stale), some unknown
    picks = events.sample(3_000, random_state=1, replace=False).reset_index(drop=True)
    offsets = pd.to_timedelta(rng.integers(0, 30 * 86_400, len(picks)), unit="s")
    entity = pd.DataFrame(
        {"customer_id": picks["customer_id"].to_numpy(), "event_timestamp": picks["event_timestamp"] + offsets}
    )
    entity.loc[:49, "customer_id"] = [f"unknown-{i}" for i in range(50)]  # unknown customers
    entity = pd.concat([entity, entity.iloc[:100]], ignore_index=True)  # repeated entity rows stay repeated
    entity["row_id"] = np.arange(len(entity))

    feast_rows = historical_features(engine.settings, entity, SERVICE)
    reference = asof_features(engine.settings.feature_tables_dir, entity)

    assert len(feast_rows) == len(entity)  # exactly one row per entity row
    assert (feast_rows["row_id"].to_numpy() == entity["row_id"].to_numpy()).all()
    columns = feature_columns(engine.settings.feature_tables_dir)
    assert len(columns) > 50  # every view of the ingested data set: customers (no TTL), events, payments
    stale = reference[columns].isna().all(axis=1)
    assert stale.sum() >= 50  # the case includes rows that must get nothing
    # a view without TTL answers however old its row: the signup attributes of rows whose log features went stale
    timeless = [c for v in views_of(engine.settings.feature_tables_dir) if v.ttl is None for c in v.columns]
    logs = [c for c in columns if c not in timeless]
    assert (reference[logs].isna().all(axis=1) & reference[timeless].notna().all(axis=1)).any()
    pd.testing.assert_frame_equal(
        feast_rows[columns].reset_index(drop=True),
        reference[columns].reset_index(drop=True),
        check_dtype=False,
    )


def test_join_in_parts_equals_one_join(engine):
    """Feast joins `offline.pit_chunk_rows` entity rows per call: the parts, put back in order, are one call's rows.

    The join in a child process reports its parts to the caller as they are joined (`progress`).
    """
    rows = pd.read_parquet(engine.settings.feature_tables_dir / EVENTS, columns=["customer_id", "event_timestamp"])
    entity = rows.sample(3_100, random_state=2).reset_index(drop=True)
    entity["event_timestamp"] += pd.Timedelta(days=3)
    entity = pd.concat([entity, entity.iloc[:40]], ignore_index=True)  # repeats across parts stay repeated
    entity["row_id"] = np.arange(len(entity))[::-1]

    whole = historical_features(engine.settings, entity, SERVICE, chunk_rows=len(entity))
    reports = []
    parts = historical_features(  # 5 parts, the last short, in a child process
        engine.settings, entity, SERVICE, chunk_rows=700, progress=lambda done, total: reports.append((done, total))
    )
    pd.testing.assert_frame_equal(parts, whole)
    done = [d for d, _ in reports]
    assert len(reports) > 1 and done == sorted(set(done)) and done[-1] == len(entity)
    assert {t for _, t in reports} == {len(entity)} and set(done) <= {700, 1_400, 2_100, 2_800, len(entity)}
    assert (parts["row_id"].to_numpy() == entity["row_id"].to_numpy()).all()  # entity order kept
    assert parts["plan"].notna().sum() > 3_000


def test_lean_join_holds_the_same_values_in_less_memory(engine):
    """`lean=True` (training sets): number features whose every value is a float32 come as float32, the rest as float64.

    Same values as the plain join, in a child process (parts) and in this one; the entity
    frame's own columns (a label) keep their type even where float32 would hold them.
    """
    rows = pd.read_parquet(engine.settings.feature_tables_dir / EVENTS, columns=["customer_id", "event_timestamp"])
    entity = rows.sample(2_100, random_state=4).reset_index(drop=True)
    entity["label"] = np.arange(len(entity), dtype=np.float64)  # float32 would hold it: it must stay float64

    whole = historical_features(engine.settings, entity, SERVICE)
    columns = feature_columns(engine.settings.feature_tables_dir)
    for chunk in (len(entity), 700):  # in this process; in a child process, 3 parts
        lean = historical_features(engine.settings, entity, SERVICE, chunk_rows=chunk, lean=True)
        assert lean["label"].dtype == np.float64
        narrow = [c for c in columns if lean[c].dtype == np.float32]
        wide = [c for c in columns if lean[c].dtype == np.float64]
        assert len(narrow) > 30 and wide  # counts and days fit a float32; sums of money and trends do not
        assert {str(lean[c].dtype) for c in columns} == {"float32", "float64", "object"}  # integers too, as numbers
        for c in wide:
            assert not np.array_equal(whole[c].astype(np.float32).astype(np.float64), whole[c], equal_nan=True), c
        pd.testing.assert_frame_equal(lean, whole, check_dtype=False)
        assert lean[columns].memory_usage(index=False).sum() < 0.8 * whole[columns].memory_usage(index=False).sum()


JOIN_SCRIPT = f"""
import pandas as pd
from churn.settings import load_settings
from features.store import historical_features

if __name__ == "__main__":
    settings = load_settings()
    rows = pd.read_parquet(settings.feature_tables_dir / "{EVENTS}", columns=["customer_id", "event_timestamp"])
    # a small entity frame (handed over at once) in parts of 2 rows: a join that lasts minutes
    historical_features(settings, rows.head(4_000), "{SERVICE}", chunk_rows=2)
"""


def test_join_process_ends_with_its_parent(engine, tmp_path):
    """A join in parts runs in a child process; killing the parent mid-join must not leave it running."""
    script = tmp_path / "join.py"
    script.write_text(JOIN_SCRIPT)
    env = {**os.environ, "CHURN_DATA_DIR": str(engine.settings.data_dir.resolve())}
    parent = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 120
        workers = []
        while not workers and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            workers = [c for c in psutil.Process(parent.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        assert workers, "the join did not start a process of its own"
        time.sleep(10)  # past its start (imports), joining the first of 2,000 parts
        parent.kill()
        assert parent.wait() == -signal.SIGKILL  # killed mid-join, not finished
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"join process {[p.pid for p in alive]} outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_active_batches_are_the_point_in_time_rows_at_as_of(engine):
    """Batch scoring's chunked read equals Feast's join for every active customer, in bounded chunks."""
    settings, as_of = engine.settings, engine.as_of
    customers = active_customers(settings, as_of)["customer_id"]
    batches = list(active_feature_batches(settings.feature_tables_dir, as_of, batch_rows=500, customers=customers))
    assert len(batches) > 1 and max(len(b) for b in batches) <= 500
    streamed = pd.concat(batches, ignore_index=True)
    assert streamed["customer_id"].is_unique and set(streamed["customer_id"]) == set(customers)
    entity = pd.DataFrame({"customer_id": streamed["customer_id"], "event_timestamp": as_of})
    columns = feature_columns(settings.feature_tables_dir)
    feast_rows = historical_features(settings, entity, SERVICE)
    pd.testing.assert_frame_equal(streamed[columns], feast_rows[columns], check_dtype=False)
    scored = pd.read_parquet(engine.interventions.scores_path, columns=["customer_id"])
    assert set(streamed["customer_id"]) == set(scored["customer_id"])  # the same population batch runs score


def test_the_population_joined_in_duckdb_is_active_customers_less_the_cancelled(engine):
    """Batch scoring computes the population in its join's connection: the customers of `active_customers`, in order."""
    settings, as_of = engine.settings, engine.as_of
    expected = active_customers(settings, as_of)["customer_id"]
    population = active_population(settings, as_of)
    with open_active_batches(settings.feature_tables_dir, as_of, 500, population=population) as (total, batches):
        read = pd.concat([b.to_pandas() for b in batches], ignore_index=True)
    assert total == len(read) == len(expected)
    assert read["customer_id"].tolist() == expected.tolist()  # the same customers, in customer_id order
    given = pd.concat(active_feature_batches(settings.feature_tables_dir, as_of, customers=expected), ignore_index=True)
    pd.testing.assert_frame_equal(read, given)
    # customers with a feature row at the latest snapshot who cancelled before it are not active
    rows = pd.read_parquet(settings.feature_tables_dir / EVENTS, columns=["customer_id", "event_timestamp"])
    latest = rows.loc[rows["event_timestamp"] <= pd.Timestamp(as_of), "event_timestamp"].max()
    fresh = set(rows.loc[rows["event_timestamp"] == latest, "customer_id"])
    cancels = pd.read_parquet(settings.ingested_dir / "cancellations.parquet")
    gone = fresh & set(cancels.loc[cancels["event_time"] < pd.Timestamp(as_of), "customer_id"])
    assert gone  # the case includes them
    assert not gone & set(read["customer_id"])


def test_the_active_batches_take_the_customers_one_way(engine):
    with pytest.raises(ValueError, match="either as ids .* or as a SELECT"):
        with open_active_batches(
            engine.settings.feature_tables_dir, engine.as_of, customers=pd.Series(["1"]), population="SELECT '1'"
        ):
            pass


def test_active_batches_need_the_population_of_ingested_data(engine):
    with pytest.raises(ValueError, match="active customers must be given"):
        next(active_feature_batches(engine.settings.feature_tables_dir, engine.as_of))


def test_active_batches_fall_back_to_asof_when_a_view_lacks_the_latest_row(engine, tmp_path):
    """A view stamped at as_of for every active customer is read by an equality join; without, the ASOF rule still holds."""
    import shutil

    import duckdb
    import pyarrow.parquet as pq

    settings, as_of = engine.settings, engine.as_of
    customers = active_customers(settings, as_of)["customer_id"]
    columns = feature_columns(settings.feature_tables_dir)
    fast = pd.concat(active_feature_batches(settings.feature_tables_dir, as_of, customers=customers), ignore_index=True)
    entity = pd.DataFrame({"customer_id": fast["customer_id"], "event_timestamp": fast["event_timestamp"]})
    reference = asof_features(settings.feature_tables_dir, entity)
    pd.testing.assert_frame_equal(fast[columns], reference[columns], check_dtype=False)

    # drop the as_of row of 20 active customers from the events view: their previous weekly row
    # (7 days old, within the TTL) must be read instead, which only the ASOF path can do
    tables = tmp_path / "tables"
    shutil.copytree(settings.feature_tables_dir, tables)
    rows = pd.read_parquet(tables / EVENTS, columns=["customer_id", "event_timestamp"])
    had_row = set(rows.loc[rows["event_timestamp"] == pd.Timestamp(as_of) - pd.Timedelta(days=7), "customer_id"])
    dropped = [c for c in fast["customer_id"] if c in had_row][:20]
    assert len(dropped) == 20
    path = tables / EVENTS
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    kept = con.execute(
        f"SELECT * FROM read_parquet('{path}') WHERE NOT (event_timestamp = TIMESTAMPTZ '{as_of.isoformat()}' "
        f"AND customer_id IN ({', '.join(repr(c) for c in dropped)}))"
    ).to_arrow_table()
    con.close()
    pq.write_table(kept, path)
    slow = pd.concat(active_feature_batches(tables, as_of, customers=customers), ignore_index=True)
    expected = asof_features(tables, entity)
    pd.testing.assert_frame_equal(slow[columns], expected[columns], check_dtype=False)
    # those customers got their previous weekly row, not holes
    events = next(v for v in views_of(tables) if v.path.name == EVENTS).columns
    week_before = pd.DataFrame({"customer_id": dropped, "event_timestamp": pd.Timestamp(as_of) - pd.Timedelta(days=7)})
    previous = asof_features(settings.feature_tables_dir, week_before)
    got = slow.set_index("customer_id").loc[dropped, events].reset_index(drop=True)
    assert got.notna().any(axis=1).all()
    pd.testing.assert_frame_equal(got, previous[events], check_dtype=False)
