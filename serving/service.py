"""The BentoML service: scores and interventions for customers, from the online store.

Start it with `churn serve` (or `bentoml serve serving.service:ChurnService`); it reads
the same settings as the CLI (`churn.toml`, `CHURN_*` variables) and refuses to start
without an API key (`serving.api_keys`). Models, the feature store reader and the ledger
are set up once, in `__init__`; a request does one online read for all its ids and calls
the raw boosters with NumPy (`serving/online.py`).

This module imports only what the API's schema needs (pydantic, FastAPI, BentoML): `bentoml
serve` imports it once in its own process before it starts the workers, and each worker
imports it again. Feast, LightGBM, MLflow and pandas are imported by `ChurnService.__init__`,
once per worker, at start-up.

Errors become statuses here and only here: bad input 400 (the message names the field; a
body or query that does not validate is worded by serving/app.py), no known customer or
decision 404, an outcome not known yet 409, a store down 503 (readiness goes red too, and
the next request after the store is back succeeds: nothing is cached in a broken state).
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import anyio.to_thread
import bentoml
from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from starlette.responses import Response

from churn import clock
from churn.ids import CONTROL_CHARACTERS, MAX_ID_LENGTH, id_problem
from churn.errors import (
    ChurnError,
    ConfigError,
    DataError,
    OutcomeNotYetKnownError,
    StoreUnavailableError,
    UnknownCustomerError,
    UnknownDecisionError,
)
from churn.settings import load_settings
from serving.guard import ApiKeyMiddleware, BodyLimitMiddleware, JsonOnlyMiddleware, quiet_tracebacks, validation_message
from serving.launch import champions_fetched_aside
from training.reason import Reason

if TYPE_CHECKING:
    from serving.learning import CellEffects
    from serving.ledger import Ledger
    from serving.online import OnlineRows, Scores

MAX_IDS = 1_000
# Threads of the ledger lane (`ChurnService._in_ledger_lane`): decisions and outcomes in flight per worker.
LEDGER_LANE = 4
# Seconds a call waits past its store's timeout before it gives up on a store that answers nothing at all.
_GRACE = 1.0
MAX_PAGE = 1_000
# an id is 1 to MAX_ID_LENGTH characters, none of them a control character
_ID_PATTERN = f"^[^{CONTROL_CHARACTERS}]+$"
# an integer id is a 64-bit integer (a larger one is text, as any id may be)
_INT_ID_MIN, _INT_ID_MAX = -(2**63), 2**63 - 1


def _distinct(ids: list[str]) -> list[str]:
    """Each customer once, in the order first asked: 123 and "123" are one customer, which JSON
    Schema's `uniqueItems` cannot say, so a repeat is answered once rather than refused."""
    return list(dict.fromkeys(ids))


def _customer_id(value: object) -> str:
    """A customer id of a request, as text: a JSON string as it is, a JSON integer as its decimal text (123 is "123").

    `true` or `1.0` is not customer 1; an id is 1 to `MAX_ID_LENGTH` characters, none a control character.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("a customer id must be a string or an integer")
    if isinstance(value, int) and not _INT_ID_MIN <= value <= _INT_ID_MAX:
        raise ValueError(f"an integer customer id must be within [{_INT_ID_MIN}, {_INT_ID_MAX}] (64 bits); got {value}")
    text = str(value) if isinstance(value, int) else value
    problem = id_problem(text)
    if problem:
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise ValueError(f"customer id {shown!r} {problem}")
    return text


CustomerId = Annotated[
    str,
    PlainValidator(_customer_id),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": _ID_PATTERN},
                {"type": "integer", "minimum": _INT_ID_MIN, "maximum": _INT_ID_MAX},
            ],
            "description": f"A customer id as in the raw tables: text of 1 to {MAX_ID_LENGTH} characters without "
            'control characters, or an integer (123 is the customer "123").',
        }
    ),
]
CustomerIds = Annotated[
    list[CustomerId],
    Field(
        min_length=1, max_length=MAX_IDS,
        description=f"Customer ids (1 to {MAX_IDS}); a repeated id (123 and \"123\" included) is answered once.",
    ),
    AfterValidator(_distinct),
]
Campaign = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", description="Campaign id.")
]


class CustomerScore(BaseModel):
    """The engine's view of one customer."""

    customer_id: str = Field(description="The customer id as in the raw tables (text; an integer id as its decimal text).")
    churn_probability: float = Field(description="Probability of cancelling within the model's horizon.")
    risk_band: str = Field(description="Churn-risk band: low, medium or high.")
    clv: float = Field(description="Predicted revenue over the next 12 months.")
    segment: str = Field(description="CLV segment: low, medium or high.")
    model_version: str = Field(description="Registered model versions that produced this score.")


class ExplainedScore(CustomerScore):
    """A score with the reasons behind it."""

    reasons: list[Reason] = Field(description="Why the churn risk is high, strongest first (at most 3).")


class CustomerError(BaseModel):
    """Why one customer id got no answer."""

    customer_id: str = Field(description="The id that was asked for (as text).")
    error: str = Field(description="What is wrong with it.")


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
    holdout: bool = Field(
        False, description="Held out for measurement: do not contact (the action is what they would have got)."
    )
    campaign: str = Field(description="Campaign the decision belongs to.")
    decided_at: datetime = Field(description="When the decision was first recorded (UTC).")


class Outcome(BaseModel):
    """What became of one decided customer of one campaign (contacted or held out)."""

    # strict: JSON's own types only (`1` is not `true`, `"40"` not a revenue, a number not a date)
    model_config = ConfigDict(strict=True)

    campaign: Campaign
    customer_id: CustomerId
    churned: bool = Field(description="Whether the customer cancelled by the end of the horizon.")
    # finite: 1e999 parses as inf, which no measurement could use or correct
    revenue: float = Field(ge=0, allow_inf_nan=False, description="Revenue from the customer over the horizon.")
    horizon_end: datetime = Field(description="End of the horizon the outcome covers (UTC).")


class OutcomeReceipt(BaseModel):
    """How many outcomes were new."""

    received: int = Field(description="Outcomes in the request.")
    recorded: int = Field(description="Outcomes recorded now; one already recorded keeps its first value.")


class InterventionResponse(BaseModel):
    """Recorded decisions for the known ids, errors for the others."""

    decisions: list[Decision] = Field(description="One recorded decision per known customer.")
    errors: list[CustomerError] = Field(description="One entry per id that got no decision.")


class InterventionPage(BaseModel):
    """One page of a campaign's recorded decisions, by customer id."""

    campaign: str = Field(description="The campaign asked for.")
    decisions: list[Decision] = Field(
        description="Up to `limit` decisions, by increasing customer id (as text, by code point: '10' before '9')."
    )
    next_after: str | None = Field(description="Pass as `after` to get the next page; null on the last page.")


class Readiness(BaseModel):
    """Whether the service can answer, part by part."""

    ready: bool = Field(description="True when the models are loaded and both stores can serve requests.")
    models: str = Field(description="Loaded model versions.")
    online_store: str = Field(
        description="'ok', or why the online store cannot serve: unreachable, empty, or features older than their TTL."
    )
    ledger: str = Field(description="'ok', or why the ledger cannot record: unreachable, read-only, locked, or wrong schema.")


class ErrorBody(BaseModel):
    """What every 4xx/5xx answer of the service carries."""

    error: str = Field(description="What went wrong, naming the field or store.")


# Scores served, per model version: what a dashboard needs to see a rollout happen.
SCORES_SERVED = bentoml.metrics.Counter(
    name="churn_scores_served",
    documentation="Customers scored, by the model versions that scored them.",
    labelnames=["model_version"],
)

# the first kind that matches decides: subclasses of DataError before it
_STATUS = {
    UnknownCustomerError: 404, UnknownDecisionError: 404, OutcomeNotYetKnownError: 409, DataError: 400,
    StoreUnavailableError: 503,
}


def _status_of(exc: ChurnError) -> int:
    return next((status for kind, status in _STATUS.items() if isinstance(exc, kind)), 500)


def _http_errors(api: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the engine's errors into JSON error answers with their status and message (sync or async APIs)."""
    if inspect.iscoroutinefunction(api):

        @functools.wraps(api)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await api(*args, **kwargs)
            except ChurnError as exc:
                return JSONResponse({"error": str(exc)}, status_code=_status_of(exc))

        return async_wrapper

    @functools.wraps(api)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return api(*args, **kwargs)
        except ChurnError as exc:
            return JSONResponse({"error": str(exc)}, status_code=_status_of(exc))

    return wrapper


# GET routes (BentoML APIs are POST only), mounted on the service; its OpenAPI is merged into the service's.
campaigns = FastAPI(title="churn_engine campaign lists")


@campaigns.exception_handler(RequestValidationError)
async def _bad_query(_request: Any, exc: RequestValidationError) -> JSONResponse:
    """A bad query parameter: 400 `{"error": ...}` naming it, as the POST APIs answer (FastAPI's own is 422)."""
    return JSONResponse({"error": validation_message(exc.errors())}, status_code=400)


# No per-request access log: /metrics counts requests and latencies per endpoint and status,
# and a log line per request costs more than the scoring itself (docs/benchmarks.md).
@bentoml.service(name="churn_engine", traffic={"timeout": 30}, logging={"access": {"enabled": False}})
@bentoml.asgi_app(campaigns, path="/", name="campaigns")
class ChurnService:
    """Churn risk, CLV and retention decisions for customers of the online store."""

    def __init__(self) -> None:
        quiet_tracebacks(["bentoml", "uvicorn", "uvicorn.error", "_bentoml_impl", "bentoml._internal.server.http_app"])
        self.settings = load_settings()
        if not self.settings.serving.api_keys:
            raise ConfigError(
                "serving.api_keys is empty: set CHURN_SERVING__API_KEYS='[\"<key>\"]' (or [serving] api_keys in "
                "churn.toml); the service lets only its clients in"
            )
        # a helper process fetches the champions from the MLflow registry meanwhile (serving/launch.py);
        # the request path's modules are imported here, once per worker, rather than with this module
        with champions_fetched_aside(self.settings) as fetched_champions:
            from features.store import feature_store
            from serving.batch import decide_campaign, learn_effects, with_learned_effects
            from serving.online import FastScorer, OnlineReader
            from serving.scoring import Scorer

            self._decide_campaign = decide_campaign
            self._learn_effects, self._with_learned_effects = learn_effects, with_learned_effects
            fetched = fetched_champions()
        self.scorer = Scorer.load(self.settings, fetched)
        self.reader = OnlineReader(feature_store(self.settings), self.scorer.feature_services, self.scorer.required_features)
        self.fast = FastScorer(self.scorer)
        self._ledger: Ledger | None = None
        self._ledger_lock = threading.Lock()
        self._ledger_lane: anyio.CapacityLimiter | None = None  # made in the event loop, on first use
        self._learner: CellEffects | None = None
        self._learn_lock = threading.Lock()
        self._outcomes_seen: int | None = None  # the ledger's outcome count when last learned; None: not yet
        self._outcomes_checked = float("-inf")  # time.monotonic() of the last count
        try:
            self.ledger()
            self._learned()
        except StoreUnavailableError:
            pass  # readiness reports it; every request that needs the ledger retries the connection

    def _learned(self) -> CellEffects | None:
        """The action effects learned from the ledger's outcomes, as a batch run learns them; None: the priors.

        Learned at start-up (or at the first decision, when the ledger was down then). Then a
        decision counts the ledger's outcomes (one cheap query) at most every
        `learning.refresh_seconds`, and learns again when the count changed, so outcomes
        recorded through `/outcomes`, `churn outcomes` or another replica reach every worker
        within that time. Learning reads the outcomes summed per segment x action x holdout
        (`Ledger.outcome_cells`: a few dozen rows). A ledger error propagates (503): the next
        decision tries again.
        """
        if self.settings.learning.mode == "priors":
            return None
        with self._learn_lock:
            now = time.monotonic()
            if self._outcomes_seen is not None and now - self._outcomes_checked < self.settings.learning.refresh_seconds:
                return self._learner
            ledger = self.ledger()
            count = ledger.outcome_count()  # before learning: outcomes arriving meanwhile are learned next time
            if count != self._outcomes_seen:
                self._learner = self._learn_effects(self.settings, self.scorer.catalog, ledger)
                self._outcomes_seen = count
            self._outcomes_checked = now
            return self._learner

    def ledger(self) -> Ledger:
        """The ledger, connected on first use so that the service starts (not ready) while it is down."""
        with self._ledger_lock:
            if self._ledger is None:
                from serving.ledger import Ledger

                self._ledger = Ledger.for_settings(self.settings)
            return self._ledger

    # ------------------------------------------------------------ scoring
    def _read(self, customer_ids: list[str]) -> tuple[OnlineRows, list[CustomerError]]:
        now = clock.now(self.settings)
        rows = self.reader.read(customer_ids, now=now)
        errors = [
            CustomerError(customer_id=str(c), error="unknown customer: the online store has no features for this id")
            if not known
            else CustomerError(customer_id=str(c), error=f"features missing in the online store: {missing}")
            if missing
            else CustomerError(
                customer_id=str(c),
                error=f"features stale: the oldest are of {datetime.fromtimestamp(oldest, timezone.utc):%Y-%m-%d}, past "
                f"their TTL at now ({now:%Y-%m-%d}, the engine's clock); materialize newer features",
            )
            for c, known, missing, stale, oldest in zip(
                rows.customer_ids, rows.known, rows.missing, rows.stale, rows.oldest, strict=True
            )
            if not known or missing or stale
        ]
        complete = rows.take(rows.complete)
        if not len(complete.customer_ids):
            raise UnknownCustomerError(
                f"customer_ids: none of the ids can be scored: {'; '.join(f'{e.customer_id}: {e.error}' for e in errors[:10])}"
            )
        return complete, errors

    def _score(self, customer_ids: list[str], explain: bool = False) -> tuple[Scores, list[CustomerError], OnlineRows]:
        rows, errors = self._read(customer_ids)
        scores = self.fast.score(rows, explain=explain)
        SCORES_SERVED.labels(model_version=scores.model_version).inc(len(scores.customer_ids))
        return scores, errors, rows

    @bentoml.api
    @_http_errors
    def score(self, customer_ids: CustomerIds) -> ScoreResponse:
        """Calibrated churn probability, risk band, CLV, segment and reason codes for each customer id."""
        scores, errors, _ = self._score(customer_ids, explain=True)
        items = [
            ExplainedScore(
                customer_id=str(c), churn_probability=float(p), risk_band=str(b), clv=float(v), segment=str(s),
                model_version=scores.model_version, reasons=why,
            )
            for c, p, b, v, s, why in zip(
                scores.customer_ids, scores.churn_probability, scores.risk_band, scores.clv, scores.segment,
                scores.reasons, strict=True,
            )
        ]
        return ScoreResponse(scores=items, errors=errors)

    async def _in_ledger_lane(self, work: Callable[..., Any], *args: Any) -> Any:
        """Run `work(*args)` on a thread of the ledger lane, apart from the thread that scores; give up after a bound.

        Why a lane: BentoML runs every synchronous API of a worker on one thread (its
        `threads` setting, default 1), so a decision waiting on a locked or slow ledger held
        up every `/score` behind it. The APIs that write the ledger are async and hand their
        work to this lane of `LEDGER_LANE` threads; `/score` keeps BentoML's thread to
        itself. More BentoML threads would not do: a few blocked decisions would fill them.

        Why a bound here too: the ledger's timeouts run on the server, so a server or link
        that stops answering altogether (hung, black-holed) would hold the call forever. The
        call answers 503 `_GRACE` seconds after `timeouts.ledger_seconds`; the abandoned
        thread finds its deadline gone before it could commit, and rolls back.
        """
        if self._ledger_lane is None:
            self._ledger_lane = anyio.CapacityLimiter(LEDGER_LANE)
        seconds = self.settings.timeouts.ledger_seconds + _GRACE
        return await self._bounded(functools.partial(work, *args), seconds, "ledger", self._ledger_lane)

    async def _bounded(
        self, work: Callable[[], Any], seconds: float, store: str, limiter: anyio.CapacityLimiter | None = None
    ) -> Any:
        """`work()` on a thread; `StoreUnavailableError` naming `store` if it has not returned within `seconds`."""
        try:
            with anyio.fail_after(seconds):
                return await anyio.to_thread.run_sync(work, limiter=limiter, abandon_on_cancel=True)
        except TimeoutError as exc:
            where = (
                f"ledger at {self.ledger_url_shown}" if store == "ledger" else f"online store ({self.settings.online_store})"
            )
            raise StoreUnavailableError(f"{where} did not answer within {seconds:g} s (hung server or network?)") from exc

    @property
    def ledger_url_shown(self) -> str:
        """The ledger's URL without its password."""
        from serving.ledger import shown_url  # imported at start-up (by serving.batch): a dictionary lookup here

        return shown_url(self.settings.resolved_ledger_url)

    @bentoml.api
    @_http_errors
    async def interventions(self, customer_ids: CustomerIds, campaign: Campaign = None) -> InterventionResponse:  # type: ignore[assignment]
        """Choose an action for each customer id and record it in the ledger.

        A decision is recorded once per (campaign, customer): asking again, or concurrently,
        returns the first recorded decision. The campaign's budget and capacities hold across
        calls, and a customer contacted in another campaign within the cooldown gets no action,
        also from another replica at the same moment. When the ledger cannot be reached or does
        not commit within `timeouts.ledger_seconds` of the request, the answer is 503 and no
        decision is recorded.
        """
        deadline = time.monotonic() + self.settings.timeouts.ledger_seconds
        try:
            return await self._in_ledger_lane(self._interventions, customer_ids, campaign, deadline)
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(
                f"{exc}; the decisions were not confirmed: retry with the same campaign "
                "(a decision already recorded is returned unchanged, none is recorded twice)"
            ) from exc

    def _interventions(self, customer_ids: list[str], campaign: str | None, deadline: float) -> InterventionResponse:
        scores, errors, rows = self._score(customer_ids)
        now = clock.now(self.settings)  # one instant for the campaign id, the decision and its cooldowns
        campaign = campaign or self.settings.campaign or f"online-{now:%Y%m%d}"
        import pandas as pd  # imported at start-up (by serving.batch): a dictionary lookup here

        scored = pd.DataFrame(
            {
                "customer_id": scores.customer_ids,
                "churn_probability": scores.churn_probability,
                "clv": scores.clv,
                "segment": scores.segment,
                "risk_band": scores.risk_band,
                "model_version": scores.model_version,
                # what the catalog's rules read, of what the data set has
                **{f: rows.columns[f] for f in self.scorer.catalog.conditions_features(set(rows.columns)) if f in rows.columns},
            }
        )
        # the same campaign on the same outcomes: the batch run's effects (in 'thompson' mode the same draw)
        scored, effects = self._with_learned_effects(scored, self._learned(), campaign)
        # the batch run's own rules, in one ledger transaction: cooldowns, the campaign's budget left, holdouts
        recorded = self._decide_campaign(
            scored, self.scorer.catalog, self.ledger(), campaign, as_of=now, effects=effects, decided_at=now,
            deadline=deadline,
        )
        return InterventionResponse(
            decisions=[Decision(**row) for row in recorded.to_dict("records")],
            errors=errors,
        )

    @bentoml.api
    @_http_errors
    async def outcomes(
        self,
        outcomes: Annotated[
            list[Outcome], Field(min_length=1, max_length=MAX_IDS, description=f"1 to {MAX_IDS} outcomes.")
        ],
    ) -> OutcomeReceipt:
        """Record campaign outcomes in the ledger (idempotent); they feed measurement and the learned effects.

        Every outcome must name a recorded decision (404 naming one that does not) and have a
        horizon that has ended (409); otherwise nothing is recorded.
        """
        deadline = time.monotonic() + self.settings.timeouts.ledger_seconds
        return await self._in_ledger_lane(self._outcomes, outcomes, deadline)

    def _outcomes(self, outcomes: list[Outcome], deadline: float) -> OutcomeReceipt:
        import pandas as pd

        rows = pd.DataFrame([o.model_dump() for o in outcomes])
        recorded = self.ledger().record_outcomes(
            rows, source="api", recorded_at=clock.now(self.settings), deadline=deadline
        )
        return OutcomeReceipt(received=len(rows), recorded=recorded)

    # ------------------------------------------------------------ campaign lists, readiness
    @campaigns.get(
        "/interventions",
        response_model=InterventionPage,
        responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )
    async def list_interventions(
        self,
        campaign: Annotated[Campaign, Query(description="Campaign whose decisions to list.")],
        after: Annotated[
            str | None,
            Query(
                min_length=1, max_length=MAX_ID_LENGTH, pattern=_ID_PATTERN,
                description="Return customer ids above this one, as text by code point (from next_after).",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Page size (1 to {MAX_PAGE}).")] = 100,
    ) -> Response:
        """A campaign's recorded decisions, paged by customer id, for campaign tools."""
        try:
            rows = await self._bounded(
                lambda: self.ledger().page(campaign, after, limit), self.settings.timeouts.ledger_seconds + _GRACE, "ledger"
            )
        except StoreUnavailableError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        page = InterventionPage(
            campaign=campaign,
            decisions=[Decision(**row) for row in rows],
            next_after=rows[-1]["customer_id"] if len(rows) == limit else None,
        )
        return JSONResponse(page.model_dump(mode="json"))

    @campaigns.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
    async def ready(self) -> Response:
        """Readiness with reasons: models loaded, fresh features in the online store, a writable ledger (503 otherwise)."""
        state = await self.readiness()
        return JSONResponse(state.model_dump(), status_code=200 if state.ready else 503)

    async def readiness(self) -> Readiness:
        """What requests need: an online store with fresh features, a ledger with its tables that takes writes.

        Each check is bounded (its store's timeout and `_GRACE`), so a hung store turns
        readiness red in seconds instead of holding the probe.
        """
        timeouts = self.settings.timeouts
        online = ledger = "ok"
        try:
            now = clock.now(self.settings)
            await self._bounded(lambda: self.reader.check_ready(now), timeouts.redis_seconds + _GRACE, "online store")
        except StoreUnavailableError as exc:
            online = str(exc)
        try:
            await self._bounded(lambda: self.ledger().check_writable(), timeouts.ledger_seconds + _GRACE, "ledger")
        except ChurnError as exc:  # unreachable, read-only, locked, or a ledger this version cannot use
            ledger = str(exc)
        return Readiness(
            ready=online == ledger == "ok", models=self.scorer.model_version, online_store=online, ledger=ledger
        )

    async def __is_ready__(self) -> bool:
        """BentoML's /readyz: the same check as /ready."""
        return (await self.readiness()).ready


class _MergedSpecService(type(ChurnService)):
    """BentoML's service whose OpenAPI keeps both operations of a path served twice, and whose app is ours.

    BentoML merges a mounted app's paths over its own API paths, so `GET /interventions`
    (campaign lists) would hide `POST /interventions` from the spec and its clients. Each
    worker builds its HTTP app with serving/app.py (metric labels, 400s, logs, spec).
    """

    __slots__ = ()

    @property
    def openapi_spec(self):
        import attrs
        from _bentoml_sdk.service.openapi import _get_api_routes, generate_spec

        spec = generate_spec(self)
        for path, item in _get_api_routes(self).items():
            if spec.paths[path].post is None:
                spec.paths[path] = attrs.evolve(spec.paths[path], post=item.post)
        return spec

    def to_asgi(self, is_main: bool = True):
        """The worker's app: BentoML's, with bounded metric labels, field-naming 400s and status logs (serving/app.py)."""
        from serving.app import build_app

        return build_app(self, is_main)


object.__setattr__(ChurnService, "__class__", _MergedSpecService)


def _api_keys() -> list[str]:
    return [key.get_secret_value() for key in load_settings().serving.api_keys]


def _max_body_bytes() -> int:
    return load_settings().serving.max_body_bytes


# Outermost first: the key is checked before anything reads the body. Both read the settings
# when the server builds its app, not at import.
ChurnService.add_asgi_middleware(ApiKeyMiddleware, keys=_api_keys)
ChurnService.add_asgi_middleware(BodyLimitMiddleware, max_bytes=_max_body_bytes)
ChurnService.add_asgi_middleware(JsonOnlyMiddleware)
