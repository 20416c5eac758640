"""Generic log features: windows, RFM and point-in-time correctness on a log written by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from churn.errors import DataError
from features.contract import Contract
from features.build import build_features, read_views
from features.ingest import ingest
from training.backtest import log_cutoffs

# customer A buys on three days, B once; the data ends at midnight after 2024-03-30
ORDERS = "cust,at,total\nA,2024-01-10 09:00,10\nA,2024-03-01 12:00,20\nA,2024-03-01 18:00,5\nA,2024-03-30 08:00,40\nB,2024-02-15 10:00,7\n"


@pytest.fixture()
def built(tmp_path):
    (tmp_path / "orders.csv").write_text(ORDERS)
    contract = Contract.model_validate(
        {
            "name": "shop",
            "sources": {"orders": {"shape": "transactions", "path": "orders.csv", "customer_id": "cust", "timestamp": "at", "amount": "total"}},
            "churn": {"definition": "inactivity", "horizon_days": 14, "active_days": 365},
            "evaluation": {"rolling_cutoffs": 2, "cutoff_spacing_days": 7, "train_cutoffs": 3, "train_spacing_days": 7},
        }
    )
    ingest(contract, tmp_path, tmp_path / "ingested")
    result = build_features(tmp_path / "ingested", tmp_path / "tables")
    frame = pd.read_parquet(result.tables["shop_orders"]).set_index(["customer_id", "event_timestamp"])
    return contract, result, frame


def at(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def test_snapshots_are_weekly_back_from_the_end_of_the_data(built):
    _, result, frame = built
    assert result.data_end == at("2024-03-31")
    stamps = sorted(frame.index.get_level_values("event_timestamp").unique())
    assert stamps[-1] == at("2024-03-31")
    assert all((b - a) == pd.Timedelta(days=7) for a, b in zip(stamps, stamps[1:]))


def test_a_row_summarizes_only_what_happened_before_its_stamp(built):
    _, _, frame = built
    # 2024-03-03 sees 2024-01-10 and both rows of 2024-03-01, not 2024-03-30
    row = frame.loc[("A", at("2024-03-03"))]
    assert row["orders_count_all"] == 3
    assert row["orders_frequency"] == 2  # distinct days
    assert row["orders_total_all"] == 35
    assert row["orders_monetary"] == 17.5
    assert row["orders_count_7d"] == 2 and row["orders_days_7d"] == 1
    assert row["orders_total_91d"] == 35
    assert row["orders_recency_days"] == 2
    assert row["orders_tenure_days"] == 53
    assert row["orders_mean_gap_days"] == 51  # one gap of 51 days between 2024-01-10 and 2024-03-01
    latest = frame.loc[("A", at("2024-03-31"))]
    # windows are whole weeks: 2024-03-01 is 30 days before the stamp, outside 28 days; 91 days reach 2024-01-10
    assert latest["orders_total_28d"] == 40 and latest["orders_total_91d"] == 40 + 25 + 10
    assert latest["orders_recency_days"] == 1


def test_log_data_get_generic_tenure_and_recency(built):
    # no snapshot and no activity signal: the lifecycle inputs come from the orders' first and latest rows
    result, frame = built[1], built[2]
    row = frame.loc[("A", at("2024-03-03"))]
    assert row["tenure_days"] == 53 and row["days_since_last_active"] == 2
    fields = {c: text for c, _, text in read_views(result.tables["shop_orders"].parent)["views"]["shop_orders"]}
    assert fields["tenure_days"] == "Days from the customer's first row of orders to the snapshot (tenure)."
    assert "no `activity` signal is declared" in fields["days_since_last_active"]


def test_no_row_before_a_customers_first_purchase(built):
    _, _, frame = built
    first_b = frame.loc["B"].index.min()
    assert first_b == at("2024-02-18")  # the first weekly stamp after 2024-02-15
    assert pd.isna(frame.loc[("B", first_b)]["orders_mean_gap_days"])  # one purchase: no gap yet


def test_views_json_names_every_feature_with_a_description(built):
    _, result, frame = built
    views = read_views(result.tables["shop_orders"].parent)
    fields = views["views"]["shop_orders"]
    assert [c for c, _, _ in fields] == list(frame.columns)
    assert all(text for _, _, text in fields)
    assert views["log_views"] == ["shop_orders"] and views["snapshot_views"] == []


def test_rolling_cutoffs_leave_a_full_horizon_after_every_training_cutoff(built):
    contract, result, _ = built
    evaluation, training = log_cutoffs(contract, result.data_end)
    assert evaluation == [at("2024-03-10"), at("2024-03-17")]
    for e in evaluation:
        assert all(c + pd.Timedelta(days=14) <= e for c in training[e])


# --- signals by kind: a log's kinds declared as activity, tickets, complaints, ... -----------
# customer A: logins on three days, a ticket, a complaint, a failed payment, two NPS answers;
# the data ends at midnight after 2024-03-30 (snapshots every Sunday back from 2024-03-31)
EVENTS = (
    "cust,at,type,score\n"
    "A,2024-03-01 09:00,login,\n"
    "A,2024-03-01 18:00,login,\n"
    "A,2024-03-20 10:00,login,\n"
    "A,2024-03-29 10:00,login,\n"
    "A,2024-03-05 10:00,ticket,\n"
    "A,2024-03-05 11:00,complaint,\n"
    "A,2024-03-25 11:00,card_declined,\n"
    "A,2024-02-01 11:00,nps,9\n"
    "A,2024-03-22 11:00,nps,3\n"
    "A,2024-03-23 11:00,downgrade,\n"
    "B,2024-03-30 08:00,login,\n"
)
SIGNALS = {
    "activity": ["login"], "support_tickets": ["ticket"], "complaints": ["complaint"],
    "failed_payments": ["card_declined"], "plan_changes": ["downgrade", "upgrade"], "survey": ["nps"],
    "survey_score": "score",
}


def _events_contract(signals: dict) -> dict:
    return {
        "name": "app",
        "sources": {
            "events": {
                "shape": "events", "path": "events.csv", "customer_id": "cust", "timestamp": "at", "kind": "type",
                "columns": {"score": "float"}, "signals": signals,
            }
        },
        "churn": {"definition": "inactivity", "horizon_days": 14, "active_days": 365},
    }


@pytest.fixture()
def signalled(tmp_path):
    (tmp_path / "events.csv").write_text(EVENTS)
    contract = Contract.model_validate(_events_contract(SIGNALS))
    ingest(contract, tmp_path, tmp_path / "ingested")
    result = build_features(tmp_path / "ingested", tmp_path / "tables")
    return result, pd.read_parquet(result.tables["app_events"]).set_index(["customer_id", "event_timestamp"])


def test_declared_signals_become_the_engines_own_features(signalled):
    _, frame = signalled
    row = frame.loc[("A", at("2024-03-31"))]
    # activity: logins on 03-01 (twice), 03-20, 03-29; before 2024-03-31
    assert row["sessions_7d"] == 1 and row["sessions_28d"] == 2 and row["sessions_91d"] == 4
    assert row["active_days_7d"] == 1 and row["active_days_28d"] == 2 and row["active_days_91d"] == 3
    assert row["activity_trend_7d_28d"] == pytest.approx((1 + 1.0) / (2 / 4.0 + 1.0))
    assert row["days_since_last_active"] == 2  # 03-29 -> 03-31
    assert row["tenure_days"] == 59  # from the first row, 2024-02-01
    assert row["tickets_28d"] == 1 and row["complaints_28d"] == 1 and row["payment_failures_28d"] == 1
    assert row["plan_changes_91d"] == 1
    assert row["last_survey_score"] == 3 and row["days_since_survey"] == 9  # the answer of 03-22
    # point in time: the 2024-03-10 snapshot sees neither the later logins nor the later answer
    before = frame.loc[("A", at("2024-03-10"))]
    assert before["sessions_28d"] == 2 and before["days_since_last_active"] == 9
    assert before["last_survey_score"] == 9 and before["payment_failures_28d"] == 0
    # a customer with no complaint has zero complaints, not a missing value; no survey: null
    other = frame.loc[("B", at("2024-03-31"))]
    assert other["complaints_28d"] == 0 and pd.isna(other["last_survey_score"])


def test_signal_features_are_described_and_without_a_source_prefix(signalled):
    result, frame = signalled
    fields = {c: text for c, _, text in read_views(result.tables["app_events"].parent)["views"]["app_events"]}
    for feature in ("sessions_7d", "active_days_91d", "complaints_28d", "payment_failures_91d", "last_survey_score"):
        assert feature in frame.columns and fields[feature] and "events" not in fields[feature]
    assert fields["complaints_28d"] == "Complaints in the 28 days before the snapshot."
    assert "events_count_7d" in frame.columns  # the generic counts stay


def test_undeclared_kinds_keep_only_the_generic_features(tmp_path):
    (tmp_path / "events.csv").write_text(EVENTS)
    contract = Contract.model_validate(_events_contract({}))
    ingest(contract, tmp_path, tmp_path / "ingested")
    frame = pd.read_parquet(build_features(tmp_path / "ingested", tmp_path / "tables").tables["app_events"])
    assert "events_type_login_28d" in frame.columns
    assert not {"sessions_7d", "complaints_28d", "last_survey_score"} & set(frame.columns)


@pytest.mark.parametrize(
    "signals, message",
    [
        ({"survey": ["nps"]}, r"signals.survey needs signals.survey_score"),
        ({"activity": ["login"], "complaints": ["login"]}, r"kinds \['login'\] are named for more than one signal"),
        ({"activity": ["login"], "mood": ["x"]}, r"signals\.mood\n\s+Extra inputs are not permitted"),
    ],
)
def test_bad_signals_are_named(signals, message):
    with pytest.raises(ValueError, match=message):
        Contract.model_validate(_events_contract(signals))


def test_signals_need_a_kind_column_and_one_source_each():
    no_kind = _events_contract({"activity": ["login"]})
    del no_kind["sources"]["events"]["kind"]
    with pytest.raises(ValueError, match=r"`signals` name values of the `kind` column: give `kind` too"):
        Contract.model_validate(no_kind)
    twice = _events_contract({"activity": ["login"]})
    twice["sources"]["more"] = {**twice["sources"]["events"], "path": "more.csv"}
    with pytest.raises(ValueError, match=r"signals \['activity'\] are declared in more than one source"):
        Contract.model_validate(twice)


def test_a_survey_score_that_is_not_numeric_is_refused(tmp_path):
    (tmp_path / "events.csv").write_text(EVENTS.replace(",nps,9", ",nps,nine"))
    config = _events_contract(SIGNALS)
    del config["sources"]["events"]["columns"]
    # undeclared, numbers but for one token: the ingest itself tells (features/validate.py: TextTally)
    with pytest.raises(DataError, match=r"column 'score' holds whole numbers but for 1 value that is not: 'nine'"):
        ingest(Contract.model_validate(config), tmp_path, tmp_path / "ingested")
    config["sources"]["events"]["columns"] = {"score": "categorical"}  # declared text: the build refuses it as a score
    contract = Contract.model_validate(config)
    ingest(contract, tmp_path, tmp_path / "ingested")
    with pytest.raises(DataError, match=r"signals.survey_score 'score' must be a numeric column .* ingested as categorical"):
        build_features(tmp_path / "ingested", tmp_path / "tables")


# --- lifecycle inputs: tenure_days from a snapshot's tenure column, one view each -------------

CUSTOMERS = "id,tenure,plan\nA,3,basic\nB,,pro\n"


def _snapshot_contract(**snapshot) -> Contract:
    return Contract.model_validate(
        {
            "name": "telco",
            "sources": {
                "customers": {"shape": "snapshot", "path": "customers.csv", "customer_id": "id", "as_of": "2024-04-01",
                              "columns": {"tenure": "int"}, **snapshot},
                "events": {"shape": "events", "path": "events.csv", "customer_id": "cust", "timestamp": "at",
                           "kind": "type", "signals": {"activity": ["login"]}},
            },
            "churn": {"definition": "inactivity", "horizon_days": 14},
        }
    )


@pytest.mark.parametrize(("unit", "days"), [("months", 3 * 30.44), ("weeks", 21.0), ("years", 3 * 365.25), (None, 3.0)])
def test_tenure_days_from_a_tenure_column_and_its_unit(tmp_path, unit, days):
    (tmp_path / "customers.csv").write_text(CUSTOMERS)
    (tmp_path / "events.csv").write_text(EVENTS)
    contract = _snapshot_contract(tenure="tenure", **({"tenure_unit": unit} if unit else {}))
    ingest(contract, tmp_path, tmp_path / "ingested")
    result = build_features(tmp_path / "ingested", tmp_path / "tables")
    snapshot = pd.read_parquet(result.tables["telco_customers"]).set_index("customer_id")
    assert snapshot.loc["A", "tenure_days"] == pytest.approx(days)
    assert pd.isna(snapshot.loc["B", "tenure_days"])  # unknown tenure stays unknown
    assert snapshot.loc["A", "tenure"] == 3  # the column keeps its own feature too
    # the snapshot has tenure: the events view does not repeat it; activity gives recency there
    events = pd.read_parquet(result.tables["telco_events"])
    assert "tenure_days" not in events.columns and "days_since_last_active" in events.columns


def test_without_snapshot_tenure_the_events_view_carries_it(tmp_path):
    (tmp_path / "customers.csv").write_text(CUSTOMERS)
    (tmp_path / "events.csv").write_text(EVENTS)
    ingest(_snapshot_contract(), tmp_path, tmp_path / "ingested")
    result = build_features(tmp_path / "ingested", tmp_path / "tables")
    assert "tenure_days" not in pd.read_parquet(result.tables["telco_customers"]).columns
    assert "tenure_days" in pd.read_parquet(result.tables["telco_events"]).columns


def test_a_tenure_column_must_be_numeric_and_only_on_a_snapshot_without_signup(tmp_path):
    (tmp_path / "customers.csv").write_text(CUSTOMERS.replace("A,3,", "A,three,"))
    (tmp_path / "events.csv").write_text(EVENTS)
    config = _snapshot_contract(tenure="tenure").model_dump(mode="json")
    del config["sources"]["customers"]["columns"]["tenure"]
    ingest(Contract.model_validate(config), tmp_path, tmp_path / "ingested")
    with pytest.raises(DataError, match=r"`tenure` 'tenure' must be a numeric column .* ingested as categorical"):
        build_features(tmp_path / "ingested", tmp_path / "tables")
    with pytest.raises(ValueError, match=r"`tenure` is for a snapshot source without `signup`"):
        _snapshot_contract(tenure="tenure", signup="since")


# A customers table (attributes fixed at signup) and daily activity summaries of several sessions.
SIGNUPS = "id,joined,plan\nA,2024-01-05 10:00,basic\nB,2024-02-20 08:00,pro\n"
USAGE = (
    "id,at,what,sessions\n"
    "A,2024-01-10 09:00,active,3\nA,2024-03-25 09:00,active,2\nA,2024-03-26 09:00,active,4\nA,2024-03-27 09:00,ticket,\n"
    "B,2024-03-01 09:00,active,1\n"
)


@pytest.fixture()
def with_customers(tmp_path):
    (tmp_path / "customers.csv").write_text(SIGNUPS)
    (tmp_path / "usage.csv").write_text(USAGE)
    contract = Contract.model_validate(
        {
            "name": "app",
            "sources": {
                "customers": {"shape": "customers", "path": "customers.csv", "customer_id": "id", "signup": "joined"},
                "usage": {
                    "shape": "events", "path": "usage.csv", "customer_id": "id", "timestamp": "at", "kind": "what",
                    "columns": {"sessions": "float"},
                    "signals": {"activity": ["active"], "support_tickets": ["ticket"], "activity_sessions": "sessions"},
                },
            },
            "churn": {"definition": "inactivity", "horizon_days": 14},
        }
    )
    ingest(contract, tmp_path, tmp_path / "ingested")
    return build_features(tmp_path / "ingested", tmp_path / "tables")


def test_a_customers_table_is_known_from_each_signup_on(with_customers):
    table = pd.read_parquet(with_customers.tables["app_customers"]).set_index("customer_id")
    assert table.loc["A", "event_timestamp"] == pd.Timestamp("2024-01-05 10:00", tz="UTC")
    assert table.loc["B", "plan"] == "pro"
    assert "app_customers" in read_views(with_customers.tables["app_customers"].parent)["snapshot_views"]  # no TTL


def test_tenure_counts_from_the_signup_and_sessions_from_their_column(with_customers):
    frame = pd.read_parquet(with_customers.tables["app_usage"]).set_index(["customer_id", "event_timestamp"])
    row = frame.loc[("A", at("2024-03-28"))]
    assert row["tenure_days"] == (at("2024-03-28") - at("2024-01-05")).days  # from signup, not the first row (01-10)
    assert row["sessions_7d"] == 2 + 4 and row["active_days_7d"] == 2  # session counts summed; days counted once
    assert row["tickets_28d"] == 1
    assert row["sessions_91d"] == 3 + 2 + 4


def test_a_customers_source_needs_its_signup_and_has_no_label():
    source = {"shape": "customers", "path": "c.csv", "customer_id": "id"}
    logs = {"shape": "events", "path": "e.csv", "customer_id": "id", "timestamp": "at"}
    with pytest.raises(ValueError, match="a customers source needs `signup`"):
        Contract.model_validate({"name": "x", "sources": {"c": source, "e": logs}, "churn": {"definition": "inactivity"}})
    with pytest.raises(ValueError, match="a customers source has no `label`"):
        Contract.model_validate(
            {"name": "x", "sources": {"c": {**source, "signup": "s", "label": "churned"}, "e": logs}, "churn": {"definition": "inactivity"}}
        )
