"""The weekly engine of log views (features/weekly.py) against a plain pandas computation.

A random log of a few dozen customers (text ids, rows at random times of day and some at
midnight sharp, quiet spells longer than `active_days`) goes through `ingest`, then through
the engine; every row of the table is checked against pandas reading the log directly.
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from churn.errors import DataError
from features.contract import Contract
from features.ingest import ingest
from features.weekly import weekly_log_features

ACTIVE_DAYS = 35  # not a multiple of 7: the population rule is exact to the day
KINDS = ["login", "nps", "purchase", "refund", "ticket"]


def _contract(active_days: int = ACTIVE_DAYS, path: str = "log.parquet") -> Contract:
    return Contract.model_validate(
        {
            "name": "shop",
            "sources": {
                "orders": {
                    "shape": "transactions", "path": path, "customer_id": "cust", "timestamp": "at",
                    "amount": "amount", "values": ["qty"], "kind": "type", "columns": {"score": "float", "qty": "int"},
                    "signals": {"activity": ["login"], "support_tickets": ["ticket"], "survey": ["nps"], "survey_score": "score"},
                }
            },
            "churn": {"definition": "inactivity", "horizon_days": 14, "active_days": active_days},
        }
    )


def _random_log(seed: int = 7, customers: int = 24) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rows = []
    for i in range(customers):
        first = int(rng.integers(0, 150))
        days = np.sort(rng.integers(first, 210, int(rng.integers(1, 30))))
        if i % 3 == 0:  # a long quiet spell: out of the population, then back
            days = days[(days < first + 20) | (days > first + 90)]
        for day in days:
            midnight = rng.random() < 0.25  # rows at 00:00:00 sharp: the day a stamp falls on
            seconds = 0 if midnight else int(rng.integers(0, 86_400))
            kind = KINDS[int(rng.integers(0, len(KINDS)))]
            rows.append(
                {
                    "cust": f"c-{i:03d}",
                    "at": start + pd.Timedelta(days=int(day), seconds=seconds),
                    "type": kind,
                    "amount": round(float(rng.uniform(0, 80)), 2),
                    "qty": int(rng.integers(1, 5)),
                    "score": float(rng.integers(0, 11)) if kind == "nps" and rng.random() < 0.8 else np.nan,
                }
            )
    return pd.DataFrame(rows)


def _build(tmp_path, log: pd.DataFrame, contract: Contract | None = None, **options) -> pd.DataFrame:
    """Ingest `log` and run the engine; the table as pandas, and the fields it reported."""
    contract = contract or _contract()
    tmp_path.mkdir(parents=True, exist_ok=True)
    log.to_parquet(tmp_path / "log.parquet", index=False)
    ingest(contract, tmp_path, tmp_path / "ingested")
    manifest = json.loads((tmp_path / "ingested" / "manifest.json").read_text())
    table = weekly_log_features(
        tmp_path / "ingested" / "orders.parquet", "orders", contract, datetime.fromisoformat(manifest["data_end"]),
        manifest["types"]["orders"], tmp_path / "orders.parquet", **options,
    )
    frame = pd.read_parquet(table.path)
    frame.attrs["fields"] = table.fields
    return frame


def _reference(log: pd.DataFrame, active_days: int = ACTIVE_DAYS) -> pd.DataFrame:
    """A few features computed directly from the log: one row per (customer, stamp) in the population."""
    log = log.assign(day=log["at"].dt.floor("D"))
    end = log["day"].max() + pd.Timedelta(days=1)
    n_stamps = max(1, (end - log["at"].min()).days // 7)
    out = []
    for k in range(n_stamps):
        stamp = end - pd.Timedelta(days=7 * k)
        for cust, rows in log[log["at"] < stamp].groupby("cust"):
            last = rows["day"].max()
            if (stamp - last).days > active_days:
                continue
            row = {"customer_id": cust, "event_timestamp": stamp}
            for w in (7, 28, 91, 364):
                recent = rows[rows["day"] >= stamp - pd.Timedelta(days=w)]
                row[f"orders_count_{w}d"] = len(recent)
                row[f"orders_days_{w}d"] = recent["day"].nunique()
                row[f"orders_amount_{w}d"] = recent["amount"].sum()
                row[f"orders_qty_{w}d"] = recent["qty"].sum()
                if w in (28, 91):
                    for kind in KINDS:
                        row[f"orders_type_{kind}_{w}d"] = int((recent["type"] == kind).sum())
                    row[f"active_days_{w}d"] = recent.loc[recent["type"] == "login", "day"].nunique()
                    row[f"tickets_{w}d"] = int((recent["type"] == "ticket").sum())
            row["orders_recency_days"] = (stamp - last).days
            row["orders_tenure_days"] = (stamp - rows["day"].min()).days
            row["orders_frequency"] = rows["day"].nunique()
            row["orders_count_all"] = len(rows)
            row["orders_monetary"] = rows["amount"].sum() / rows["day"].nunique()
            logins = rows.loc[rows["type"] == "login", "day"]
            row["days_since_last_active"] = (stamp - logins.max()).days if len(logins) else np.nan
            answers = rows[(rows["type"] == "nps") & rows["score"].notna()].sort_values("at")
            row["last_survey_score"] = answers["score"].iloc[-1] if len(answers) else np.nan
            surveys = rows.loc[rows["type"] == "nps", "day"]
            row["days_since_survey"] = (stamp - surveys.max()).days if len(surveys) else np.nan
            out.append(row)
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def random_log():
    return _random_log()


@pytest.fixture(scope="module")
def built(random_log, tmp_path_factory):
    return _build(tmp_path_factory.mktemp("weekly"), random_log)


def test_every_row_matches_pandas_on_the_log(random_log, built):
    expected = _reference(random_log).sort_values(["event_timestamp", "customer_id"]).reset_index(drop=True)
    ours = built.reset_index(drop=True)
    # the same customers at the same stamps: the population rule (a row within active_days)
    assert list(zip(ours["customer_id"], ours["event_timestamp"])) == list(
        zip(expected["customer_id"], expected["event_timestamp"])
    )
    assert len(ours) > 100 and ours["event_timestamp"].nunique() > 20
    for column in expected.columns[2:]:
        pd.testing.assert_series_equal(ours[column], expected[column], check_dtype=False, check_names=False, obj=column)


def test_trends_and_mean_gap_follow_their_definitions(built):
    row = built.iloc[len(built) // 2]
    assert row["orders_trend_28d_91d"] == pytest.approx((row["orders_days_28d"] + 1) / (row["orders_days_91d"] * 4 / 13 + 1))
    assert row["orders_trend_91d_364d"] == pytest.approx((row["orders_days_91d"] + 1) / (row["orders_days_364d"] / 4 + 1))
    several = built[built["orders_frequency"] > 1]
    gap = (several["orders_tenure_days"] - several["orders_recency_days"]) / (several["orders_frequency"] - 1)
    assert np.allclose(several["orders_mean_gap_days"], gap)
    assert built.loc[built["orders_frequency"] == 1, "orders_mean_gap_days"].isna().all()


def test_a_row_at_or_after_a_stamp_never_counts_at_that_stamp(random_log, built, tmp_path):
    stamps = sorted(built["event_timestamp"].unique())
    stamp = stamps[len(stamps) // 2]
    # new rows for every customer at the stamp itself and after it (before the end of the data)
    later = pd.DataFrame(
        {
            "cust": random_log["cust"].unique(),
            "at": stamp,
            "type": "nps",
            "amount": 1000.0,
            "qty": 1,
            "score": 0.0,
        }
    )
    later = pd.concat([later, later.assign(at=stamp + pd.Timedelta(days=3, hours=5))])
    more = _build(tmp_path, pd.concat([random_log, later], ignore_index=True))
    before = built[built["event_timestamp"] <= stamp].reset_index(drop=True)
    # (the extra answers may reorder the kind columns, which go by frequency: compare by name)
    pd.testing.assert_frame_equal(more.loc[more["event_timestamp"] <= stamp, before.columns].reset_index(drop=True), before)
    # and they do count at the next stamp
    after = more[more["event_timestamp"] == stamp + pd.Timedelta(days=7)].set_index("customer_id")
    assert (after["orders_recency_days"] <= 4).all()
    answered = random_log[(random_log["type"] == "nps") & random_log["at"].between(stamp, stamp + pd.Timedelta(days=7))]
    unanswered = after.drop(index=answered["cust"].unique(), errors="ignore")
    assert len(unanswered) > 10 and (unanswered["last_survey_score"] == 0).all()


def test_a_customer_is_in_the_table_while_active_within_active_days(tmp_path):
    log = pd.DataFrame(
        {
            "cust": ["quiet", "busy", "busy"],
            "at": pd.to_datetime(["2024-01-10 23:59", "2024-01-02 08:00", "2024-03-30 08:00"], utc=True),
            "type": ["purchase"] * 3,
            "amount": [5.0, 1.0, 2.0],
            "qty": [1, 1, 1],
            "score": [np.nan] * 3,
        }
    )
    frame = _build(tmp_path, log, _contract(active_days=16))
    quiet = frame.loc[frame["customer_id"] == "quiet", "event_timestamp"]
    # stamps are Sundays back from 2024-03-31; 2024-01-14 and 01-21 are 4 and 11 days after 01-10, 01-28 is 18
    assert list(quiet) == list(pd.to_datetime(["2024-01-14", "2024-01-21"], utc=True))
    assert list(frame.loc[frame["customer_id"] == "quiet", "orders_recency_days"]) == [4, 11]


def test_partitions_give_the_same_table(random_log, built, tmp_path):
    for partitions in (3, 7):
        other = _build(tmp_path / str(partitions), random_log, partitions=partitions)
        pd.testing.assert_frame_equal(other, built)
    small = _build(tmp_path / "small", random_log, partition_customers=5)
    pd.testing.assert_frame_equal(small, built)


TEXT_IDS = ["zoë x", "7", "o'brien", "007", "Zed", "10", "9"]


def _text_id_table(tmp_path, partitions: int, progress=lambda done, total: None):
    """The weekly table of a log of one purchase per customer of `TEXT_IDS`, on consecutive days."""
    (tmp_path / "log.csv").write_text(
        "cust,at,type,amount,qty,score\n" + "".join(f"{i},2024-03-0{n + 1} 10:00,purchase,{n + 1},1,\n" for n, i in enumerate(TEXT_IDS))
    )
    contract = _contract(path="log.csv")
    ingest(contract, tmp_path, tmp_path / "ingested")
    manifest = json.loads((tmp_path / "ingested" / "manifest.json").read_text())
    return weekly_log_features(
        tmp_path / "ingested" / "orders.parquet", "orders", contract, datetime.fromisoformat(manifest["data_end"]),
        manifest["types"]["orders"], tmp_path / "orders.parquet", partitions=partitions, progress=progress,
    )


def test_the_window_step_reports_each_partition_done(tmp_path):
    reports = []
    _text_id_table(tmp_path, partitions=3, progress=lambda *r: reports.append(r))
    assert reports == [(1, 3), (2, 3), (3, 3)]


def test_text_ids_stay_text(tmp_path):
    ids = TEXT_IDS
    table = _text_id_table(tmp_path, partitions=2)
    frame = pd.read_parquet(table.path)
    assert sorted(frame["customer_id"].unique()) == sorted(ids)
    # sorted by (event_timestamp, customer_id) as text, whatever the customer numbers inside
    pd.testing.assert_frame_equal(frame, frame.sort_values(["event_timestamp", "customer_id"], ignore_index=True))
    amounts = frame.groupby("customer_id")["orders_amount_all"].max()
    assert amounts["007"] == ids.index("007") + 1 and amounts["7"] == ids.index("7") + 1  # two customers


def test_fields_name_every_column_with_its_kind_and_a_description(built):
    fields = built.attrs["fields"]
    assert [c for c, _, _ in fields] == list(built.columns[2:])
    for column, kind, text in fields:
        # pandas reads an int column with nulls (e.g. days_since_survey) as float64
        nullable_int = kind == "int" and built[column].isna().any()
        assert text and str(built[column].dtype) == ("float64" if kind == "float" or nullable_int else "int64"), column
    assert {kind for _, kind, _ in fields} == {"int", "float"}
    described = {c: text for c, _, text in fields}
    assert described["orders_count_28d"] == "Rows of orders in the 28 days before the snapshot."
    assert described["orders_amount_364d"] == "Sum of amount over rows of orders in the 364 days before the snapshot."
    assert described["orders_trend_28d_91d"].startswith("(active days in 28 d + 1)")
    assert described["tickets_91d"] == "Support tickets in the 91 days before the snapshot."
    assert described["orders_type_refund_91d"] == "Rows of orders with type = 'refund' in the 91 days before the snapshot."


def test_a_log_of_one_day_has_one_stamp(tmp_path, random_log):
    one_day = random_log.assign(at=pd.Timestamp("2024-01-01 10:00", tz="UTC"))
    frame = _build(tmp_path, one_day, _contract(active_days=7))
    assert list(frame["event_timestamp"].unique()) == [pd.Timestamp("2024-01-02", tz="UTC")]
    assert (frame["orders_count_all"] == frame["orders_count_7d"]).all() and (frame["orders_tenure_days"] == 1).all()


def test_bad_input_is_named(tmp_path, random_log):
    with pytest.raises(ValueError, match=r"partitions must be at least 1; got 0"):
        _build(tmp_path / "zero", random_log, partitions=0)
    with pytest.raises(ValueError, match=r"partition_customers must be at least 1; got -5"):
        _build(tmp_path / "negative", random_log, partition_customers=-5)
    config = _contract().model_dump(mode="json")
    config["sources"]["orders"]["columns"] = {"score": "categorical"}
    with pytest.raises(DataError, match=r"signals.survey_score 'score' must be a numeric column .* ingested as categorical"):
        _build(tmp_path / "text", random_log.assign(score="high"), Contract.model_validate(config))


def test_a_log_without_rows_or_active_customers_is_refused(tmp_path, random_log):
    contract = _contract(active_days=7)
    empty = tmp_path / "empty.parquet"
    random_log.head(0).rename(columns={"cust": "customer_id", "at": "event_time"}).to_parquet(empty)
    end = datetime.fromisoformat("2024-02-01T00:00:00+00:00")
    with pytest.raises(DataError, match=r"empty.parquet: the log has no rows"):
        weekly_log_features(empty, "orders", contract, end, {"score": "float"}, tmp_path / "out.parquet")
    # one day of rows 30 days before the end of the data (another source's rows go on):
    # the first stamp after it that the data span keeps is 9 days later, beyond active_days
    lone = tmp_path / "lone.parquet"
    random_log.head(3).rename(columns={"cust": "customer_id", "at": "event_time"}).assign(
        event_time=end - pd.Timedelta(days=30)
    ).to_parquet(lone)
    with pytest.raises(DataError, match=r"lone.parquet: no customer is active at any weekly snapshot"):
        weekly_log_features(lone, "orders", contract, end, {"score": "float"}, tmp_path / "out.parquet")
