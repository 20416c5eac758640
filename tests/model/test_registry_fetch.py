"""Fetching champions as plain data (what the service's helper process does) loads the models MLflow would."""

from __future__ import annotations

import mlflow.lightgbm
import numpy as np

from serving.launch import champions_fetched_aside
from training.registry import CHAMPION, connect, fetch_alias, load_fetched, scoring_model_names


def test_fetched_booster_predicts_as_mlflows_own_loader(engine):
    settings = engine.settings
    name = scoring_model_names(settings)[0]
    fetched = fetch_alias(settings, name, CHAMPION)
    version = connect(settings).get_model_version_by_alias(name, CHAMPION)
    theirs = mlflow.lightgbm.load_model(f"models:/{name}/{version.version}")
    ours = load_fetched(fetched)
    assert (ours.name, ours.version, ours.run_id) == (name, str(version.version), version.run_id)
    X = np.random.default_rng(0).normal(size=(200, theirs.num_feature()))
    np.testing.assert_array_equal(ours.booster.predict(X), theirs.predict(X))
    assert ours.feature_names == theirs.feature_name()


def test_helper_process_fetches_both_champions(engine):
    settings = engine.settings
    with champions_fetched_aside(settings) as fetched_champions:
        fetched = fetched_champions()
    assert [f.name for f in fetched] == scoring_model_names(settings) == ["simulated-churn", "simulated-clv"]
    assert all(f.model_text.startswith("tree") for f in fetched)
