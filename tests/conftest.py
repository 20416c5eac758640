"""Shared fixtures: a small engine run end to end on real Feast, MLflow and SQLite.

The pipeline fixtures are session-scoped: the whole path runs once on a small simulated
population (2,000 customers) and the tests read what it produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from churn import clock
from churn.settings import Settings, load_settings
from features.build import FeatureBuildResult, build_feature_tables, raw_as_of
from features.definitions import FEATURE_TTL
from features.simulate import SimulationResult, simulate
from features.store import apply_definitions, materialize
from serving.batch import InterventionRun, run_interventions
from training.train import TrainResult, train

SMALL_POPULATION = 2_000


@dataclass(frozen=True)
class EngineRun:
    """Everything one end-to-end run produced."""

    settings: Settings
    simulation: SimulationResult
    features: FeatureBuildResult
    training: TrainResult
    interventions: InterventionRun


def make_settings(root: Path, **overrides) -> Settings:
    """Settings that keep every file of a test under `root`."""
    settings = load_settings(data_dir=root / "data", mlruns_dir=root / "mlruns", **overrides)
    settings.ensure_dirs()
    return settings


def run_engine(settings: Settings, n_customers: int, seed: int = 7) -> EngineRun:
    """simulate -> features -> feast apply + materialize -> train -> interventions.

    The engine's clock is pinned to the end of the simulated data, as the demo pins it: the
    run, and every test reading it, decides the same way on any date.
    """
    sim = simulate(settings.raw_dir, settings.truth_dir, n_customers=n_customers, seed=seed)
    built = build_feature_tables(settings.raw_dir, settings.feature_tables_dir)
    apply_definitions(settings)
    as_of = raw_as_of(settings.raw_dir)
    settings = clock.pinned(settings, as_of)
    materialize(settings, as_of - FEATURE_TTL, as_of)
    trained = train(settings)
    run = run_interventions(settings)
    return EngineRun(settings, sim, built, trained, run)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EngineRun:
    root = tmp_path_factory.mktemp("engine")
    return run_engine(make_settings(root), SMALL_POPULATION)
