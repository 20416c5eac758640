"""A config that derives its customer id as a number runs through features and the training set (issue 17).

Such an id once reached `churn train` as int64 beside the feature tables' text ids and ended in a
raw `IbisTypeError ... customer_id:string and customer_id:int64 are not comparable`. Ids are
text after ingest whatever made them; this drives ingest -> features build/apply -> the
point-in-time training set through the CLI and Feast on a 60-customer snapshot (seconds).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from churn.settings import load_settings
from training.backtest import training_data

from tests.e2e.ingested import cli


def test_an_id_derived_as_a_number_reaches_the_training_set_as_text(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    pd.DataFrame(
        {
            "number": np.arange(1001, 1001 + n),
            "plan": rng.choice(["basic", "pro"], n),
            "fee": rng.uniform(10, 50, n).round(2),
            "left": np.tile([0, 1, 0], n // 3),
        }
    ).to_csv(tmp_path / "bank.csv", index=False)
    config = {
        "name": "bank",
        "data_root": str(tmp_path),
        "sources": {
            "customers": {
                "shape": "snapshot", "path": "bank.csv", "as_of": "2024-06-01", "label": "left", "positive": [1],
                "customer_id": "customer", "derive": {"customer": "number * 2"}, "ignore": ["number"],
            }
        },
        "churn": {"definition": "label"},
        "evaluation": {"folds": 3},
    }
    path = tmp_path / "bank.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"CHURN_DATA_DIR": str(tmp_path / "data"), "CHURN_MLRUNS_DIR": str(tmp_path / "mlruns")}
    assert "60 customers" in cli(["ingest", "--config", str(path)], env)
    cli(["features", "build"], env)
    cli(["features", "apply"], env)

    data = training_data(load_settings(data_dir=tmp_path / "data", mlruns_dir=tmp_path / "mlruns"))
    assert len(data.frame) == n and data.frame["churned"].sum() == n // 3
    assert sorted(data.frame["customer_id"], key=int) == [str(2 * k) for k in range(1001, 1001 + n)]
    assert len(data.splits) == 3
