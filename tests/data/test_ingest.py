"""`churn ingest`: one test per validation rule, all problems at once, and nothing lost on failure.

Tables are small CSV/Parquet files written by hand into `tmp_path`; the PostgreSQL source
reads a real table from the local server.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from pydantic import ValidationError

from churn.errors import ConfigError, DataError
from features.contract import Contract, load_contract
from features.ingest import MANIFEST, ingest, read_manifest
from features.validate import ContractViolation

from tests.prerequisites import require

CUSTOMERS = "customer_id,signup,plan,monthly_fee,churned\nA1,2024-01-05,basic,10.0,no\nB2,2024-02-10,pro,30.5,yes\nC3,2024-03-01,basic,10.0,no\n"
EVENTS = "customer,time,type,minutes\nA1,2024-02-01 10:00,login,5\nB2,2024-03-01 11:00,login,7\nA1,2024-04-01 09:30,ticket,0\n"
ORDERS = "cust,ordered_at,total\nA1,2024-02-03,19.99\nB2,2024-02-11,5.00\n"


def _config(tmp_path: Path, **changes) -> dict:
    """A valid config over the three files above; `changes` replace whole sources or sections."""
    config = {
        "name": "shop",
        "data_root": str(tmp_path),
        "sources": {
            "customers": {
                "shape": "snapshot",
                "path": "customers.csv",
                "customer_id": "customer_id",
                "signup": "signup",
                "as_of": "2024-06-01",
                "label": "churned",
                "positive": ["yes"],
                "columns": {"monthly_fee": "float"},
            },
            "usage": {"shape": "events", "path": "events.csv", "customer_id": "customer", "timestamp": "time", "kind": "type", "values": ["minutes"]},
            "orders": {"shape": "transactions", "path": "orders.csv", "customer_id": "cust", "timestamp": "ordered_at", "amount": "total"},
        },
        "churn": {"definition": "label"},
    }
    config.update(changes)
    return config


def _write(tmp_path: Path, customers: str = CUSTOMERS, events: str = EVENTS, orders: str = ORDERS) -> None:
    (tmp_path / "customers.csv").write_text(customers)
    (tmp_path / "events.csv").write_text(events)
    (tmp_path / "orders.csv").write_text(orders)


def _ingest(tmp_path: Path, config: dict | None = None):
    contract = Contract.model_validate(config or _config(tmp_path))
    return ingest(contract, tmp_path, tmp_path / "data" / "ingested")


def _problems(tmp_path: Path, config: dict | None = None) -> list[str]:
    with pytest.raises(ContractViolation) as caught:
        _ingest(tmp_path, config)
    return [str(p) for p in caught.value.problems]


def test_a_valid_ingest_writes_every_source_with_the_engine_column_names(tmp_path):
    _write(tmp_path)
    result = _ingest(tmp_path)
    assert result.rows == {"customers": 3, "usage": 3, "orders": 2}
    assert result.customers == 3
    customers = pd.read_parquet(result.out_dir / "customers.parquet")
    assert customers["churned"].tolist() == [0, 1, 0]
    assert customers["plan"].tolist() == ["basic", "pro", "basic"]
    usage = pd.read_parquet(result.out_dir / "usage.parquet")
    assert {"customer_id", "event_time", "type", "minutes"} <= set(usage.columns)
    assert str(usage["event_time"].dt.tz) == "UTC"
    manifest = read_manifest(result.out_dir)
    assert manifest["types"]["customers"]["plan"] == "categorical"
    assert manifest["types"]["usage"]["minutes"] == "int"
    assert manifest["data_end"].startswith("2024-04-02")


def test_missing_required_column(tmp_path):
    _write(tmp_path, orders=ORDERS.replace("total", "sum"))
    [problem] = _problems(tmp_path)
    assert "orders.csv: column 'total' is required by the config but missing" in problem
    assert "'sum'" in problem


def test_wrong_type(tmp_path):
    _write(tmp_path, customers=CUSTOMERS.replace("30.5", "thirty"))
    [problem] = _problems(tmp_path)
    assert "customers.csv: column 'monthly_fee' must be of type float; e.g. row 2: 'thirty' (1 row)" in problem


def test_unparseable_timestamp(tmp_path):
    _write(tmp_path, events=EVENTS.replace("2024-03-01 11:00", "2024-13-45 99:00"))
    [problem] = _problems(tmp_path)
    assert "events.csv: column 'time' has unparseable timestamps; e.g. row 2: '2024-13-45 99:00'" in problem


def test_duplicate_customer_ids_in_a_snapshot(tmp_path):
    _write(tmp_path, customers=CUSTOMERS + "A1,2024-01-05,pro,30.0,no\n")
    [problem] = _problems(tmp_path)
    assert "customers.csv: column 'customer_id' must be unique in a snapshot (one row per customer); e.g. row 1: 'A1' (2 rows)" in problem


def test_events_before_signup(tmp_path):
    _write(tmp_path, events=EVENTS.replace("B2,2024-03-01 11:00", "B2,2024-01-01 11:00"))
    [problem] = _problems(tmp_path)
    assert "events.csv: column 'time' must not be before the customer's signup (signup in the snapshot)" in problem
    assert "customer 'B2'" in problem


def test_negative_amounts_where_not_allowed(tmp_path):
    _write(tmp_path, orders=ORDERS.replace("5.00", "-5.00"))
    [problem] = _problems(tmp_path)
    assert "orders.csv: column 'total' must not be negative (list it in `allow_negative` if it may be); e.g. row 2: -5.0" in problem


def test_negative_amounts_pass_when_allowed(tmp_path):
    _write(tmp_path, orders=ORDERS.replace("5.00", "-5.00"))
    config = _config(tmp_path)
    config["sources"]["orders"]["allow_negative"] = ["total"]
    assert _ingest(tmp_path, config).rows["orders"] == 2


def test_empty_table(tmp_path):
    _write(tmp_path, orders="cust,ordered_at,total\n")
    [problem] = _problems(tmp_path)
    assert "orders.csv: is empty" in problem


def test_labels_that_are_not_binary(tmp_path):
    _write(tmp_path, customers=CUSTOMERS.replace("C3,2024-03-01,basic,10.0,no", "C3,2024-03-01,basic,10.0,maybe"))
    [problem] = _problems(tmp_path)
    assert "customers.csv: column 'churned' must be binary: two distinct values, one of them in `positive` ['yes']" in problem
    assert "['maybe', 'no', 'yes']" in problem


def test_every_problem_is_listed_not_only_the_first(tmp_path):
    _write(
        tmp_path,
        customers=CUSTOMERS.replace("30.5", "thirty"),
        events=EVENTS.replace("2024-03-01 11:00", "yesterday"),
        orders=ORDERS.replace("5.00", "-5.00"),
    )
    with pytest.raises(ContractViolation, match=r"3 problem\(s\)") as caught:
        _ingest(tmp_path)
    columns = sorted(p.column for p in caught.value.problems)
    assert columns == ["monthly_fee", "time", "total"]


def test_a_failed_ingest_leaves_the_earlier_data_intact(tmp_path):
    _write(tmp_path)
    first = _ingest(tmp_path)
    before = {p.name: p.read_bytes() for p in first.out_dir.iterdir()}
    _write(tmp_path, orders=ORDERS.replace("5.00", "-5.00") + "C3,2024-05-01,7.00\n")
    with pytest.raises(ContractViolation):
        _ingest(tmp_path)
    after = {p.name: p.read_bytes() for p in first.out_dir.iterdir()}
    assert after == before
    assert sorted(p.name for p in first.out_dir.parent.iterdir()) == ["ingested"]  # no staging folder left behind


def test_a_second_ingest_replaces_the_first(tmp_path):
    _write(tmp_path)
    _ingest(tmp_path)
    _write(tmp_path, orders=ORDERS + "C3,2024-05-01,7.00\n")
    assert _ingest(tmp_path).rows["orders"] == 3
    assert pd.read_parquet(tmp_path / "data" / "ingested" / "orders.parquet").shape[0] == 3
    assert (tmp_path / "data" / "ingested" / MANIFEST).exists()


def test_where_and_derive_are_sql_over_the_typed_table(tmp_path):
    _write(tmp_path, orders="cust,ordered_at,qty,price\nA1,2024-02-03,2,9.5\n,2024-02-04,1,3.0\nB2,2024-02-11,3,1.25\n")
    config = _config(tmp_path)
    config["sources"]["orders"].update(where="cust IS NOT NULL", derive={"total": "qty * price"})
    result = _ingest(tmp_path, config)
    orders = pd.read_parquet(result.out_dir / "orders.parquet")
    assert orders["total"].tolist() == [19.0, 3.75]


def test_a_missing_file_is_named(tmp_path):
    _write(tmp_path)
    (tmp_path / "orders.csv").unlink()
    [problem] = _problems(tmp_path)
    assert "orders.csv: source 'orders': file not found" in problem


def test_parquet_sources_keep_their_types(tmp_path):
    _write(tmp_path)
    pd.read_csv(tmp_path / "orders.csv").assign(ordered_at=lambda d: pd.to_datetime(d["ordered_at"])).to_parquet(tmp_path / "orders.parquet")
    config = _config(tmp_path)
    config["sources"]["orders"]["path"] = "orders.parquet"
    result = _ingest(tmp_path, config)
    assert read_manifest(result.out_dir)["types"]["orders"]["total"] == "float"


def _parquet_log(tmp_path: Path, minutes: list, ids: list | None = None, times: list | None = None) -> dict:
    """A config whose usage log is a Parquet file of `len(minutes)` rows (integer ids, typed columns)."""
    n = len(minutes)
    pd.DataFrame(
        {
            "customer": ids or [1, 2] * (n // 2) + [1] * (n % 2),
            "time": pd.to_datetime(times or [f"2024-04-{1 + i:02d} 10:00" for i in range(n)]),
            "type": ["login", "ticket", "login"] * (n // 3) + ["login"] * (n % 3),
            "code": [str(i) for i in range(n)],  # text of whole numbers: an int column
            "minutes": minutes,
        }
    ).to_parquet(tmp_path / "usage.parquet", row_group_size=4)
    _write(tmp_path, customers=CUSTOMERS.replace("A1,", "1,").replace("B2,", "2,"), orders=ORDERS.replace("A1,", "1,").replace("B2,", "2,"))
    config = _config(tmp_path)
    config["sources"]["usage"].update(path="usage.parquet", allow_negative=[])
    config["sources"]["orders"]["customer_id"] = "cust"
    return config


def test_a_parquet_log_is_streamed_in_chunks_with_the_tables_of_one_read(tmp_path, monkeypatch):
    import features.ingest as ingest_module

    config = _parquet_log(tmp_path, [5, 7, 0, 3, 2, 1, 4])
    one = _ingest(tmp_path, config)
    whole = {n: pd.read_parquet(one.out_dir / f"{n}.parquet") for n in ("customers", "usage", "orders")}
    manifest = read_manifest(one.out_dir)
    monkeypatch.setattr(ingest_module, "STREAM_ROWS", 2)  # 4 chunks, the last short
    chunked = _ingest(tmp_path, config)
    for name, frame in whole.items():
        pd.testing.assert_frame_equal(pd.read_parquet(chunked.out_dir / f"{name}.parquet"), frame)
    assert read_manifest(chunked.out_dir) == manifest
    assert manifest["types"]["usage"]["code"] == "int" and manifest["types"]["usage"]["type"] == "categorical"
    assert chunked.rows["usage"] == 7 and chunked.customers == 3


def test_ingest_reports_each_chunk_of_a_streamed_log_and_each_source_read_whole(tmp_path, monkeypatch):
    import features.ingest as ingest_module

    config = _parquet_log(tmp_path, [5, 7, 0, 3, 2, 1, 4])
    monkeypatch.setattr(ingest_module, "STREAM_ROWS", 2)  # the log in 4 chunks; customers and orders one part each
    reports = []
    ingest(Contract.model_validate(config), tmp_path, tmp_path / "data" / "ingested", progress=lambda *r: reports.append(r))
    assert reports == [(1, 6), (2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]


def test_problems_of_a_streamed_log_name_the_row_of_the_file_and_count_every_chunk(tmp_path, monkeypatch):
    import features.ingest as ingest_module

    monkeypatch.setattr(ingest_module, "STREAM_ROWS", 2)
    times = [f"2024-04-{1 + i:02d} 10:00" for i in range(7)]
    times[4] = "2024-01-01 10:00"  # customer 1 (row 5) before its signup on 2024-01-05
    config = _parquet_log(tmp_path, [5, 7, -1, 3, 2, -4, 4], times=times)
    problems = _problems(tmp_path, config)
    assert problems[0].endswith("usage.parquet: column 'minutes' must not be negative (list it in `allow_negative` if it may be); e.g. row 3: -1 (2 rows)")
    assert "usage.parquet: column 'time' must not be before the customer's signup (signup in the snapshot); e.g. row 5: customer '1'" in problems[1]
    assert problems[1].endswith("(1 row)") and len(problems) == 2


def test_a_failed_streamed_ingest_leaves_the_earlier_data_intact(tmp_path, monkeypatch):
    import features.ingest as ingest_module

    monkeypatch.setattr(ingest_module, "STREAM_ROWS", 2)
    first = _ingest(tmp_path, _parquet_log(tmp_path, [5, 7, 0, 3, 2, 1, 4]))
    before = {p.name: p.read_bytes() for p in first.out_dir.iterdir()}
    with pytest.raises(ContractViolation, match="row 7: -4"):  # in the last chunk, after others were written
        _ingest(tmp_path, _parquet_log(tmp_path, [5, 7, 0, 3, 2, 1, -4]))
    assert {p.name: p.read_bytes() for p in first.out_dir.iterdir()} == before
    assert sorted(p.name for p in first.out_dir.parent.iterdir()) == ["ingested"]  # no staging folder left behind


@pytest.fixture()
def postgres_table():
    """A throw-away table in this issue's own database on the local PostgreSQL server."""
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = 'churn_issue3_test'")).scalar():
                conn.execute(sa.text("CREATE DATABASE churn_issue3_test"))
    except sa.exc.OperationalError as exc:
        require(False, f"PostgreSQL at 127.0.0.1:5432 is not reachable (.ci/run starts it): {exc}")
    finally:
        admin.dispose()
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/churn_issue3_test"
    table = f"orders_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    frame = pd.DataFrame({"cust": ["A1", "B2"], "ordered_at": pd.to_datetime(["2024-02-03", "2024-02-11"], utc=True), "total": [19.99, 5.0]})
    frame.to_sql(table, engine, index=False)
    yield url, table
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {table}"))
    engine.dispose()


def test_postgresql_table_and_query_sources(tmp_path, postgres_table):
    url, table = postgres_table
    _write(tmp_path)
    config = _config(tmp_path)
    config["sources"]["orders"] = {"shape": "transactions", "url": url, "table": table, "customer_id": "cust", "timestamp": "ordered_at", "amount": "total"}
    config["sources"]["refunds"] = {
        "shape": "transactions", "url": url, "query": f"SELECT cust, ordered_at, -total AS total FROM {table}",
        "customer_id": "cust", "timestamp": "ordered_at", "amount": "total",
    }
    with pytest.raises(ContractViolation, match=rf"churn_issue3_test \(query\): column 'total' must not be negative") as caught:
        _ingest(tmp_path, config)
    assert len(caught.value.problems) == 1  # the table source itself is valid
    del config["sources"]["refunds"]
    assert _ingest(tmp_path, config).rows["orders"] == 2


def test_config_errors_name_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: shop\nsources:\n  usage: {shape: events, path: e.csv, customer_id: c}\nchurn: {definition: inactivity}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid config:\n  sources.usage: Value error, a events source needs a `timestamp` column"):
        load_contract(path)


def test_toml_and_yaml_configs_read_the_same(tmp_path):
    (tmp_path / "c.yaml").write_text("name: shop\nsources:\n  o: {shape: transactions, path: o.csv, customer_id: c, timestamp: t, amount: a}\nchurn: {definition: inactivity, horizon_days: 60}\n")
    (tmp_path / "c.toml").write_text(
        'name = "shop"\n[sources.o]\nshape = "transactions"\npath = "o.csv"\ncustomer_id = "c"\ntimestamp = "t"\namount = "a"\n'
        '[churn]\ndefinition = "inactivity"\nhorizon_days = 60\n'
    )
    assert load_contract(tmp_path / "c.yaml")[0] == load_contract(tmp_path / "c.toml")[0]



# --- the data set's own action catalog -------------------------------------------------------


def test_a_config_naming_an_action_catalog_ingests_a_copy(tmp_path):
    _write(tmp_path)
    (tmp_path / "catalogs").mkdir()
    (tmp_path / "catalogs" / "shop_actions.yaml").write_text("risk_bands: {medium: 0.1, high: 0.3}\nactions: []\n")
    config = {**_config(tmp_path), "actions": "catalogs/shop_actions.yaml"}
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(config))
    contract, root = load_contract(path)
    assert contract.actions == str(tmp_path / "catalogs" / "shop_actions.yaml")  # relative to the config file
    out = ingest(contract, root, tmp_path / "data" / "ingested").out_dir
    assert (out / "actions.yaml").read_text() == (tmp_path / "catalogs" / "shop_actions.yaml").read_text()
    assert read_manifest(out)["actions"] == {"file": "actions.yaml", "from": contract.actions}
    # a config without one: no copy, and the manifest says so
    out = _ingest(tmp_path).out_dir
    assert not (out / "actions.yaml").exists() and read_manifest(out)["actions"] is None


def test_a_missing_action_catalog_is_named(tmp_path):
    _write(tmp_path)
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump({**_config(tmp_path), "actions": "nowhere.yaml"}))
    with pytest.raises(ConfigError, match=r"shop.yaml: actions: action catalog .*nowhere.yaml not found"):
        load_contract(path)
    contract = Contract.model_validate({**_config(tmp_path), "actions": str(tmp_path / "gone.yaml")})
    with pytest.raises(DataError, match=r"actions: action catalog .*gone.yaml not found"):
        ingest(contract, tmp_path, tmp_path / "data" / "ingested")
    assert not (tmp_path / "data" / "ingested").exists()


def test_the_cli_refuses_an_invalid_catalog_and_makes_a_valid_one_the_default(tmp_path):
    from typer.testing import CliRunner

    from churn.cli import app
    from churn.settings import load_settings

    _write(tmp_path)
    catalog = tmp_path / "shop_actions.yaml"
    catalog.write_text("risk_bands: {medium: 0.1, high: 0.3}\nactions: []\n")
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump({**_config(tmp_path), "actions": "shop_actions.yaml"}))
    env = {"CHURN_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(app, ["ingest", "--config", str(path)], env=env)
    assert result.exit_code == 1
    # compared without whitespace: the console wraps the message wherever it likes, the long path included
    assert "shop_actions.yaml:actions:Listshouldhaveatleast1item" in "".join(result.output.split())
    assert not (tmp_path / "data" / "ingested").exists()
    catalog.write_text(
        "risk_bands: {medium: 0.1, high: 0.3}\nactions:\n  - {name: call, channel: phone, cost: 1, effect: 0.1, "
        "reason: r, segments: [high], risk_bands: [high], when: [{feature: plan, op: '==', value: basic}]}\n"
    )
    result = CliRunner().invoke(app, ["ingest", "--config", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert load_settings(data_dir=tmp_path / "data").actions_path == tmp_path / "data" / "ingested" / "actions.yaml"


# --- ingest that tells (issue 17): each refusal names what is wrong and keeps the earlier data -------------


def _refused(tmp_path: Path, config: dict | None = None, **files: str) -> list[str]:
    """Ingest the valid tables, then `files` (customers/events/orders text) with `config`: the problems of the refusal.

    Asserts that the refusal left the first ingest's folder byte for byte as it was.
    """
    _write(tmp_path)
    first = _ingest(tmp_path).out_dir
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    _write(tmp_path, **files)
    problems = _problems(tmp_path, config)
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert sorted(p.name for p in first.parent.iterdir()) == ["ingested"]  # no staging folder left behind
    return problems


def _with_column(table: str, name: str, values: list[str]) -> str:
    """`table` (CSV text) with one more column."""
    lines = table.strip().split("\n")
    return "\n".join(f"{line},{value}" for line, value in zip(lines, [name, *values])) + "\n"


def test_a_missing_value_marker_in_an_undeclared_number_column_is_named_with_the_fix(tmp_path):
    customers = _with_column(_with_column(CUSTOMERS, "calls", ["3", "NA", "5"]), "minutes", ["NA", "1.5", "NA"])
    assert _refused(tmp_path, customers=customers) == [
        f"{tmp_path / 'customers.csv'}: column 'calls' holds whole numbers but for 1 value that is not: 'NA' (row 2, 1 row); "
        "if it marks a missing value, add `na_values: ['NA']`; if the column is text, declare it: `columns: {calls: categorical}`",
        f"{tmp_path / 'customers.csv'}: column 'minutes' holds numbers but for 1 value that is not: 'NA' (row 1, 2 rows); "
        "if it marks a missing value, add `na_values: ['NA']`; if the column is text, declare it: `columns: {minutes: categorical}`",
    ]
    # the fix the message gives: NA is missing, the columns are numbers
    config = _config(tmp_path)
    config["sources"]["customers"]["na_values"] = ["NA"]
    out = _ingest(tmp_path, config).out_dir
    assert read_manifest(out)["types"]["customers"]["calls"] == "int"
    assert read_manifest(out)["types"]["customers"]["minutes"] == "float"
    calls = pd.read_parquet(out / "customers.parquet")["calls"]
    assert calls.isna().tolist() == [False, True, False] and calls.dropna().tolist() == [3, 5]


def test_text_in_an_undeclared_number_column_is_named_and_real_text_stays_categorical(tmp_path):
    scores = ["700", "abc", "650"]
    customers = _with_column(_with_column(CUSTOMERS, "credit_score", scores), "city", ["Oslo", "Lima", "Oslo"])
    [problem] = _refused(tmp_path, customers=customers)
    assert problem.endswith(
        "column 'credit_score' holds whole numbers but for 1 value that is not: 'abc' (row 2, 1 row); "
        "if it marks a missing value, add `na_values: ['abc']`; if the column is text, declare it: `columns: {credit_score: categorical}`"
    )
    # declared categorical (the column really is text): accepted as it is
    config = _config(tmp_path)
    config["sources"]["customers"]["columns"]["credit_score"] = "categorical"
    types = read_manifest(_ingest(tmp_path, config).out_dir)["types"]["customers"]
    assert types["credit_score"] == "categorical" and types["city"] == "categorical"


def test_a_column_of_many_kinds_of_text_and_a_few_numbers_is_text_without_a_word(tmp_path):
    customers = _with_column(CUSTOMERS, "referrer", ["friend", "7", "ad"])  # more kinds of text than numbers
    _write(tmp_path, customers=customers)
    assert read_manifest(_ingest(tmp_path).out_dir)["types"]["customers"]["referrer"] == "categorical"


def test_four_faults_of_one_file_are_four_problems(tmp_path):
    customers = (
        "customer_id,signup,plan,monthly_fee,churned,calls,score\n"
        "A1,2024-01-05,basic,10.0,no,3,700\n"
        "B2,2024-02-10,pro,n/a,yes,x,650\n"
        ",2024-03-01,basic,10.0,no,5,??\n"
        "D4,2024-03-02,basic,12.0,no,4,610\n"
    )
    problems = _refused(tmp_path, customers=customers)
    where = tmp_path / "customers.csv"
    assert problems == [
        f"{where}: column 'monthly_fee' must be of type float; e.g. row 2: 'n/a' (1 row); if it marks a missing value, add `na_values: ['n/a']`",
        f"{where}: column 'calls' holds whole numbers but for 1 value that is not: 'x' (row 2, 1 row); "
        "if it marks a missing value, add `na_values: ['x']`; if the column is text, declare it: `columns: {calls: categorical}`",
        f"{where}: column 'score' holds whole numbers but for 1 value that is not: '??' (row 3, 1 row); "
        "if it marks a missing value, add `na_values: ['??']`; if the column is text, declare it: `columns: {score: categorical}`",
        f"{where}: column 'customer_id' must hold a customer id on every row; e.g. row 3: <NA> (1 row)",
    ]


@pytest.mark.parametrize(
    ("labels", "positive"),
    [(["0", "1", "0"], [1]), (["0.0", "1.0", "0.0"], [1]), (["0.0", "1.0", "0.0"], ["1"]), (["No", "Yes", "No"], [1, "Yes"])],
)
def test_labels_and_positive_values_may_be_numbers_or_text(tmp_path, labels, positive):
    customers = CUSTOMERS.replace(",no\n", ",{}\n").replace(",yes\n", ",{}\n")
    _write(tmp_path, customers=customers.format(*labels))
    config = _config(tmp_path)
    config["sources"]["customers"]["positive"] = positive
    assert pd.read_parquet(_ingest(tmp_path, config).out_dir / "customers.parquet")["churned"].tolist() == [0, 1, 0]


def test_a_numeric_label_that_is_not_binary_is_named(tmp_path):
    config = _config(tmp_path)
    config["sources"]["customers"]["positive"] = [1]
    _write(tmp_path)
    customers = CUSTOMERS.replace(",no\n", ",0.0\n", 1).replace(",yes\n", ",1.0\n").replace(",no\n", ",2\n")
    [problem] = _refused(tmp_path, config, customers=customers)
    assert problem.endswith("column 'churned' must be binary: two distinct values, one of them in `positive` ['1']; e.g. got values ['0', '1', '2']")


def _split(table: str, at: int) -> tuple[str, str]:
    """A CSV table as two files: its header and first `at` rows, its header and the rest."""
    header, *rows = table.strip().split("\n")
    return "\n".join([header, *rows[:at]]) + "\n", "\n".join([header, *rows[at:]]) + "\n"


def test_a_source_may_be_several_files_by_a_glob(tmp_path):
    (tmp_path / "parts").mkdir()
    first, second = _split(CUSTOMERS, 2)
    (tmp_path / "parts" / "customers-2.csv").write_text(second)
    (tmp_path / "parts" / "customers-1.csv").write_text(first)
    _write(tmp_path)
    config = _config(tmp_path)
    config["sources"]["customers"]["path"] = "parts/customers-*.csv"
    out = _ingest(tmp_path, config).out_dir
    customers = pd.read_parquet(out / "customers.parquet")
    assert customers["customer_id"].tolist() == ["A1", "B2", "C3"]  # in the files' sorted order
    assert customers["churned"].tolist() == [0, 1, 0]


def test_problems_of_a_glob_name_the_file_and_its_row_and_a_file_of_other_columns(tmp_path):
    (tmp_path / "parts").mkdir()
    first, second = _split(CUSTOMERS, 2)
    (tmp_path / "parts" / "customers-1.csv").write_text(first)
    (tmp_path / "parts" / "customers-2.csv").write_text(second.replace("10.0", "ten"))
    config = _config(tmp_path)
    config["sources"]["customers"]["path"] = "parts/customers-*.csv"
    [problem] = _refused(tmp_path, config)
    assert problem == (
        f"{tmp_path / 'parts' / 'customers-*.csv'}: column 'monthly_fee' must be of type float; "
        "e.g. parts/customers-2.csv row 1: 'ten' (1 row); if it marks a missing value, add `na_values: ['ten']`"
    )
    (tmp_path / "parts" / "customers-2.csv").write_text(second.replace("plan,", "tier,"))
    [problem] = _problems(tmp_path, config)
    assert problem.endswith(
        "parts/customers-*.csv: file parts/customers-2.csv has ['tier'] too; lacks ['plan']: every file of a source "
        "must have the columns of the first, parts/customers-1.csv"
    )
    config["sources"]["customers"]["path"] = "parts/nothing-*.csv"
    [problem] = _problems(tmp_path, config)
    assert problem.endswith("parts/nothing-*.csv: source 'customers': file not found (no file matches the glob)")


def test_a_streamed_parquet_log_may_be_several_files(tmp_path, monkeypatch):
    import features.ingest as ingest_module

    config = _parquet_log(tmp_path, [5, 7, 0, 3, 2, 1, 4])
    whole = pd.read_parquet(_ingest(tmp_path, config).out_dir / "usage.parquet")
    log = pd.read_parquet(tmp_path / "usage.parquet")
    (tmp_path / "usage").mkdir()
    log.iloc[:3].to_parquet(tmp_path / "usage" / "part-1.parquet", row_group_size=2)
    log.iloc[3:].assign(minutes=lambda d: d["minutes"].where(d.index != 5, -1)).to_parquet(tmp_path / "usage" / "part-2.parquet")
    config["sources"]["usage"]["path"] = "usage/part-*.parquet"
    monkeypatch.setattr(ingest_module, "STREAM_ROWS", 2)
    [problem] = _problems(tmp_path, config)
    assert problem.endswith("column 'minutes' must not be negative (list it in `allow_negative` if it may be); e.g. usage/part-2.parquet row 3: -1 (1 row)")
    log.iloc[3:].to_parquet(tmp_path / "usage" / "part-2.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(_ingest(tmp_path, config).out_dir / "usage.parquet"), whole)


def test_a_snapshot_without_an_id_column_may_number_its_rows(tmp_path):
    customers = "\n".join(line.split(",", 1)[1] for line in CUSTOMERS.strip().split("\n")) + "\n"  # no customer_id
    _write(tmp_path, customers=customers)
    snapshot = {**_config(tmp_path)["sources"]["customers"], "row_id": True, "signup": None}
    del snapshot["customer_id"]
    config = _config(tmp_path, sources={"customers": snapshot})
    out = _ingest(tmp_path, config).out_dir
    assert pd.read_parquet(out / "customers.parquet")["customer_id"].tolist() == ["1", "2", "3"]
    # a table that has a column of that name already is told to name it as its id
    [problem] = _refused(tmp_path, config, customers=_with_column(customers, "row_id", ["x", "y", "z"]))
    assert problem.endswith("column 'row_id' exists, and `row_id: true` would make the row number a column of that name: name it in `customer_id` instead")


def test_row_ids_are_refused_where_they_mean_nothing(tmp_path):
    events = {**_config(tmp_path)["sources"]["usage"], "row_id": True}
    del events["customer_id"]
    with pytest.raises(ValidationError, match=r"`row_id` is for a snapshot \(one row per customer\); the rows of a events source must name their customer"):
        Contract.model_validate(_config(tmp_path, sources={**_config(tmp_path)["sources"], "usage": events}))
    config = _config(tmp_path)
    snapshot = config["sources"]["customers"]
    del snapshot["customer_id"]
    with pytest.raises(ValidationError, match=r"sources.customers: `row_id` numbers the snapshot's rows, which no other source can name"):
        Contract.model_validate({**config, "sources": {**config["sources"], "customers": {**snapshot, "row_id": True}}})
    with pytest.raises(ValidationError, match=r"a source needs `customer_id`: the column with the customer id \(or, for a snapshot without one, `row_id: true`\)"):
        Contract.model_validate(config)


def test_an_id_derived_as_a_number_is_text_like_every_id(tmp_path):
    _write(tmp_path, orders="cust_no,ordered_at,total\n1,2024-02-03,19.99\n2,2024-02-11,5.00\n")
    customers = CUSTOMERS.replace("A1,", "1,").replace("B2,", "2,").replace("C3,", "3,")
    events = EVENTS.replace("A1,", "1.0,").replace("B2,", "2.0,")
    _write(tmp_path, customers=customers, events=events, orders="cust_no,ordered_at,total\n1,2024-02-03,19.99\n2,2024-02-11,5.00\n")
    config = _config(tmp_path)
    config["sources"]["orders"].update(customer_id="cust", derive={"cust": "cust_no * 10 // 10"})  # BIGINT
    config["sources"]["usage"].update(customer_id="cid", derive={"cid": "CAST(customer AS DOUBLE)"})  # 1.0 -> "1"
    out = _ingest(tmp_path, config).out_dir
    for name in ("orders", "usage", "customers"):
        ids = pd.read_parquet(out / f"{name}.parquet")["customer_id"]
        assert pd.api.types.is_string_dtype(ids) and set(ids) <= {"1", "2", "3"}, (name, ids)


def test_an_unknown_config_key_suggests_the_closest_known_one(tmp_path):
    config = _config(tmp_path)
    config["sources"]["orders"]["custmer_id"] = config["sources"]["orders"].pop("customer_id")
    config["evalution"] = {"folds": 3}
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as caught:
        load_contract(path)
    assert "sources.orders.custmer_id: Extra inputs are not permitted; did you mean `customer_id`?" in str(caught.value)
    assert "evalution: Extra inputs are not permitted; did you mean `evaluation`?" in str(caught.value)


def _signups(*dates: str) -> str:
    lines = CUSTOMERS.strip().split("\n")
    return "\n".join([lines[0]] + [",".join([*line.split(",")[:1], d, *line.split(",")[2:]]) for line, d in zip(lines[1:], dates)]) + "\n"


def test_numeric_dates_take_their_day_month_order_from_the_whole_column(tmp_path):
    # 13/03 can only be day-first, so 05/01 is the 5th of January, not the 1st of May
    _write(tmp_path, customers=_signups("05/01/2024", "10/02/2024", "13/03/2024"))
    signups = pd.read_parquet(_ingest(tmp_path).out_dir / "customers.parquet")["signup_at"]
    assert signups.dt.strftime("%Y-%m-%d").tolist() == ["2024-01-05", "2024-02-10", "2024-03-13"]


def test_numeric_dates_of_no_telling_order_are_refused_until_a_format_says_it(tmp_path):
    ambiguous = _signups("05/01/2024", "10/02/2024", "01/03/2024")
    assert _refused(tmp_path, customers=ambiguous) == [
        f"{tmp_path / 'customers.csv'}: column 'signup' writes dates whose day and month order cannot be told "
        "(no value above 12 in either place, e.g. '05/01/2024'); set `timestamp_format`, e.g. '%d/%m/%Y' or '%m/%d/%Y'"
    ]
    config = _config(tmp_path)
    config["sources"]["customers"]["timestamp_format"] = "%d/%m/%Y"
    signups = pd.read_parquet(_ingest(tmp_path, config).out_dir / "customers.parquet")["signup_at"]
    assert signups.dt.strftime("%Y-%m-%d").tolist() == ["2024-01-05", "2024-02-10", "2024-03-01"]


def test_numbers_written_for_reading_are_told_with_a_derive_that_reads_them(tmp_path):
    customers = _with_column(CUSTOMERS, "balance", ['"$1,234.50"', '"$12.00"', '"$980.25"'])
    [problem] = _refused(tmp_path, customers=customers)
    assert problem == (
        f"{tmp_path / 'customers.csv'}: column 'balance' holds numbers written for reading (e.g. '$1,234.50': currency "
        "or percent signs, thousands separators), which would be read as text; derive the number and ignore the text, "
        """e.g. `derive: {balance_value: "CAST(regexp_replace(balance, '[^0-9.+-]', '', 'g') AS DOUBLE)"}` and `ignore: [balance]`"""
    )
    # the fix it names, written into the config as YAML, works
    fix = yaml.safe_load(problem.split("e.g. `derive: ")[1].split("` and")[0])
    config = _config(tmp_path)
    config["sources"]["customers"].update(derive=fix, ignore=["balance"])
    table = pd.read_parquet(_ingest(tmp_path, config).out_dir / "customers.parquet")
    assert table["balance_value"].tolist() == [1234.5, 12.0, 980.25] and "balance" not in table
