"""Shared fixtures: a small engine run end to end on real Feast, MLflow and SQLite.

The pipeline fixtures are session-scoped: the whole path runs once on a small simulated
population (2,000 customers) and the tests read what it produced. It is the path of
`churn demo` and of any company's data: the simulator writes its tables and their config, and
everything after `ingest` reads them as it reads any data set.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from churn import clock
from churn.settings import Settings, load_settings
from features.contract import load_contract
from features.build import VIEWS_FILE, FeatureTables, build_features
from features.ingest import ingest
from features.definitions import service_name
from features.simulate import CONFIG_FILE, CONFIG_NAME, simulate
from features.store import apply_definitions, materialize
from serving.batch import InterventionRun, run_interventions
from training.train import TrainResult, train

SMALL_POPULATION = 2_000


@dataclass(frozen=True)
class EngineRun:
    """Everything one end-to-end run produced."""

    settings: Settings
    features: FeatureTables
    training: TrainResult
    interventions: InterventionRun

    @property
    def as_of(self) -> datetime:
        """The end of the simulated data: the engine's pinned clock."""
        return self.features.data_end

    @property
    def service(self) -> str:
        """The Feast FeatureService the engine's models are trained on and served from."""
        return service_name(CONFIG_NAME)

    @property
    def feature_names(self) -> list[str]:
        """Every feature of that service, in the order of its views."""
        return [name for fields in self.features.schema.values() for name, _, _ in fields]


def make_settings(root: Path, **overrides) -> Settings:
    """Settings that keep every file of a test under `root`."""
    settings = load_settings(data_dir=root / "data", mlruns_dir=root / "mlruns", **overrides)
    settings.ensure_dirs()
    return settings


def prepared(
    settings: Settings, n_customers: int | None = None, seed: int = 7, settings_population: bool = False
) -> tuple[Settings, FeatureTables]:
    """simulate -> ingest -> features build -> feast apply, as `churn demo` does; the settings (clock pinned) and the tables.

    `settings_population`: the population, seed, start and length of the settings' simulation
    (the demo's defaults) instead of `n_customers` and `seed`.
    """
    if settings_population:
        sim = settings.simulation
        simulate(settings.raw_dir, settings.truth_dir, n_customers=sim.n_customers, start=sim.start, days=sim.days, seed=sim.seed)
    else:
        simulate(settings.raw_dir, settings.truth_dir, n_customers=n_customers, seed=seed)
    contract, root = load_contract(settings.raw_dir / CONFIG_FILE)
    data_end = ingest(contract, root, settings.ingested_dir).data_end
    # the engine's clock is pinned to the end of the simulated data, as the demo pins it
    settings = clock.pinned(settings, data_end)
    built = build_features(settings.ingested_dir, settings.feature_tables_dir)
    apply_definitions(settings)
    return settings, built


def run_engine(settings: Settings, n_customers: int, seed: int = 7) -> EngineRun:
    """simulate -> ingest -> features -> feast apply + materialize -> train -> interventions (`churn demo`).

    The engine's clock is pinned to the end of the simulated data, as the demo pins it: the
    run, and every test reading it, decides the same way on any date.
    """
    settings, built = prepared(settings, n_customers, seed)
    materialize(settings, built.data_end)
    trained = train(settings)
    run = run_interventions(settings)
    return EngineRun(settings, built, trained, run)


def serve_features_of(engine: EngineRun, settings: Settings) -> None:
    """Put the engine's data set and feature tables in `settings`' feature store and materialize them at its clock."""
    shutil.copytree(engine.settings.ingested_dir, settings.ingested_dir)
    tables = engine.settings.feature_tables_dir
    for table in [*tables.glob("*.parquet"), tables / VIEWS_FILE]:
        shutil.copy(table, settings.feature_tables_dir / table.name)
    apply_definitions(settings)
    materialize(settings, engine.as_of)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EngineRun:
    root = tmp_path_factory.mktemp("engine")
    return run_engine(make_settings(root), SMALL_POPULATION)
