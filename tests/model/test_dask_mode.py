"""Dask mode on a LocalCluster with 2 workers: same features, a model as good, same scores."""

from __future__ import annotations

import pandas as pd
import pytest

from churn.cluster import dask_client
from churn.errors import ConfigError
from churn.settings import DaskSettings
from features.build_dask import build_feature_tables_dask
from features.definitions import VIEW_COLUMNS, feature_names
from features.pit import active_feature_batches
from serving.bulk_scoring import score_all_dask
from serving.scoring import Scorer
from training.dataset import cutoff_dates, label_frame, training_set
from training.evaluate import churn_metrics
from training.model import GradientBoostedModel
from training.model_dask import DaskGradientBoostedModel
from training.train import _split

# issue 7's port range for servers started by tests
SCHEDULER_PORT = 3701


@pytest.fixture(scope="module")
def dask_settings(engine):
    local = DaskSettings(scheduler="local", local_workers=2, local_scheduler_port=SCHEDULER_PORT, partitions=3)
    return engine.settings.model_copy(update={"dask": local})


@pytest.fixture(scope="module")
def client(dask_settings):
    with dask_client(dask_settings) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        yield client


def test_dask_build_equals_one_machine_build(engine, client, tmp_path):
    result = build_feature_tables_dask(client, engine.settings.raw_dir, tmp_path / "tables", partitions=2)

    assert result.rows == engine.features.rows and result.snapshots == engine.features.snapshots
    for view in VIEW_COLUMNS:
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "tables" / f"{view}.parquet"),
            pd.read_parquet(engine.settings.feature_tables_dir / f"{view}.parquet"),
        )
    assert not (tmp_path / "tables" / "_parts").exists()


def test_dask_model_is_as_good_as_one_machine_model(engine, client):
    settings, cfg = engine.settings, engine.settings.training
    cutoffs = cutoff_dates(engine.as_of, cfg.horizon_days, cfg.n_cutoffs, cfg.cutoff_spacing_days)
    labels = label_frame(settings.raw_dir, cutoffs, cfg.horizon_days, cfg.clv_horizon_days)
    frame = training_set(settings, labels[["customer_id", "event_timestamp", "churned"]], cfg.feature_service)
    train, stop, test = _split(frame, cutoffs)
    features = feature_names(cfg.feature_service)
    fit_args = (train, train["churned"].to_numpy(), stop, stop["churned"].to_numpy(), features)

    single = GradientBoostedModel(num_boost_round=100).fit(*fit_args)
    distributed = DaskGradientBoostedModel(client=client, num_boost_round=100).fit(*fit_args)

    auc_single = churn_metrics(test["churned"].to_numpy(), single.predict(test))["roc_auc"]
    auc_dask = churn_metrics(test["churned"].to_numpy(), distributed.predict(test))["roc_auc"]
    assert 1 <= distributed.best_iteration_ <= 100
    assert auc_dask > 0.75, f"Dask model ROC AUC {auc_dask:.3f}"
    assert abs(auc_dask - auc_single) < 0.03, f"Dask {auc_dask:.3f} vs one machine {auc_single:.3f}"


def test_dask_scores_equal_batch_scores(engine, client, dask_settings, tmp_path):
    result = score_all_dask(client, dask_settings, Scorer.load(dask_settings), path=tmp_path / "scores.parquet")
    scored = pd.read_parquet(result.path).set_index("customer_id").sort_index()
    batch = pd.read_parquet(engine.interventions.scores_path).set_index("customer_id").sort_index()

    assert result.rows == len(batch) and scored.index.equals(batch.index)
    pd.testing.assert_series_equal(scored["churn_probability"], batch["churn_probability"], check_exact=False, rtol=1e-12)
    assert (scored["segment"] == batch["segment"]).all()


def test_dask_mode_off_is_a_config_error(engine):
    with pytest.raises(ConfigError, match="Dask mode is off: set dask.scheduler"):
        with dask_client(engine.settings):
            pass


def test_churn_train_in_dask_mode_matches_one_machine(engine, client, tmp_path):
    """`churn train` with dask.scheduler set fits every model on the cluster; quality as on one machine."""
    import mlflow
    from typer.testing import CliRunner

    from churn.cli import app
    from training.registry import connect

    settings = engine.settings
    env = {
        "CHURN_DATA_DIR": str(settings.data_dir),
        "CHURN_MLRUNS_DIR": str(tmp_path / "mlruns"),  # a registry of its own: the engine's stays as it is
        "CHURN_DASK__SCHEDULER": client.scheduler.address,  # the 2-worker LocalCluster of this module
        "CHURN_DASK__PARTITIONS": "2",
    }
    result = CliRunner().invoke(app, ["train"], env=env)
    assert result.exit_code == 0, result.output
    assert "Dask mode: 2 workers" in result.output

    dask_settings = settings.model_copy(update={"mlruns_dir": tmp_path / "mlruns", "tracking_uri": None})
    registry = connect(dask_settings)
    version = registry.get_model_version_by_alias(settings.training.churn_model_name, "champion")
    run = mlflow.get_run(version.run_id)
    assert run.data.params["trained_on"] == "dask"
    auc_dask = run.data.metrics["churn_val_roc_auc"]
    auc_single = engine.training.churn_metrics["roc_auc"]
    assert abs(auc_dask - auc_single) < 0.03, f"Dask {auc_dask:.3f} vs one machine {auc_single:.3f}"
    clv_dask = run.data.metrics["clv_val_spearman"]
    assert abs(clv_dask - engine.training.clv_metrics["spearman"]) < 0.05
    # the registered Dask model scores like any other: the batch scorer loads and uses it
    features = next(active_feature_batches(settings.feature_tables_dir, engine.as_of, 500))
    scores = Scorer.load(dask_settings).score(features)
    assert scores["churn_probability"].between(0, 1).all() and len(scores) == len(features)
