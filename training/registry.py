"""MLflow tracking and registry: where models are logged, registered and loaded from.

The store is SQLite under `mlruns/` by default (MLflow 3's plain file store is in
maintenance mode), artifacts beside it; `tracking_uri` in settings points elsewhere.
Loading returns the raw `lightgbm.Booster` and the model's spec (feature names, categories,
and whatever else training stored), never a pyfunc wrapper.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import lightgbm as lgb
import mlflow
import mlflow.lightgbm
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from churn.errors import ModelNotFoundError
from churn.settings import Settings

EXPERIMENT = "churn-engine"
CHAMPION = "champion"
# A newly trained version waits under this alias until `churn promote` lets it replace the champion.
CHALLENGER = "challenger"


@dataclass(frozen=True)
class RegisteredModel:
    """A model version loaded for prediction."""

    name: str
    version: str
    run_id: str
    booster: lgb.Booster
    feature_service: str
    feature_names: list[str]
    categories: dict[str, list[str]]
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


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


def load_alias(settings: Settings, name: str, alias: str) -> RegisteredModel:
    """Load the version of `name` under `alias`, as a raw booster with its spec."""
    client = connect(settings)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"no '{alias}' version of model {name!r} in {settings.resolved_tracking_uri}; run `churn train` first"
        ) from exc
    booster = mlflow.lightgbm.load_model(f"models:/{name}/{version.version}")
    spec = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{spec_path(name)}")
    return RegisteredModel(
        name=name,
        version=str(version.version),
        run_id=version.run_id,
        booster=booster,
        feature_service=spec["feature_service"],
        feature_names=spec["feature_names"],
        categories=spec["categories"],
        extra=spec.get("extra", {}),
    )
