"""Business rules: CLV segments, risk bands, the action catalog and the choice of action.

Nothing here knows of HTTP or storage; `decide` takes scored customers and returns one
decision per customer.
"""

from __future__ import annotations

import operator
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from churn.errors import ConfigError, DataError

NO_ACTION = "none"


class Segment(str, Enum):
    """CLV segment: by predicted 12-month value, edges learned at training."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class RiskBand(str, Enum):
    """Churn-risk band: by predicted probability, thresholds in the catalog."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}


class Condition(BaseModel):
    """A rule on one feature, e.g. complaints_28d >= 1."""

    feature: str = Field(description="Feature name from the model's FeatureService.")
    op: Literal["<", "<=", ">", ">=", "=="] = Field(description="Comparison.")
    value: float = Field(description="Threshold.")


class Action(BaseModel):
    """One retention action."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Identifier used in lists and the ledger.")
    channel: str = Field(description="How the customer is reached (email, phone, push, ...).")
    cost: float = Field(ge=0, description="Cost per contact, in revenue units.")
    effect: float = Field(ge=-1, le=1, description="Prior relative reduction of churn probability.")
    reason: str = Field(description="Why this action, in words, for the intervention list.")
    segments: list[Segment] = Field(min_length=1, description="CLV segments it applies to.")
    risk_bands: list[RiskBand] = Field(min_length=1, description="Risk bands it applies to.")
    when: list[Condition] = Field(default_factory=list, description="Feature conditions, all of which must hold.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name == NO_ACTION:
            raise ValueError(f"'{NO_ACTION}' is reserved for 'no action'")
        return name


class RiskBands(BaseModel):
    """Probability thresholds of the medium and high bands."""

    medium: float = Field(gt=0, lt=1)
    high: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> RiskBands:
        if not self.medium < self.high:
            raise ValueError(f"risk_bands.medium ({self.medium}) must be below risk_bands.high ({self.high})")
        return self


class ActionCatalog(BaseModel):
    """The validated action catalog."""

    risk_bands: RiskBands
    actions: list[Action] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> ActionCatalog:
        names = [a.name for a in self.actions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"action names must be unique; repeated: {dupes}")
        return self

    def conditions_features(self) -> set[str]:
        return {c.feature for a in self.actions for c in a.when}


def load_catalog(path: Path | None = None) -> ActionCatalog:
    """Read and validate an action catalog (the packaged default when `path` is None)."""
    if path is None:
        text = resources.files("serving").joinpath("actions.yaml").read_text()
        where = "serving/actions.yaml (packaged default)"
    else:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"action catalog {path} does not exist")
        text, where = path.read_text(), str(path)
    try:
        return ActionCatalog.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise ConfigError(f"action catalog {where} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})" for err in exc.errors()
        )
        raise ConfigError(f"action catalog {where}: {problems}") from exc


def segment_of(clv: np.ndarray, edges: list[float]) -> np.ndarray:
    """CLV segment names for predicted CLV values, given the two learned edges."""
    labels = np.array([s.value for s in Segment])
    return labels[np.searchsorted(np.asarray(edges), np.asarray(clv), side="right")]


def risk_band_of(probability: np.ndarray, bands: RiskBands) -> np.ndarray:
    """Risk band names for churn probabilities."""
    labels = np.array([b.value for b in RiskBand])
    return labels[np.searchsorted([bands.medium, bands.high], np.asarray(probability), side="right")]


def decide(scored: pd.DataFrame, catalog: ActionCatalog) -> pd.DataFrame:
    """Choose each customer's best action by expected value, or none.

    `scored` columns:
    - customer_id
    - churn_probability, clv, segment, risk_band
    - every feature named in a catalog condition

    Returns customer_id, action, channel, cost, expected_value, reason (one row per customer).
    """
    missing = sorted(catalog.conditions_features() - set(scored.columns))
    if missing:
        raise DataError(f"action catalog conditions need features {missing}, which the scores do not carry")
    n = len(scored)
    p = scored["churn_probability"].to_numpy(dtype=float)
    clv = scored["clv"].to_numpy(dtype=float)
    values = np.full((n, len(catalog.actions)), -np.inf)
    for j, action in enumerate(catalog.actions):
        eligible = scored["segment"].isin([s.value for s in action.segments]).to_numpy()
        eligible &= scored["risk_band"].isin([b.value for b in action.risk_bands]).to_numpy()
        for cond in action.when:
            eligible &= _OPS[cond.op](scored[cond.feature].to_numpy(dtype=float), cond.value)
        ev = p * action.effect * clv - action.cost
        values[:, j] = np.where(eligible, ev, -np.inf)
    best = values.argmax(axis=1) if len(catalog.actions) else np.zeros(n, int)
    best_value = values[np.arange(n), best]
    chosen = best_value > 0
    names = np.array([a.name for a in catalog.actions])
    channels = np.array([a.channel for a in catalog.actions])
    costs = np.array([a.cost for a in catalog.actions])
    reasons = np.array([a.reason for a in catalog.actions])
    reason_text = [
        f"{reasons[b]}: churn risk {pi:.0%} ({band}), 12-month value {ci:.0f} ({seg}), expected gain {ev:.2f}"
        if ok
        else (
            f"no eligible action is worth its cost: churn risk {pi:.0%} ({band}), 12-month value {ci:.0f} ({seg})"
        )
        for ok, b, pi, ci, ev, band, seg in zip(
            chosen, best, p, clv, best_value, scored["risk_band"], scored["segment"], strict=True
        )
    ]
    return pd.DataFrame(
        {
            "customer_id": scored["customer_id"].to_numpy(),
            "action": np.where(chosen, names[best], NO_ACTION),
            "channel": np.where(chosen, channels[best], ""),
            "cost": np.where(chosen, costs[best], 0.0),
            "expected_value": np.where(chosen, best_value, 0.0),
            "reason": reason_text,
        }
    )
