"""Measurement on simulated outcomes: the confidence intervals cover the simulator's true effects."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from churn.errors import DataError
from features.build import raw_as_of
from features.simulate import ACTIONS
from features.store import active_customers
from serving.batch import learn_uplift, run_interventions
from serving.holdout import assign_holdouts
from serving.ledger import Ledger
from serving.measure import ALL_SEGMENTS, measurement_report
from serving.outcomes import ingest_simulated
from serving.scoring import Scorer

# five weeks back: a weekly snapshot whose 30-day horizon ends inside the raw data
WEEKS_BACK = 5


@pytest.fixture()
def past(engine, tmp_path):
    """The engine's settings with a ledger of the test's own, and a scoring date five weeks back."""
    settings = engine.settings.model_copy(update={"ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}"})
    as_of = raw_as_of(settings.raw_dir) - timedelta(weeks=WEEKS_BACK)
    return settings, as_of


def _true_effect_per_action(joined: pd.DataFrame, outcomes: pd.DataFrame) -> pd.Series:
    truth = joined.merge(outcomes[["customer_id", "true_change"]], on="customer_id")
    return truth.groupby("action")["true_change"].mean()


def test_random_assignment_intervals_cover_the_true_effects(past):
    """Every active customer gets a random action, half held out: a clean experiment per action."""
    settings, as_of = past
    customers = active_customers(settings, as_of)["customer_id"].to_numpy()
    rng = np.random.default_rng(11)
    decisions = pd.DataFrame(
        {
            "customer_id": customers,
            "action": rng.choice(ACTIONS, len(customers)),
            "channel": "email",
            "cost": 1.0,
            "expected_value": 1.0,
            "churn_probability": 0.1,
            "clv": rng.gamma(2.0, 100.0, len(customers)),
            "segment": rng.choice(["low", "high"], len(customers)),
            "risk_band": "high",
            "reason": "experiment",
            "model_version": "none",
        }
    )
    decisions = assign_holdouts(decisions, "experiment", 0.5)
    ledger = Ledger(settings.resolved_ledger_url)
    try:
        ledger.record(decisions, "experiment", as_of=as_of)
        outcomes = ingest_simulated(settings, ledger, "experiment")
        joined = ledger.decisions_with_outcomes(["experiment"])
    finally:
        ledger.close()
    report = measurement_report(joined).set_index(["segment", "action"])
    truth = _true_effect_per_action(joined, outcomes)
    assert len(truth) == len(ACTIONS)
    # the simulator's effects differ by action, so the check is not trivially near zero everywhere
    assert truth.min() < -0.005
    for action, true_effect in truth.items():
        row = report.loc[(ALL_SEGMENTS, action)]
        assert row["n_holdout"] > 50 and row["n_treated"] > 50
        assert row["ci_low"] <= true_effect <= row["ci_high"], f"{action}: true {true_effect:.4f} outside {row.to_dict()}"
    # per-cell rows add up to the per-action row
    cells = report.drop(index=ALL_SEGMENTS, level="segment").groupby(level="action")["n_treated"].sum()
    assert cells.to_dict() == report.loc[ALL_SEGMENTS, "n_treated"].to_dict()


def test_policy_campaign_outcomes_and_report(past):
    """The whole path: a batch run five weeks back, its simulated outcomes, the report."""
    settings, as_of = past
    run = run_interventions(settings, as_of=as_of, campaign="five-weeks-back")
    assert run.n_holdout > 0
    ledger = Ledger(settings.resolved_ledger_url)
    try:
        outcomes = ingest_simulated(settings, ledger, "five-weeks-back")
        again = ingest_simulated(settings, ledger, "five-weeks-back")
        joined = ledger.decisions_with_outcomes(["five-weeks-back"])
        # a few dozen outcomes per action are too few to learn from: the priors stay
        assert learn_uplift(settings, Scorer.load(settings), ledger) is None
    finally:
        ledger.close()
    pd.testing.assert_frame_equal(outcomes, again)  # the simulator's outcomes are reproducible
    assert len(joined) == run.n_actions + run.n_holdout
    report = measurement_report(joined)
    truth = _true_effect_per_action(joined, outcomes)
    measured = report[(report["segment"] == ALL_SEGMENTS) & (report["n_holdout"] > 0)].set_index("action")
    assert len(measured) >= 1
    for action, row in measured.iterrows():
        assert row["ci_low"] <= truth[action] <= row["ci_high"], f"{action}: true {truth[action]:.4f}, {row.to_dict()}"


def test_outcomes_need_the_whole_horizon_in_the_data(engine, past):
    settings, _ = past
    as_of = raw_as_of(settings.raw_dir) - timedelta(weeks=1)
    ledger = Ledger(settings.resolved_ledger_url)
    try:
        ledger.record(
            pd.DataFrame(
                {
                    "customer_id": [1], "action": ["advisor_call"], "channel": ["phone"], "cost": [25.0],
                    "expected_value": [1.0], "churn_probability": [0.5], "clv": [100.0], "segment": ["high"],
                    "risk_band": ["high"], "reason": ["r"], "model_version": ["m"],
                }
            ),
            "last-week",
            as_of=as_of,
        )
        with pytest.raises(DataError, match=r"need 30 days of data, until .*; the raw data in .* ends at"):
            ingest_simulated(settings, ledger, "last-week")
    finally:
        ledger.close()


def test_outcomes_and_measure_commands(past, tmp_path):
    """`churn outcomes --simulated` then `churn measure`, as a user runs them."""
    from typer.testing import CliRunner

    from churn.cli import app

    settings, as_of = past
    run_interventions(settings, as_of=as_of, campaign="cli-campaign")
    env = {
        "CHURN_DATA_DIR": str(settings.data_dir),
        "CHURN_MLRUNS_DIR": str(settings.mlruns_dir),
        "CHURN_LEDGER_URL": settings.ledger_url,
        "CHURN_CONFIG": str(tmp_path / "absent.toml"),
    }
    runner = CliRunner()
    neither = runner.invoke(app, ["outcomes"], env=env)
    assert neither.exit_code == 1 and "give either --from-file PATH or --simulated --campaign ID" in neither.output
    done = runner.invoke(app, ["outcomes", "--simulated", "--campaign", "cli-campaign"], env=env)
    assert done.exit_code == 0, done.output
    assert "outcomes from the simulator" in done.output
    report = runner.invoke(app, ["measure"], env=env)
    assert report.exit_code == 0, report.output
    measured = pd.read_csv(settings.outputs_dir / "measurement.csv")
    assert set(measured["segment"]) >= {ALL_SEGMENTS}
    assert {"effect", "ci_low", "ci_high", "incremental_revenue"} <= set(measured.columns)
