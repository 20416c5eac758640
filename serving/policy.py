"""Business rules: CLV segments, risk bands, the action catalog and the choice of action.

Nothing here knows of HTTP or storage; `decide` takes scored customers and returns one
decision per customer. The choice maximises expected incremental value,
P(churn) x effect(action | customer) x CLV - cost, per customer, under the run's budget and
each action's capacity (`serving/allocate.py`), for customers not in a cooldown.
"""

from __future__ import annotations

import operator
from datetime import datetime
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from churn.draws import uniform_draw
from churn.errors import ConfigError, DataError
from serving.allocate import allocate, explore

NO_ACTION = "none"


class Segment(str, Enum):
    """CLV segment: by predicted 12-month value, edges learned at training."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class LifecycleStage(str, Enum):
    """Where a customer is in their life with us, by tenure and activity (edges in the catalog).

    Precedence: new (short tenure), then lapsing (no activity for a while), then at_risk
    (activity falling), else established. A stage whose input the data set lacks is never
    assigned (a snapshot without activity has only new and established).
    """

    NEW = "new"
    LAPSING = "lapsing"
    AT_RISK = "at_risk"
    ESTABLISHED = "established"


# The stage inputs. Recency is `days_since_last_active` in ingested data and
# `days_since_last_activity` in the simulator's features: either is read, the first preferred.
TENURE = "tenure_days"
RECENCY = ("days_since_last_active", "days_since_last_activity")
TREND = "activity_trend_7d_28d"


class RiskBand(str, Enum):
    """Churn-risk band: by predicted probability, thresholds in the catalog."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


_OPS = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
_ORDERED_OPS = ("<", "<=", ">", ">=")


class Condition(BaseModel):
    """A rule on one feature, e.g. complaints_28d >= 1 or contract == "Month-to-month"."""

    feature: str = Field(description="Feature name (a snapshot column's is its slug: `Contract` -> `contract`).")
    op: Literal["<", "<=", ">", ">=", "==", "!=", "in"] = Field(description="Comparison; `in`: one of a list.")
    value: float | str | list[float | str] = Field(
        description="Threshold (number), category (string, for == and !=) or list of either (for `in`)."
    )

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError(f"condition on {self.feature!r}: op 'in' needs a list value; got {self.value!r}")
        if self.op != "in" and isinstance(self.value, list):
            raise ValueError(f"condition on {self.feature!r}: a list value needs op 'in'; got op {self.op!r}")
        if self.op in _ORDERED_OPS and isinstance(self.value, str):
            raise ValueError(
                f"condition on {self.feature!r}: op {self.op!r} compares numbers; got the string {self.value!r}"
            )
        return self

    def is_categorical(self) -> bool:
        """True when the condition compares categories (string values)."""
        values = self.value if isinstance(self.value, list) else [self.value]
        return any(isinstance(v, str) for v in values)


class Action(BaseModel):
    """One retention action."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Identifier used in lists and the ledger.")
    channel: str = Field(description="How the customer is reached (email, phone, push, ...).")
    cost: float = Field(ge=0, description="Cost per contact, in revenue units.")
    effect: float = Field(
        ge=-1, le=1, description="Prior relative reduction of churn probability, used until measured effects exist."
    )
    reason: str = Field(description="Why this action, in words, for the intervention list.")
    segments: list[Segment] = Field(min_length=1, description="CLV segments it applies to.")
    risk_bands: list[RiskBand] = Field(min_length=1, description="Risk bands it applies to.")
    lifecycle_stages: list[LifecycleStage] = Field(
        default_factory=lambda: list(LifecycleStage),
        min_length=1,
        description="Lifecycle stages it applies to ('loyal', a former stage, reads as 'established').",
    )
    capacity: int | None = Field(None, ge=0, description="Most contacts per campaign, over all its runs and calls (e.g. advisor calls a week); none: no cap.")
    cooldown_days: int = Field(
        0, ge=0, description="No customer gets this same action again within this many days."
    )
    when: list[Condition] = Field(default_factory=list, description="Feature conditions, all of which must hold.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name == NO_ACTION:
            raise ValueError(f"'{NO_ACTION}' is reserved for 'no action'")
        return name

    @field_validator("lifecycle_stages", mode="before")
    @classmethod
    def _loyal_is_established(cls, stages):
        # catalogs written for the former new/established/loyal stages keep loading
        if isinstance(stages, list):
            return list(dict.fromkeys("established" if s == "loyal" else s for s in stages))
        return stages

    def stage_bound(self) -> bool:
        """True when the action applies to some lifecycle stages only."""
        return set(self.lifecycle_stages) != set(LifecycleStage)


class RiskBands(BaseModel):
    """Probability thresholds of the medium and high bands."""

    medium: float = Field(gt=0, lt=1)
    high: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> RiskBands:
        if not self.medium < self.high:
            raise ValueError(f"risk_bands.medium ({self.medium}) must be below risk_bands.high ({self.high})")
        return self


class LifecycleEdges(BaseModel):
    """The edges of the lifecycle stages (see `LifecycleStage`)."""

    established: int = Field(90, gt=0, description="Tenure (days) from which a customer is no longer new.")
    lapsing_days: int = Field(30, gt=0, description="Days without activity from which a customer is lapsing.")
    at_risk_trend: float = Field(
        0.8, gt=0, description="activity_trend_7d_28d below this (activity falling) makes a customer at risk."
    )
    loyal: int | None = Field(
        None, gt=0, description="Deprecated and ignored: the former 'loyal' stage is part of 'established'."
    )


class ActionCatalog(BaseModel):
    """The validated action catalog, with the run's budget, cooldown and holdout share."""

    risk_bands: RiskBands
    lifecycle: LifecycleEdges = LifecycleEdges()
    budget: float | None = Field(None, ge=0, description="Most total contact cost per campaign, over all its runs and calls; none: no budget limit.")
    cooldown_days: int = Field(
        0, ge=0, description="No customer gets any action again within this many days of the last one."
    )
    explore_share: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="Share of customers left without an action who get a random eligible one, "
        "paid from the budget the policy left unspent, so the learned effects see more than the policy's own picks.",
    )
    holdout_share: float = Field(
        0.0, ge=0, le=0.5, description="Share of customers chosen for each action held out at random, to measure it."
    )
    actions: list[Action] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> ActionCatalog:
        names = [a.name for a in self.actions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"action names must be unique; repeated: {dupes}")
        return self

    def conditions_features(self, available: set[str] | None = None) -> set[str]:
        """Features the eligibility rules read: the conditions' and, when an action is stage-bound, the stage inputs.

        With `available` (the columns at hand), only those among them: the recency input under
        whichever of its two names is there. Without, the stage inputs under their ingested names.
        """
        features = {c.feature for a in self.actions for c in a.when}
        stage_bound = any(a.stage_bound() for a in self.actions)
        if available is None:
            return features | ({TENURE, RECENCY[0], TREND} if stage_bound else set())
        inputs = {c for c in _stage_inputs(available).values() if c} if stage_bound else set()
        return (features & set(available)) | inputs

    def unusable(self, available_features: set[str]) -> dict[str, list[str]]:
        """Actions no customer can be eligible for on a data set with `available_features`, and what each lacks.

        An action lacks a condition's feature, or, when stage-bound, the inputs of every stage
        it names (no stage input at all: all of them). Such an action is never chosen; callers
        report this dict so that a catalog written for other data does not fail silently.
        """
        inputs = _stage_inputs(available_features)
        missing = {}
        for action in self.actions:
            lacks = sorted({c.feature for c in action.when} - set(available_features))
            if action.stage_bound() and not any(_stage_assignable(s, inputs) for s in action.lifecycle_stages):
                lacks += [f for f in _stage_needs(action.lifecycle_stages) if f not in lacks]
            if lacks:
                missing[action.name] = lacks
        return missing

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.actions]

    @property
    def costs(self) -> np.ndarray:
        return np.array([a.cost for a in self.actions], dtype=float)

    @property
    def prior_effects(self) -> np.ndarray:
        return np.array([a.effect for a in self.actions], dtype=float)

    @property
    def capacities(self) -> list[int | None]:
        return [a.capacity for a in self.actions]


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


def _stage_inputs(columns: set[str]) -> dict[str, str | None]:
    """The column of each stage input among `columns` (None: absent)."""
    return {
        "tenure": TENURE if TENURE in columns else None,
        "recency": next((c for c in RECENCY if c in columns), None),
        "trend": TREND if TREND in columns else None,
    }


# the input each stage is decided by; established is what remains, so any input decides it
_STAGE_INPUT = {LifecycleStage.NEW: "tenure", LifecycleStage.LAPSING: "recency", LifecycleStage.AT_RISK: "trend"}


def _stage_assignable(stage: LifecycleStage, inputs: dict[str, str | None]) -> bool:
    """Whether any customer can be in `stage` given the stage inputs present."""
    if stage == LifecycleStage.ESTABLISHED:
        return any(inputs.values())
    return inputs[_STAGE_INPUT[stage]] is not None


def _stage_needs(stages: list[LifecycleStage]) -> list[str]:
    """The input features (ingested names) that `stages` are decided by, in stage order."""
    names = {"tenure": TENURE, "recency": RECENCY[0], "trend": TREND}
    keys = ["tenure", "recency", "trend"] if LifecycleStage.ESTABLISHED in stages else []
    keys += [_STAGE_INPUT[s] for s in stages if s != LifecycleStage.ESTABLISHED]
    return [names[k] for k in dict.fromkeys(keys)]


def lifecycle_stage_of(scored: pd.DataFrame, edges: LifecycleEdges) -> np.ndarray | None:
    """Lifecycle stage names per customer (see `LifecycleStage`), None when no stage input is there.

    `scored` columns, each optional: tenure_days, days_since_last_active (or the simulator's
    days_since_last_activity), activity_trend_7d_28d. A stage whose input is absent is never
    assigned; a missing value (NaN) does not put a customer in the stage it decides.
    """
    inputs = _stage_inputs(set(scored.columns))
    if not any(inputs.values()):
        return None
    rules = (
        (LifecycleStage.NEW, inputs["tenure"], lambda x: x < edges.established),
        (LifecycleStage.LAPSING, inputs["recency"], lambda x: x >= edges.lapsing_days),
        (LifecycleStage.AT_RISK, inputs["trend"], lambda x: x < edges.at_risk_trend),
    )
    stages = np.full(len(scored), LifecycleStage.ESTABLISHED.value, dtype=object)
    undecided = np.ones(len(scored), bool)
    for stage, column, rule in rules:
        if column is not None:
            hit = undecided & rule(scored[column].to_numpy(dtype=float, na_value=np.nan))
            stages[hit] = stage.value
            undecided &= ~hit
    return stages


def _is_numeric(column: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(column.dtype):
        return False
    if pd.api.types.is_numeric_dtype(column.dtype):
        return True
    return pd.api.types.is_object_dtype(column.dtype) and pd.api.types.infer_dtype(column, skipna=True) in (
        "integer", "floating", "mixed-integer-float", "decimal",
    )


def _holds(column: pd.Series, cond: Condition, action: str) -> np.ndarray:
    """Where `cond` holds on `column`; a missing value never satisfies a condition."""
    if column.isna().all():  # nothing known, nor any type to check the condition against
        return np.zeros(len(column), bool)
    numeric = _is_numeric(column)
    if cond.is_categorical():
        if numeric:
            raise DataError(
                f"action {action!r}: condition {cond.feature} {cond.op} {cond.value!r} compares text, "
                f"but feature {cond.feature!r} is numeric ({column.dtype})"
            )
        text = column.astype("string")
        if cond.op == "in":
            ok = text.isin([str(v) for v in cond.value])
        else:
            ok = _OPS[cond.op](text, str(cond.value))
        return ok.fillna(False).to_numpy(dtype=bool) & text.notna().to_numpy()
    if not numeric:
        raise DataError(
            f"action {action!r}: condition {cond.feature} {cond.op} {cond.value!r} compares numbers, "
            f"but feature {cond.feature!r} is categorical ({column.dtype}); compare it with a string"
        )
    x = column.to_numpy(dtype=float, na_value=np.nan)
    ok = np.isin(x, [float(v) for v in cond.value]) if cond.op == "in" else _OPS[cond.op](x, float(cond.value))
    return ok & ~np.isnan(x)


def eligibility(scored: pd.DataFrame, catalog: ActionCatalog) -> np.ndarray:
    """Which customer may get which action: a (customers x actions) boolean matrix.

    `scored` columns: segment, risk_band, and whichever of the features the catalog reads
    (conditions, stage inputs) the data set has. An action whose condition feature is absent,
    or whose stages cannot be told from the stage inputs present, is eligible for no one
    (`ActionCatalog.unusable` names them).
    """
    columns = set(scored.columns)
    eligible = np.zeros((len(scored), len(catalog.actions)), bool)
    stages = lifecycle_stage_of(scored, catalog.lifecycle) if any(a.stage_bound() for a in catalog.actions) else None
    for j, action in enumerate(catalog.actions):
        if any(c.feature not in columns for c in action.when) or (action.stage_bound() and stages is None):
            continue
        ok = scored["segment"].isin([s.value for s in action.segments]).to_numpy()
        ok &= scored["risk_band"].isin([b.value for b in action.risk_bands]).to_numpy()
        if action.stage_bound():
            ok &= np.isin(stages, [s.value for s in action.lifecycle_stages])
        for cond in action.when:
            ok &= _holds(scored[cond.feature], cond, action.name)
        eligible[:, j] = ok
    return eligible


def expected_values(scored: pd.DataFrame, catalog: ActionCatalog, effects: np.ndarray | None = None) -> np.ndarray:
    """Expected incremental value of each action for each customer, -inf where not eligible.

    value = P(churn) x effect x CLV - cost (Ascarza 2018: target by the effect of the
    contact, not by risk alone). `effects` is a (customers x actions) matrix of relative
    churn reductions (`serving.learning.CellEffects.effects`); None uses the catalog's priors.
    """
    eligible = eligibility(scored, catalog)
    p = scored["churn_probability"].to_numpy(dtype=float)[:, None]
    clv = scored["clv"].to_numpy(dtype=float)[:, None]
    if effects is None:
        effects = np.broadcast_to(catalog.prior_effects, eligible.shape)
    elif effects.shape != eligible.shape:
        raise DataError(
            f"effects must be one row per customer and one column per action {eligible.shape}; got {effects.shape}"
        )
    return np.where(eligible, p * effects * clv - catalog.costs, -np.inf)


def decide(
    scored: pd.DataFrame,
    catalog: ActionCatalog,
    effects: np.ndarray | None = None,
    blocked: np.ndarray | None = None,
    campaign: str | None = None,
) -> pd.DataFrame:
    """Choose each customer's best action by expected value, or none, within budget and capacities.

    `scored` columns:
    - customer_id
    - churn_probability, clv, segment, risk_band
    - the features the catalog reads, where the data set has them (`ActionCatalog.conditions_features`)

    `effects`: learned relative effects (customers x actions), default the catalog priors.
    `blocked`: (customers x actions) True where a cooldown forbids the action.
    `campaign`: when given, the catalog's `explore_share` of the customers left without an
    action get a random eligible one (reproducible per campaign) from the unspent budget.
    Returns customer_id, action, channel, cost, expected_value, reason (one row per customer).
    """
    n = len(scored)
    p = scored["churn_probability"].to_numpy(dtype=float)
    clv = scored["clv"].to_numpy(dtype=float)
    values = expected_values(scored, catalog, effects)
    if blocked is not None:
        values = np.where(blocked, -np.inf, values)
    best = allocate(values, catalog.costs, catalog.budget, catalog.capacities)
    explored = np.zeros(n, bool)
    if campaign is not None and catalog.explore_share > 0:
        draws = uniform_draw(scored["customer_id"].to_numpy(), campaign, purpose="explore")
        best, explored = explore(
            best, np.isfinite(values), draws, catalog.explore_share, catalog.costs, catalog.budget, catalog.capacities
        )
    chosen = best >= 0
    worth_it = (values > 0).any(axis=1)
    best = np.where(chosen, best, values.argmax(axis=1))
    best_value = values[np.arange(n), best]
    names = np.array([a.name for a in catalog.actions])
    channels = np.array([a.channel for a in catalog.actions])
    costs = np.array([a.cost for a in catalog.actions])
    reasons = np.array([a.reason for a in catalog.actions])
    reason_text = [
        f"{'exploration, ' if ex else ''}{reasons[b]}: churn risk {pi:.0%} ({band}), "
        f"12-month value {ci:.0f} ({seg}), expected gain {ev:.2f}"
        if ok
        else (
            f"{'left out by the budget or a capacity' if worth else 'no eligible action is worth its cost'}: "
            f"churn risk {pi:.0%} ({band}), 12-month value {ci:.0f} ({seg})"
        )
        for ok, ex, worth, b, pi, ci, ev, band, seg in zip(
            chosen, explored, worth_it, best, p, clv, best_value, scored["risk_band"], scored["segment"], strict=True
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


def cooldown_blocks(
    customer_ids: np.ndarray, recent: pd.DataFrame, catalog: ActionCatalog, now: datetime
) -> np.ndarray:
    """(customers x actions) True where a cooldown forbids the action at `now` (the decision's clock).

    `recent` columns: customer_id, action, decided_at (earlier decisions with an action). Any
    action within the catalog's `cooldown_days` blocks every action; the same action within
    its own `cooldown_days` blocks that action.
    """
    blocked = np.zeros((len(customer_ids), len(catalog.actions)), bool)
    if recent.empty:
        return blocked
    # NumPy, not pandas filters: an online call has one customer and a few rows, where pandas' overhead is all the cost
    decided = pd.to_datetime(recent["decided_at"], utc=True).to_numpy(dtype="datetime64[ns]")
    now64 = np.datetime64(pd.Timestamp(now).tz_convert("UTC").tz_localize(None), "ns")
    age_days = (now64 - decided) / np.timedelta64(1, "D")
    ids = recent["customer_id"].to_numpy()
    actions = recent["action"].to_numpy()
    rows = np.asarray(customer_ids)
    blocked[np.isin(rows, ids[age_days < catalog.cooldown_days]), :] = True
    for j, action in enumerate(catalog.actions):
        same = (actions == action.name) & (age_days < action.cooldown_days)
        if same.any():
            blocked[np.isin(rows, ids[same]), j] = True
    return blocked


def max_cooldown_days(catalog: ActionCatalog) -> int:
    """How far back a run must look for earlier actions."""
    return max([catalog.cooldown_days, *(a.cooldown_days for a in catalog.actions)])


def remaining(catalog: ActionCatalog, spent: pd.DataFrame) -> ActionCatalog:
    """The catalog with the budget and capacities a campaign has left after `spent`.

    `spent` columns: action, contacts, cost (what the campaign committed so far, held-out
    customers included, as `decide` allocates before holdouts are drawn).
    """
    if spent.empty:
        return catalog
    contacts = dict(zip(spent["action"], spent["contacts"], strict=True))
    budget = None if catalog.budget is None else max(catalog.budget - float(spent["cost"].sum()), 0.0)
    actions = [
        a if a.capacity is None else a.model_copy(update={"capacity": max(a.capacity - int(contacts.get(a.name, 0)), 0)})
        for a in catalog.actions
    ]
    return catalog.model_copy(update={"budget": budget, "actions": actions})
