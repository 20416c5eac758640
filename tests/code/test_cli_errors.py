"""Every failure of a `churn` command ends in one `error:` line, never a raw traceback (issue 17).

The engine's own errors say what is wrong; anything else (a corrupt file a library trips on,
a bug) is named by its type and message, with `CHURN_DEBUG=1` to see its trace.
"""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner, Result

from churn.cli import app


def ingest_shop(tmp_path) -> tuple[dict, Result]:
    """`churn ingest` of a three-customer snapshot under `tmp_path`: the env to run commands in, and its result."""
    (tmp_path / "shop.csv").write_text("id,plan,left\nA,basic,0\nB,pro,1\nC,basic,0\n")
    config = {
        "name": "shop", "data_root": str(tmp_path), "churn": {"definition": "label"},
        "sources": {"customers": {"shape": "snapshot", "path": "shop.csv", "customer_id": "id", "as_of": "2024-06-01", "label": "left"}},
    }
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(config))
    env = {"CHURN_DATA_DIR": str(tmp_path / "data"), "CHURN_MLRUNS_DIR": str(tmp_path / "mlruns"), "CHURN_DEBUG": ""}
    result = CliRunner().invoke(app, ["ingest", "--config", str(tmp_path / "shop.yaml")], env=env)
    assert result.exit_code == 0, result.output
    return env, result


@pytest.fixture()
def corrupt(tmp_path):
    """An ingested snapshot whose table was overwritten with bytes that are not Parquet, and the env to run in."""
    env, _ = ingest_shop(tmp_path)
    (tmp_path / "data" / "ingested" / "customers.parquet").write_bytes(b"not parquet at all")
    return env


def test_an_unexpected_error_is_one_error_line_naming_its_type(corrupt):
    result = CliRunner().invoke(app, ["features", "build"], env=corrupt)
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # the console wraps the line at its width
    assert output.startswith("error: unexpected pyarrow.lib.ArrowInvalid: Could not open Parquet input source"), output
    assert output.endswith("(a bug or an unhandled case; run with CHURN_DEBUG=1 for the traceback)"), output
    assert output.count("error:") == 1 and "Traceback" not in output


def test_churn_debug_keeps_the_traceback(corrupt):
    result = CliRunner().invoke(app, ["features", "build"], env={**corrupt, "CHURN_DEBUG": "1"})
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "ArrowInvalid" and "error:" not in result.output


def test_the_engines_own_errors_and_usage_errors_stay_as_they_were(tmp_path):
    env = {"CHURN_DATA_DIR": str(tmp_path / "data"), "CHURN_MLRUNS_DIR": str(tmp_path / "mlruns")}
    result = CliRunner().invoke(app, ["ingest", "--config", str(tmp_path / "none.yaml")], env=env)
    # compared without whitespace: the console wraps the message wherever it likes, the long path included
    assert result.exit_code == 1 and "".join(result.output.split()) == f"error:{tmp_path / 'none.yaml'}:configfilenotfound"
    result = CliRunner().invoke(app, ["ingest", "--no-such-option"], env=env)
    assert result.exit_code == 2 and "No such option" in result.output  # click's usage error, not an `error:` line
