"""Dask mode on a LocalCluster with 2 workers: the same features, models and scores as one machine.

The shared `engine` ran the path of `churn demo` on one machine. Here a copy of its ingested
data goes through `churn features build`, `churn train` and `churn score` in Dask mode, in a
data folder (and, for training, a registry) of its own, and each result is compared with the
engine's.
"""

from __future__ import annotations

import shutil

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from churn.cli import app
from churn.cluster import dask_client
from churn.errors import ConfigError
from churn.settings import DaskSettings, Settings
from features.build import read_views
from training.registry import CHAMPION, connect, load_alias

# issue 7's port range for servers started by tests
SCHEDULER_PORT = 3701
PARTITIONS = 3  # more customer partitions than workers: tasks queue, as on a real cluster


@pytest.fixture(scope="module")
def client(engine):
    local = DaskSettings(scheduler="local", local_workers=2, local_scheduler_port=SCHEDULER_PORT)
    with dask_client(engine.settings.model_copy(update={"dask": local})) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        yield client


def _env(settings: Settings, client, **extra) -> dict[str, str]:
    """The CLI's environment in Dask mode on this module's cluster."""
    return {
        "CHURN_DATA_DIR": str(settings.data_dir),
        "CHURN_MLRUNS_DIR": str(settings.mlruns_dir),
        "CHURN_NOW": settings.now.isoformat(),
        "CHURN_DASK__SCHEDULER": client.scheduler.address,
        "CHURN_DASK__PARTITIONS": str(PARTITIONS),
        **extra,
    }


def _cli(args: list[str], env: dict[str, str]) -> str:
    result = CliRunner().invoke(app, args, env=env, terminal_width=400)
    assert result.exit_code == 0, result.output
    return "".join(result.output.split())  # the console wraps long paths wherever it likes


@pytest.fixture(scope="module")
def on_dask(engine, client, tmp_path_factory) -> Settings:
    """A copy of the engine's ingested data, its features built in Dask mode and registered with Feast.

    Its settings read the engine's registry (its champion scores here) and the engine's clock.
    """
    settings = engine.settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("dask_mode") / "data"})
    settings.ensure_dirs()
    shutil.copytree(engine.settings.ingested_dir, settings.ingested_dir)
    assert "Daskmode:2workers" in _cli(["features", "build"], _env(settings, client))
    _cli(["features", "apply"], _env(settings, client))
    return settings


def test_churn_features_build_on_dask_equals_one_machine_build(engine, on_dask):
    """The tables and their schema (views.json) of the one-machine build; no scratch left."""
    one, dask = read_views(engine.settings.feature_tables_dir), read_views(on_dask.feature_tables_dir)
    assert dask == one and len(one["log_views"]) == 2
    for view in one["views"]:
        pd.testing.assert_frame_equal(
            pd.read_parquet(on_dask.feature_tables_dir / f"{view}.parquet"),
            pd.read_parquet(engine.settings.feature_tables_dir / f"{view}.parquet"),
        )
    assert [p.name for p in on_dask.feature_tables_dir.iterdir() if p.name.startswith("_")] == []


def test_churn_score_on_dask_equals_one_machine_scores(engine, client, on_dask):
    """`churn score` in Dask mode: the rows, order and values `score_active` gave the engine's batch run."""
    out = _cli(["score"], _env(on_dask, client))
    path = on_dask.outputs_dir / engine.interventions.scores_path.name
    assert "Daskmode:2workers" in out and str(path) in out
    assert not path.with_suffix(".parts").exists()

    one = pd.read_parquet(engine.interventions.scores_path)
    assert len(one) > 1000
    pd.testing.assert_frame_equal(pd.read_parquet(path), one)


def test_churn_train_on_dask_registers_the_one_machine_model(engine, client, on_dask, tmp_path):
    """`churn train` in Dask mode (a registry of its own): as good on the same held-out splits, and the same booster.

    Each fit is a task fitting the one-machine `AutoTunedModel` (single-threaded, deterministic),
    so the models are the same and the tolerance is rounding only.
    """
    mlruns = tmp_path / "mlruns"
    assert "Daskmode:2workers" in _cli(["train"], _env(on_dask, client, CHURN_MLRUNS_DIR=str(mlruns)))

    trained = engine.training
    dask_settings = on_dask.model_copy(update={"mlruns_dir": mlruns, "tracking_uri": None})
    version = connect(dask_settings).get_model_version_by_alias(trained.model_name, CHAMPION)
    run = mlflow.get_run(version.run_id)
    assert run.data.params["trained_on"] == "dask"
    auc_dask, auc_one = run.data.metrics["eval_roc_auc_mean"], trained.summary["roc_auc"][0]
    assert auc_dask > 0.7, f"Dask model ROC AUC {auc_dask:.3f} over the evaluation splits"
    assert abs(auc_dask - auc_one) < 1e-9, f"Dask {auc_dask:.4f} vs one machine {auc_one:.4f}"
    for key, (mean, sd) in trained.summary.items():  # calibration, profit: the same splits' same models
        assert run.data.metrics[f"eval_{key}_mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12), key
        assert run.data.metrics[f"eval_{key}_sd"] == pytest.approx(sd, rel=1e-9, abs=1e-12), key
    # the registered booster (the merged ensemble) and its calibration are the engine's, to the last digit
    dask_model = load_alias(dask_settings, trained.model_name, CHAMPION)
    one_model = load_alias(engine.settings, trained.model_name, CHAMPION)
    assert one_model.version == trained.version, "the engine's champion is no longer the model it trained"
    assert dask_model.booster.model_to_string() == one_model.booster.model_to_string()
    assert dask_model.extra["calibration"] == one_model.extra["calibration"]


def test_dask_mode_off_is_a_config_error(engine):
    with pytest.raises(ConfigError, match="Dask mode is off: set dask.scheduler"):
        with dask_client(engine.settings):
            pass
