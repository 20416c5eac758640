"""Registered model versions as the engine uses them, without MLflow.

`training/registry.py` talks to MLflow (resolve an alias, fetch artifacts); what it brings
back is a `FetchedModel` (plain data: the booster's text and the spec) and, loaded, a
`RegisteredModel` (a raw LightGBM booster). The service imports only this module in its own
process and lets a helper process fetch from the registry, so that MLflow's start-up and
the service's own imports run side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a booster is built: a process that only fetches needs MLflow alone
    import lightgbm as lgb


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


@dataclass(frozen=True)
class FetchedModel:
    """A registered version as plain data: LightGBM's text model and the spec.

    Picklable, so that another process can fetch it from the registry (the service does, to
    overlap MLflow's start-up with its own imports); `load_fetched` turns it into a booster.
    """

    name: str
    version: str
    run_id: str
    model_text: str
    spec: dict


def registered_value(extra: dict) -> dict:
    """How a registered churn model values customers (`training/value.py`): its spec's `value`, or,
    for a model registered before specs carried one, its CLV model."""
    return extra.get("value", {"method": "model"})


def load_fetched(fetched: FetchedModel) -> RegisteredModel:
    """A fetched version as a raw booster with its spec."""
    import lightgbm as lgb

    spec = fetched.spec
    return RegisteredModel(
        name=fetched.name,
        version=fetched.version,
        run_id=fetched.run_id,
        booster=lgb.Booster(model_str=fetched.model_text),
        feature_service=spec["feature_service"],
        feature_names=spec["feature_names"],
        categories=spec["categories"],
        extra=spec.get("extra", {}),
    )
