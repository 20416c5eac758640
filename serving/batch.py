"""Batch runs: score every active customer, choose actions, record them, write the list.

Features come from the offline store through Feast (point-in-time at the as-of date), so
a batch run and a training cutoff see features the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from churn import clock
from churn.ids import ids_text
from churn.settings import Settings
from features.store import active_customers, historical_features, latest_snapshot
from serving.holdout import assign_holdouts
from serving.learning import CellEffects, learner_for
from serving.ledger import Ledger, TablesRecreatedError
from serving.policy import NO_ACTION, ActionCatalog, cooldown_blocks, decide, max_cooldown_days, remaining
from serving.scoring import Scorer

# The columns of the intervention list, in order.
LIST_COLUMNS = [
    "customer_id",
    "segment",
    "risk_band",
    "churn_probability",
    "clv",
    "action",
    "channel",
    "cost",
    "expected_value",
    "reason",
    "model_version",
    "campaign",
    "decided_at",
]


@dataclass(frozen=True)
class InterventionRun:
    """Where a batch run wrote its outputs, and what it decided."""

    campaign: str
    as_of: datetime
    scores_path: Path
    list_csv: Path
    list_parquet: Path
    n_scored: int
    n_actions: int
    n_holdout: int
    actions: dict[str, int]
    total_cost: float
    total_expected_value: float
    # actions the data set cannot use (rules on features it lacks), with those features
    unusable: dict[str, list[str]] = field(default_factory=dict)
    # what the effects came from: the catalog's priors, or what was learned (`with_learned_effects`' tag)
    effects: str = "catalog priors"


def score_active(
    settings: Settings, scorer: Scorer, as_of: datetime | None = None, progress: Callable[[int, int], None] = lambda done, total: None
) -> pd.DataFrame:
    """Scores of every customer active at `as_of` (default: the latest fresh snapshot at the engine's clock).

    `progress(done, total)`: the customers whose features are joined so far (`score_entities`).
    """
    as_of = as_of or latest_snapshot(settings, clock.now(settings))
    return score_entities(settings, scorer, active_customers(settings, as_of), progress)


def score_entities(
    settings: Settings, scorer: Scorer, entities: pd.DataFrame, progress: Callable[[int, int], None] = lambda done, total: None
) -> pd.DataFrame:
    """Scores of the rows of an entity frame (customer_id, event_timestamp), through Feast's point-in-time join.

    `score_active` on all active customers; a Dask task of `serving.bulk_scoring.score_all_dask` on one part.
    `progress(done, total)` after each part of the join (`offline.pit_chunk_rows` rows: one part
    below that), in entity rows; the scoring after it takes a small share of the time.
    """
    return scorer.score(historical_features(settings, entities, scorer.feature_services, progress=progress))


def write_scores(settings: Settings, scores: pd.DataFrame, as_of: datetime) -> Path:
    """Write the scores to `outputs/scores_<as_of date>.parquet`, replacing the earlier file only when complete."""
    settings.outputs_dir.mkdir(parents=True, exist_ok=True)
    path = settings.outputs_dir / f"scores_{as_of:%Y%m%d}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    scores.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def decide_campaign(
    scores: pd.DataFrame,
    catalog: ActionCatalog,
    ledger: Ledger,
    campaign: str,
    as_of: datetime,
    effects: np.ndarray | None = None,
    decided_at: datetime | None = None,
    deadline: float | None = None,
) -> pd.DataFrame:
    """Decide for scored customers and record it, in one ledger transaction: cooldowns, budget, holdouts.

    `as_of` is the date the scores describe, `decided_at` the engine's clock at the decision
    (default `as_of`, for replays of past dates); cooldowns count back from `decided_at`.
    The campaign's budget and capacities are what its earlier calls and runs left; a
    customer decided in another campaign within a cooldown is blocked, also when that
    decision is being made at the same moment elsewhere (the transaction holds the
    customers' locks, `Ledger.deciding`). `deadline` (`time.monotonic()` seconds): the
    transaction must commit by then or records nothing (the service's calls).

    Returns the ledger's rows for the scored customers, by customer id (text). A campaign
    run again finds its own first decisions in the ledger and keeps them, so nobody is
    contacted twice. Scores may carry integer ids (the simulator's feature store): they are
    decided as their text, as the ledger keeps them.
    """
    now = decided_at or as_of
    scores = scores.assign(customer_id=ids_text(scores["customer_id"]))
    try:
        return _decide_in_ledger(scores, catalog, ledger, campaign, as_of, effects, now, deadline)
    except TablesRecreatedError:  # a ledger re-created empty: its tables are back, decide again
        return _decide_in_ledger(scores, catalog, ledger, campaign, as_of, effects, now, deadline)


def _decide_in_ledger(
    scores: pd.DataFrame,
    catalog: ActionCatalog,
    ledger: Ledger,
    campaign: str,
    as_of: datetime,
    effects: np.ndarray | None,
    now: datetime,
    deadline: float | None,
) -> pd.DataFrame:
    since = pd.Timestamp(now) - pd.Timedelta(days=max_cooldown_days(catalog))
    with ledger.deciding(campaign, scores["customer_id"].tolist(), deadline=deadline) as decision:
        new = ~scores["customer_id"].isin(decision.recorded()["customer_id"]).to_numpy()
        if new.any():
            todo = scores[new].reset_index(drop=True)
            recent = decision.recent_actions(since, pd.Timestamp(now))
            blocked = cooldown_blocks(todo["customer_id"].to_numpy(), recent, catalog, now)
            left = remaining(catalog, decision.spent())
            chosen = decide(todo, left, effects=None if effects is None else effects[new], blocked=blocked, campaign=campaign)
            chosen = assign_holdouts(chosen, campaign, catalog.holdout_share).merge(
                todo[["customer_id", "segment", "risk_band", "churn_probability", "clv", "model_version"]], on="customer_id"
            )
            decision.insert(chosen, decided_at=now, as_of=as_of)
        return decision.recorded()


def with_learned_effects(
    scores: pd.DataFrame, learner: CellEffects | None, campaign: str
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The scores and the effects to decide `campaign` with: the learner's, or None (the catalog's priors).

    Batch runs and the service's `/interventions` both decide through this, so the same
    campaign on the same outcomes gets the same effects (in 'thompson' mode the same draw)
    in both; the scores' model_version then ends in `;effects:<mode>(<cells measured>/<cells> cells)`.
    `scores` columns: those of `decide` (segment among them).
    """
    if learner is None or learner.mode == "priors":
        return scores, None
    return scores.assign(model_version=scores["model_version"] + _effects_tag(learner)), learner.effects(scores, campaign)


def _effects_tag(learner: CellEffects) -> str:
    return f";effects:{learner.mode}({learner.n_learned}/{len(learner.segments_) * len(learner.actions)} cells)"


def learn_effects(settings: Settings, catalog: ActionCatalog, ledger: Ledger) -> CellEffects | None:
    """The action effects learned from every outcome in the ledger, or None (decide on the catalog's priors).

    None while the ledger holds no outcome of an action, and in `learning.mode` 'priors'.
    Reads the ledger's outcomes summed per segment x action x holdout (`Ledger.outcome_cells`),
    so it needs nothing but the ledger, whatever the data set.
    """
    if settings.learning.mode == "priors":
        return None
    cells = ledger.outcome_cells()
    if cells.empty:
        return None
    return learner_for(catalog, settings.learning).fit(cells)


def run_interventions(
    settings: Settings, as_of: datetime | None = None, campaign: str | None = None,
    step: Callable[..., None] = lambda what, done=None, total=None: None,
) -> InterventionRun:
    """Score, decide, record in the ledger and write the intervention list (CSV and Parquet).

    Decisions are made at the engine's clock (`churn/clock.py`) on the features of `as_of`
    (default: the latest snapshot at that clock, refused when stale); the campaign id
    defaults to 'run-<as_of date>'.

    The list holds the customers to contact; held-out customers are only in the ledger.
    `step(what, done=None, total=None)` as each step starts, and for the scoring with the
    customers joined so far (`score_active`), as `training.train.train` reports its steps.
    """
    step("score the active customers")
    scorer = Scorer.load(settings)
    now = clock.now(settings)
    as_of = as_of or latest_snapshot(settings, now)
    campaign = campaign or settings.campaign or f"run-{as_of:%Y%m%d}"
    scores = score_active(settings, scorer, as_of, progress=lambda done, total: step("score the active customers", done, total))
    scores_path = write_scores(settings, scores, as_of)
    step("choose actions, record them in the ledger, write the list")
    ledger = Ledger.for_settings(settings, batch=True)
    try:
        learner = learn_effects(settings, scorer.catalog, ledger)
        scores, effects = with_learned_effects(scores, learner, campaign)
        recorded = decide_campaign(scores, scorer.catalog, ledger, campaign, as_of, effects, decided_at=now)
    finally:
        ledger.close()
    acted = recorded[recorded["action"] != NO_ACTION]
    chosen = acted[~acted["holdout"]].sort_values("expected_value", ascending=False)
    listing = chosen[LIST_COLUMNS]
    if scorer.constant_value:  # say so where the list is read: segments tell nothing here
        listing = listing.assign(reason=listing["reason"] + "; value: one constant for every customer (no value declared)")
    stem = settings.outputs_dir / f"interventions_{campaign}"
    list_csv, list_parquet = stem.with_suffix(".csv"), stem.with_suffix(".parquet")
    listing.to_csv(list_csv, index=False)
    listing.to_parquet(list_parquet, index=False)
    return InterventionRun(
        campaign=campaign,
        as_of=as_of,
        scores_path=scores_path,
        list_csv=list_csv,
        list_parquet=list_parquet,
        n_scored=len(scores),
        n_actions=len(listing),
        n_holdout=int(acted["holdout"].sum()),
        actions=listing["action"].value_counts().to_dict(),
        total_cost=float(listing["cost"].sum()),
        total_expected_value=float(listing["expected_value"].sum()),
        unusable=scorer.catalog.unusable(set(scores.columns)),
        effects="catalog priors" if effects is None else _effects_tag(learner).removeprefix(";"),
    )
