"""The one settings object: paths, tracking URI, store URLs and run parameters.

Read, in increasing priority, from defaults, a TOML file (`churn.toml` in the working
directory, or the file named by `CHURN_CONFIG`) and `CHURN_*` environment variables
(nested fields with `__`, e.g. `CHURN_SIMULATION__N_CUSTOMERS=2000`).
Nothing is created on import; `Settings.ensure_dirs()` makes the folders when a command
needs them.
"""

from __future__ import annotations

import json
import os
import re
from datetime import date, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from churn.clock import utc
from churn.errors import ConfigError
from churn.keys import error_message

_CONFIG_ENV = "CHURN_CONFIG"
_DEFAULT_CONFIG_FILE = "churn.toml"


class Section(BaseModel):
    """A section of the settings: a key it does not know (a typo, or one a newer version removed) is an error."""

    model_config = ConfigDict(extra="forbid")


class SimulationSettings(Section):
    """Size and time span of the embedded simulator."""

    n_customers: int = Field(20_000, ge=100, description="Customers to simulate.")
    seed: int = Field(42, description="Random seed; the same seed gives the same tables.")
    start: date = Field(date(2024, 11, 1), description="First simulated day.")
    days: int = Field(730, ge=400, description="Simulated days (about two years).")
    scenario: Literal["priors-right", "priors-wrong", "heterogeneous", "lost-causes"] = Field(
        "priors-right",
        description="What the simulated customers' true responses to the catalog's actions are "
        "(features/truth.py, docs/architecture.md 'The simulator's scenarios'): outcomes of simulated campaigns follow it.",
    )


class TrainingSettings(Section):
    """Training and measurement settings that no data set's config holds (its labels and splits are in the config)."""

    horizon_days: int = Field(
        30, ge=1, description="Days after a decision over which a campaign's outcomes count (`churn outcomes --simulated`)."
    )
    calibration_bins: int = Field(10, ge=2, description="Equal-count probability bins of the reliability table and ECE.")
    sample_customers: int | None = Field(
        None, ge=1,
        description="Train on at most this many customers (the same ones at every cutoff, drawn by a "
        "stable hash of the id); unset (the default) keeps every customer. A reduction for data sets too large to "
        "train on whole on one machine (benchmarks/scale.py at 1,000,000 customers): labels, the point-in-time "
        "training sets, the evaluation and every fit see only the sampled customers; scoring and the online store "
        "still cover all of them.",
    )
    refit_rows: int | None = Field(
        1_000_000, ge=1,
        description="A churn model refitted on more rows than this (after its search on a sample) grows each tree on "
        "this many of them, drawn at random anew every round (LightGBM's bagging), with the cores the fits side by side "
        "leave: a round then costs about what it costs on this many rows, and every row still shapes the model "
        "(`training.tuning.AutoTunedModel`). Unset: every tree sees every row (at 1,000,000 customers, 5.5 M rows: about "
        "25 minutes per fit on one thread).",
    )
    n_jobs: int | None = Field(
        None, ge=1,
        description="Model fits of `churn train` run at a time (each single-threaded, in its own process); unset "
        "(the default): one per usable core.",
    )


class ProfitSettings(Section):
    """Campaign economics for EMPC (Verbraken, Verbeke & Baesens 2013; defaults are the paper's)."""

    clv: float = Field(200.0, gt=0, description="Constant customer lifetime value of the paper's EMPC.")
    offer_cost: float = Field(10.0, ge=0, description="d: cost of the retention offer to a customer who accepts it.")
    contact_cost: float = Field(1.0, ge=0, description="f: cost of contacting one customer.")
    accept_alpha: float = Field(6.0, gt=0, description="Acceptance rate gamma ~ Beta(alpha, beta): alpha.")
    accept_beta: float = Field(14.0, gt=0, description="Acceptance rate gamma ~ Beta(alpha, beta): beta.")


class PromotionSettings(Section):
    """When `churn promote` lets a challenger replace the champion."""

    metric: Literal["roc_auc", "pr_auc", "empc", "top_decile_lift", "brier", "ece"] = Field(
        "roc_auc", description="Metric both models are compared on, on the same held-out cutoff."
    )
    tolerance: float = Field(
        0.005, ge=0, description="The challenger may be worse than the champion by at most this much on the metric."
    )


class BuildSettings(Section):
    """The feature build of logs (`features/build.py`, `features/weekly.py`): memory it may use and how it splits the work."""

    memory_limit: str = Field("4GB", description="DuckDB memory limit of the build; past it DuckDB spills to disk.")
    partition_customers: int = Field(
        125_000, ge=1,
        description="Customers per partition of the window step, run one after another: the partition count is "
        "ceil(customers / this). 125,000 keeps each step under about 2 GB (1,000,000 customers: 8 partitions).",
    )


class OfflineSettings(Section):
    """Reads from Feast's offline store (`features/store.historical_features`)."""

    pit_chunk_rows: int = Field(
        250_000, ge=1,
        description="Entity rows per point-in-time join call to Feast's offline store; the parts are joined in "
        "Arrow. A call's memory grows with its rows, its time hardly depends on the split: at 1,000,000 customers "
        "500,000 rows held 2.9 GB, 250,000 rows 0.6 GB, at the same rows per second.",
    )
    memory_limit: str = Field(
        "2GB",
        description="DuckDB memory limit of Feast's offline store in the process that runs a join of more than one "
        "part (past it DuckDB spills to disk; its default is 80 % of the machine).",
    )


class DaskSettings(Section):
    """Dask mode: where the offline stages run when one machine is not enough (`churn/cluster.py`)."""

    scheduler: str | None = Field(
        None,
        description="Unset: one machine, no Dask. 'local': a LocalCluster here. Else a scheduler address (tcp://host:8786).",
    )
    local_workers: int = Field(2, ge=1, description="Worker processes of the local cluster.")
    threads_per_worker: int = Field(1, ge=1, description="Threads per worker of the local cluster.")
    local_scheduler_port: int = Field(0, ge=0, description="Port of the local cluster's scheduler; 0 picks a free one.")
    connect_timeout_seconds: int = Field(30, ge=1, description="How long to wait for a remote scheduler.")
    partitions: int = Field(8, ge=1, description="Customer partitions (tasks) per stage; each must fit one worker's memory.")


class TimeoutSettings(Section):
    """How long a call to a store may wait: every wait is bounded, so a hung store is an error, not a hang."""

    redis_seconds: float = Field(
        1.0, gt=0, le=60,
        description="Connect and socket timeout of the online store on Redis (each read waits at most this; a "
        "hung Redis gives 503 within it).",
    )
    ledger_connect_seconds: int = Field(
        2, ge=2, le=60, description="Connect timeout of a PostgreSQL ledger (libpq's minimum is 2 s)."
    )
    ledger_seconds: float = Field(
        2.0, gt=0, le=600,
        description="Statement and lock timeout of the ledger (PostgreSQL statement_timeout and lock_timeout, "
        "SQLite busy timeout); a service decision's whole transaction, locks included, must commit within it "
        "or is rolled back (503).",
    )
    ledger_batch_seconds: float = Field(
        600.0, gt=0,
        description="Statement timeout of the ledger in batch runs and reports (`churn interventions`, `churn "
        "outcomes`, `churn measure`), whose statements may read or write a whole campaign; their lock waits stay "
        "bounded by ledger_seconds.",
    )


class LearningSettings(Section):
    """How action effects are learned from the ledger's outcomes and used (`serving/learning.py`)."""

    mode: Literal["thompson", "mean", "priors"] = Field(
        "thompson",
        description="What decisions use once the ledger has outcomes: 'thompson' one draw per value segment x "
        "action from the learned posterior, fixed per campaign (exploration from the posterior's uncertainty); "
        "'mean' the posterior means; 'priors' the catalog's prior effects (outcomes are still measured).",
    )
    prior_churners: float = Field(
        20.0, gt=0,
        description="Expected churners each prior (the catalog's effect, and the model's calibration) is worth "
        "in a segment x action cell of what is reported (`churn measure`'s learned effect, its 95 % interval and "
        "the holdouts still needed). 20: one default campaign's outcomes do not outweigh it (a cell's holdout "
        "sees a few to 15 churners), a few do, and the intervals cover the truth (docs/benchmarks.md, 'Learning "
        "action effects').",
    )
    decision_churners: float = Field(
        160.0, gt=0,
        description="The same for what decisions use (the Thompson draws and 'mean' mode's posterior means). "
        "Heavier than the report's, because a wrong sign read from a few churners costs money at every contact; "
        "160: the best worst case against the catalog's priors of 20, 80 and 160 on the simulator's scenarios, "
        "at the price of acting on a harm later (serving/learning.py; docs/benchmarks.md, 'Targeting strategies "
        "on the simulator's scenarios').",
    )
    pool: bool = Field(
        True,
        description="Centre each segment x action cell's prior on its action's effect learned over every "
        "segment (itself shrunk to the catalog's prior) instead of on the catalog's prior.",
    )
    refresh_seconds: float = Field(
        60.0, ge=0,
        description="The service checks the ledger's outcome count at most this often (on a decision) and "
        "learns again when it changed; 0: on every decision. Batch runs always learn from every outcome.",
    )


class ServingSettings(Section):
    """Who may call the scoring service and how much one request may carry."""

    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens of the service's clients (JSON list in CHURN_SERVING__API_KEYS); "
        "the service refuses to start without one.",
    )
    # the largest valid request, 1,000 outcomes with 128-character campaign ids, 19-digit customer ids and
    # 17-digit revenues, is 287 KB as compact JSON and 327 KB indented: it fits (tests/code/test_settings.py)
    max_body_bytes: int = Field(
        400_000, ge=1_024, description="Largest request body accepted (413 above it); 1,000 outcomes fit."
    )
    tracing: bool = Field(
        False,
        description="Keep OpenTelemetry spans on (for BentoML's tracing exporters); off, the service sets "
        "OTEL_SDK_DISABLED, because BentoML records spans for every request even when none is exported.",
    )

    @model_validator(mode="after")
    def _keys_are_long(self) -> ServingSettings:
        # the key itself is never echoed: only its position in the list
        keys = [key.get_secret_value() for key in self.api_keys]
        padded = [i for i, key in enumerate(keys) if key != key.strip()]
        if padded:
            # a client sends the key as a header value, which loses such whitespace: a key nobody could send
            raise ValueError(
                f"serving.api_keys: keys at positions {padded} are blank or start or end with whitespace"
            )
        short = [i for i, key in enumerate(keys) if len(key) < 16]
        if short:
            raise ValueError(f"serving.api_keys: keys at positions {short} are shorter than 16 characters")
        return self


class Settings(BaseSettings):
    """Everything a command needs to know about where things live."""

    model_config = SettingsConfigDict(
        env_prefix="CHURN_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(Path("data"), description="Raw tables, feature tables, Feast repo, outputs, ledger.")
    mlruns_dir: Path = Field(Path("mlruns"), description="MLflow tracking and registry store and artifacts.")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<mlruns_dir>/mlflow.db.")
    online_store: Literal["sqlite", "redis"] = Field("sqlite", description="Feast online store.")
    redis_url: str = Field("127.0.0.1:6379", description="Redis connection string when online_store is redis.")
    ledger_url: str | None = Field(None, description="SQLAlchemy URL of the decision ledger; default SQLite in data_dir.")
    actions_path: Path | None = Field(
        None,
        description="Action catalog YAML; default the ingested data set's own (its config's `actions`, kept by "
        "`churn ingest`), else the packaged serving/actions.yaml.",
    )
    campaign: str | None = Field(None, description="Campaign id for intervention runs; default 'run-<as-of date>'.")
    now: datetime | None = Field(
        None,
        description="The engine's business 'now' (decisions, cooldowns, default campaign ids, outcome horizons, "
        "feature staleness): unset, the wall clock; set (CHURN_NOW=2026-11-01T00:00:00Z), that instant. A date "
        "without a zone is UTC. The demo pins it to the end of its data; tests and benchmarks pin it too.",
    )
    simulation: SimulationSettings = SimulationSettings()
    training: TrainingSettings = TrainingSettings()
    serving: ServingSettings = ServingSettings()
    learning: LearningSettings = LearningSettings()
    timeouts: TimeoutSettings = TimeoutSettings()
    profit: ProfitSettings = ProfitSettings()
    promotion: PromotionSettings = PromotionSettings()
    build: BuildSettings = BuildSettings()
    offline: OfflineSettings = OfflineSettings()
    dask: DaskSettings = DaskSettings()

    @field_validator("now")
    @classmethod
    def _now_in_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else utc(value)

    @model_validator(mode="after")
    def _ingested_catalog(self) -> Settings:
        # the data set's own catalog when `churn ingest` kept one (features/ingest.py: ACTIONS) and none is set;
        # decided when the settings are read: a command or service reads them once, at its start
        if self.actions_path is None and self.uses_ingested_data:
            kept = self.ingested_dir / "actions.yaml"
            if kept.is_file():
                self.actions_path = kept
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get(_CONFIG_ENV, _DEFAULT_CONFIG_FILE)
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )

    # Derived locations: one place decides the layout of data_dir.
    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def truth_dir(self) -> Path:
        """Hidden simulator truth (true responses to actions); never a model input."""
        return self.data_dir / "truth"

    @property
    def ingested_dir(self) -> Path:
        """Tables of the last successful `churn ingest` (bring-your-own data) and their manifest."""
        return self.data_dir / "ingested"

    @property
    def uses_ingested_data(self) -> bool:
        """True when `churn ingest` has run here: the commands then work on the ingested tables."""
        return (self.ingested_dir / "manifest.json").exists()

    @property
    def feature_repo_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def feature_tables_dir(self) -> Path:
        return self.data_dir / "feast" / "tables"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def reports_dir(self) -> Path:
        """HTML training reports (also logged to MLflow with their run)."""
        return self.data_dir / "outputs" / "reports"

    @property
    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.mlruns_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_location(self) -> str:
        return (self.mlruns_dir / "artifacts").resolve().as_uri()

    @property
    def resolved_ledger_url(self) -> str:
        if self.ledger_url:
            return self.ledger_url
        return f"sqlite:///{(self.data_dir / 'ledger.db').resolve()}"

    def ensure_dirs(self) -> None:
        """Create the folders the commands write to."""
        for path in (self.raw_dir, self.truth_dir, self.feature_tables_dir, self.outputs_dir, self.mlruns_dir):
            path.mkdir(parents=True, exist_ok=True)


def _shown_input(error: dict) -> str:
    """The offending value for the message, except where it could be (or contain) an API key."""
    loc = tuple(error["loc"])
    if "api_keys" in loc or loc == ("serving",):
        return ""
    return f" (got {error.get('input')!r})"


def load_settings(**overrides: object) -> Settings:
    """Read the settings; invalid values become a `ConfigError` naming the field."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {error_message(Settings, err)}{_shown_input(err)}" for err in exc.errors()
        )
        source = os.environ.get(_CONFIG_ENV, _DEFAULT_CONFIG_FILE)
        raise ConfigError(f"invalid settings (from {source}, CHURN_* variables or arguments): {problems}") from exc
    except SettingsError as exc:  # a CHURN_* variable of a list or object that is not JSON
        raise ConfigError(_unparsable(exc)) from exc


def _unparsable(exc: SettingsError) -> str:
    """What is wrong with a variable that could not be parsed, without its value (it may hold an API key)."""
    field = re.search(r'field "([^"]+)"', str(exc))
    prefix = f"CHURN_{field.group(1)}".upper() if field else "CHURN_"
    suspects = sorted(name for name, value in os.environ.items() if name.upper().startswith(prefix) and not _is_json(value))
    named = " or ".join(suspects) or f"{prefix}*"
    reason = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
    return (
        f"invalid settings: {named} is not valid JSON{reason}; lists and objects are given as JSON, "
        "e.g. CHURN_SERVING__API_KEYS='[\"<key>\"]'"
    )


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
