"""A wide warehouse export (50,000 customers, 60 columns, a 750-value category) trains and scores as it comes.

The table is `benchmarks/wide_snapshot.py`'s (made up, seeded); the CLI runs it from ingest
to scores with nothing repaired by hand. How long `churn train` takes is the benchmark's
figure, not an assertion here.
"""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmarks.wide_snapshot import AREAS, write_wide_snapshot
from churn.cli import app
from churn.settings import load_settings
from training.registry import load_champion


def _run(args: list[str], env: dict) -> str:
    result = CliRunner().invoke(app, args, env={**env, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow  # about 4 minutes on 2 cores: 50,000 customers, 6 fits of the self-tuning model
def test_a_wide_snapshot_with_a_750_value_category_trains_and_scores(tmp_path):
    config = write_wide_snapshot(tmp_path / "source", rows=50_000)
    table = pd.read_csv(tmp_path / "source" / "wide.csv", nrows=5)
    assert table.shape[1] == 60 and pd.read_csv(tmp_path / "source" / "wide.csv", usecols=["service_area"]).nunique().item() == AREAS
    env = {"CHURN_DATA_DIR": str(tmp_path / "data"), "CHURN_MLRUNS_DIR": str(tmp_path / "mlruns")}
    _run(["ingest", "--config", str(config)], env)
    _run(["features", "build"], env)
    _run(["features", "apply"], env)
    out = _run(["train"], env)
    # what no model should use is left out, and said so
    assert "left out account_number: id-like: 50,000 distinct values" in out
    assert "left out market: constant: the value 'national' on every row" in out
    assert "left out agent_note: free text" in out

    settings = load_settings(data_dir=tmp_path / "data", mlruns_dir=tmp_path / "mlruns")
    model = load_champion(settings, "wide-churn")
    assert "service_area" in model.feature_names and "account_number" not in model.feature_names
    # the 750 areas: the most frequent keep a code of their own, the rare ones share the "other" code
    assert 50 < len(model.categories["service_area"]) <= 250
    evaluation = model.extra["search"]
    assert evaluation and all(0.5 < c["validation_auc"] < 1 for c in evaluation)

    _run(["features", "materialize"], env)
    _run(["score"], env)
    scores = pd.read_parquet(next((tmp_path / "data").rglob("scores*.parquet")))
    assert len(scores) == 50_000 and scores["churn_probability"].between(0, 1).all()
