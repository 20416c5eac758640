"""MLflow tracking and registry: where models are logged, registered and loaded from.

The store is SQLite under `mlruns/` by default (MLflow 3's plain file store is in
maintenance mode), artifacts beside it; `tracking_uri` in settings points elsewhere.
Loading returns the raw `lightgbm.Booster` and the model's spec (feature names, categories,
and whatever else training stored), never a pyfunc wrapper.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from churn.errors import ConfigError, ModelNotFoundError
from churn.settings import Settings
from training.registered import FetchedModel, RegisteredModel, load_fetched, registered_value

EXPERIMENT = "churn-engine"
CHAMPION = "champion"
# A newly trained version waits under this alias until `churn promote` lets it replace the champion.
CHALLENGER = "challenger"


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store and return a client."""
    settings.mlruns_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = settings.resolved_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(settings: Settings, client: MlflowClient) -> str:
    """The engine's experiment, created with its artifacts under mlruns/ on first use."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(EXPERIMENT, artifact_location=settings.artifact_location)


def spec_path(name: str) -> str:
    """Run-artifact path of a model's spec (feature names, categories, extras)."""
    return f"specs/{name}.json"


def log_booster(client: MlflowClient, booster, name: str, spec: dict, run_id: str) -> str:
    """Log a LightGBM booster and its spec in the active run, register it as `name`, alias it `challenger`.

    The spec (`feature_service`, `feature_names`, `categories`, `best_iteration`, `extra`) goes
    to `spec_path(name)` in the run, where `fetch_alias` reads it. Returns the new version.
    """
    import lightgbm as lgb
    import mlflow.lightgbm

    mlflow.log_dict(spec, spec_path(name))
    # requirements stated, not inferred: inference imports the model in a subprocess (about 10 s a model)
    info = mlflow.lightgbm.log_model(booster, name=name, registered_model_name=name, pip_requirements=[f"lightgbm=={lgb.__version__}"])
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "feature_service", spec["feature_service"])
    client.set_model_version_tag(name, version, "run_id", run_id)
    client.set_registered_model_alias(name, CHALLENGER, version)
    return version


def has_alias(client: MlflowClient, name: str, alias: str) -> bool:
    """Whether registered model `name` exists and has a version under `alias`."""
    try:
        client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return False
    return True


def load_champion(settings: Settings, name: str) -> RegisteredModel:
    """Load the version of `name` aliased `champion`, as a raw booster with its spec."""
    return load_alias(settings, name, CHAMPION)


def fetch_alias(settings: Settings, name: str, alias: str) -> FetchedModel:
    """Resolve `alias` of model `name` in the registry and fetch its booster and spec."""
    client = connect(settings)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"no '{alias}' version of model {name!r} in {settings.resolved_tracking_uri}; run `churn train` first"
        ) from exc
    label = f"{name}/{version.version}"
    with tempfile.TemporaryDirectory(prefix="churn-model-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{label}", dst_path=tmp))
        # what mlflow.lightgbm.load_model reads, without importing LightGBM here
        flavor = Model.load(local).flavors.get("lightgbm")
        if flavor is None or flavor.get("model_class", "lightgbm.basic.Booster") != "lightgbm.basic.Booster":
            raise ConfigError(f"model {label} is not a logged LightGBM Booster (MLmodel flavors: {flavor})")
        model_text = (local / flavor["data"]).read_text()
    spec = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{spec_path(name)}")
    return FetchedModel(name=name, version=str(version.version), run_id=version.run_id, model_text=model_text, spec=spec)


def fetch_champions(settings: Settings, names: list[str]) -> list[FetchedModel]:
    """The `champion` versions of `names`, fetched (what a scorer needs from the registry)."""
    return [fetch_alias(settings, name, CHAMPION) for name in names]


def load_alias(settings: Settings, name: str, alias: str) -> RegisteredModel:
    """Load the version of `name` under `alias`, as a raw booster with its spec."""
    return load_fetched(fetch_alias(settings, name, alias))


def scoring_model_names(settings: Settings) -> list[str]:
    """The registered models a scorer starts from: the data set's churn model, then its value model.

    `<data set>-churn` and `<data set>-clv` (registered when the data set values customers with
    a model); the data set is the one `churn ingest` stored last.
    """
    from features.ingest import read_manifest
    from training.promote import churn_model_name, clv_model_name

    name = read_manifest(settings.ingested_dir)["contract"]["name"]
    return [churn_model_name(name), clv_model_name(name)]


def fetch_scoring_champions(settings: Settings) -> list[FetchedModel]:
    """The champions a scorer needs: the churn model, then the CLV model when the churn model values by one."""
    churn_name, clv_name = scoring_model_names(settings)
    churn = fetch_alias(settings, churn_name, CHAMPION)
    if registered_value(churn.spec.get("extra", {}))["method"] != "model":
        return [churn]
    return [churn, fetch_alias(settings, clv_name, CHAMPION)]
