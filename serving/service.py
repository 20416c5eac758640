"""The BentoML service: scores and interventions for customers, from the online store.

Start it with `churn serve` (or `bentoml serve serving.service:ChurnService`); it reads
the same settings as the CLI (`churn.toml`, `CHURN_*` variables). Models, the feature
store and the ledger are loaded once, in `__init__`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import bentoml
import pandas as pd
from pydantic import BaseModel, Field

from churn.settings import load_settings
from features.store import feature_store, online_features
from serving.ledger import Ledger
from serving.policy import decide
from serving.scoring import Scorer
from training.dataset import NULLABLE_FEATURES
from training.explain import Reason

MAX_IDS = 1_000

CustomerIds = Annotated[
    list[int],
    Field(min_length=1, max_length=MAX_IDS, description=f"Customer ids to act on (1 to {MAX_IDS})."),
]


class CustomerScore(BaseModel):
    """The engine's view of one customer."""

    customer_id: int = Field(description="The customer id as in the raw tables.")
    churn_probability: float = Field(description="Probability of cancelling within the model's horizon.")
    risk_band: str = Field(description="Churn-risk band: low, medium or high.")
    clv: float = Field(description="Predicted revenue over the next 12 months.")
    segment: str = Field(description="CLV segment: low, medium or high.")
    model_version: str = Field(description="Registered model versions that produced this score.")


class CustomerError(BaseModel):
    """Why one customer id got no answer."""

    customer_id: int = Field(description="The id that was asked for.")
    error: str = Field(description="What is wrong with it.")


class ExplainedScore(CustomerScore):
    """A score with the reasons behind it."""

    reasons: list[Reason] = Field(description="Why the churn risk is high, strongest first (at most 3).")


class ScoreResponse(BaseModel):
    """Scores for the known ids, errors for the others."""

    scores: list[ExplainedScore] = Field(description="One entry per known customer, in request order.")
    errors: list[CustomerError] = Field(description="One entry per id that could not be scored.")


class Decision(CustomerScore):
    """A recorded intervention decision."""

    action: str = Field(description="Chosen action, or 'none' when no action is worth its cost.")
    channel: str = Field(description="Channel of the action (empty for none).")
    cost: float = Field(description="Cost of the action.")
    expected_value: float = Field(description="Expected incremental value net of cost.")
    reason: str = Field(description="Why this action, in words.")
    campaign: str = Field(description="Campaign the decision belongs to.")
    decided_at: datetime = Field(description="When the decision was first recorded (UTC).")


class InterventionResponse(BaseModel):
    """Recorded decisions for the known ids, errors for the others."""

    decisions: list[Decision] = Field(description="One recorded decision per known customer.")
    errors: list[CustomerError] = Field(description="One entry per id that got no decision.")


@bentoml.service(name="churn_engine", traffic={"timeout": 30})
class ChurnService:
    """Churn risk, CLV and retention decisions for customers of the online store."""

    def __init__(self) -> None:
        self.settings = load_settings()
        self.scorer = Scorer.load(self.settings)
        self.store = feature_store(self.settings)
        self.ledger = Ledger(self.settings.resolved_ledger_url)

    def _score(self, customer_ids: list[int]) -> tuple[pd.DataFrame, list[CustomerError]]:
        unique = list(dict.fromkeys(customer_ids))
        features = online_features(self.store, unique, self.scorer.feature_services)
        names = [c for c in features.columns if c != "customer_id"]
        required = [c for c in names if c not in NULLABLE_FEATURES]
        unknown = features[names].isna().all(axis=1)
        incomplete = ~unknown & features[required].isna().any(axis=1)
        errors = [
            CustomerError(customer_id=int(c), error="unknown customer: the online store has no features for this id")
            for c in features.loc[unknown, "customer_id"]
        ] + [
            CustomerError(
                customer_id=int(row.customer_id),
                error=f"features missing in the online store: {[c for c in required if pd.isna(getattr(row, c))]}",
            )
            for row in features[incomplete].itertuples()
        ]
        known = features[~unknown & ~incomplete]
        scored = self.scorer.score(known) if len(known) else known
        return scored, errors

    @bentoml.api
    def score(self, customer_ids: CustomerIds) -> ScoreResponse:
        """Churn probability, risk band, CLV, segment and reason codes for each customer id."""
        scored, errors = self._score(customer_ids)
        reasons = self.scorer.reasons(scored) if len(scored) else []
        scores = [
            ExplainedScore(**row, reasons=why)
            for row, why in zip(scored[list(CustomerScore.model_fields)].to_dict("records"), reasons)
        ]
        return ScoreResponse(scores=scores, errors=errors)

    @bentoml.api
    def interventions(
        self,
        customer_ids: CustomerIds,
        campaign: Annotated[
            str | None, Field(max_length=128, description="Campaign id; default 'online-<UTC date>'.")
        ] = None,
    ) -> InterventionResponse:
        """Choose an action for each customer id and record it in the ledger (idempotent per campaign)."""
        scored, errors = self._score(customer_ids)
        if scored.empty:
            return InterventionResponse(decisions=[], errors=errors)
        campaign = campaign or self.settings.campaign or f"online-{datetime.now(timezone.utc):%Y%m%d}"
        decisions = decide(scored, self.scorer.catalog).merge(
            scored[["customer_id", "segment", "risk_band", "churn_probability", "clv", "model_version"]],
            on="customer_id",
        )
        recorded = self.ledger.record(decisions, campaign)
        return InterventionResponse(
            decisions=[Decision(**row) for row in recorded.to_dict("records")],
            errors=errors,
        )
