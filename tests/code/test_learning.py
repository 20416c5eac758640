"""The learned effects per value segment x action: intervals that cover known effects, posteriors that
narrow with outcomes, Thompson draws fixed per campaign, harm found and acted on, and learning from
any ledger with the ledger's own columns (no simulator traits)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from churn.errors import ConfigError, DataError
from churn.settings import LearningSettings, load_settings
from serving.batch import learn_effects, with_learned_effects
from serving.learning import CELL_COLUMNS, CellEffects, effect_quantiles, holdout_needed, learner_for, outcome_cells
from serving.ledger import Ledger
from serving.policy import NO_ACTION, Segment, decide, load_catalog

CATALOG = load_catalog()
SEGMENTS = [s.value for s in Segment]


def _rows(rng, segment: str, action: str, n: int, effect: float, theta: float = 1.0, share: float = 0.2) -> pd.DataFrame:
    """`n` decided customers of one cell with outcomes: churn p x theta held out, p x theta x (1 - effect) contacted."""
    p = rng.beta(2.0, 18.0, n)
    holdout = rng.random(n) < share
    churn = np.clip(p * theta * np.where(holdout, 1.0, 1.0 - effect), 0, 1)
    return pd.DataFrame(
        {"segment": segment, "action": action, "holdout": holdout, "churned": rng.random(n) < churn, "churn_probability": p}
    )


def _cells_of(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[summary["segment"] != "all"].set_index(["segment", "action"])


# --- intervals -------------------------------------------------------------------------------------


def test_95_intervals_cover_known_effects_in_about_95_percent_of_400_cells():
    """20 ledgers of 3 segments x 7 actions (420 cells): effects from -0.3 (harm) to 0.6 whatever the
    catalog's prior says, the model's calibration off by about 20 % per cell, cells of 20 to 2,000
    outcomes (a fifth held out). Outcomes are Bernoulli, not the model's Poisson.

    Catches intervals too narrow (a prior worth far more than its churners, the F quantiles'
    arms swapped, exposures summed over the wrong customers) and, by the widths of the largest
    cells, intervals that say nothing."""
    rng = np.random.default_rng(0)
    covered, widths = [], []
    for _ in range(20):
        effect = rng.uniform(-0.3, 0.6, (3, len(CATALOG.names)))
        theta = np.exp(rng.normal(0, 0.2, effect.shape))
        size = rng.choice([20, 100, 500, 2_000], effect.shape)
        rows = pd.concat(
            [
                _rows(rng, s, a, size[i, j], effect[i, j], theta[i, j])
                for i, s in enumerate(SEGMENTS)
                for j, a in enumerate(CATALOG.names)
            ]
        )
        cells = _cells_of(learner_for(CATALOG).fit(outcome_cells(rows)).summary())
        truth = pd.Series(effect.ravel(), index=pd.MultiIndex.from_product([SEGMENTS, CATALOG.names]))
        cells = cells.loc[truth.index]
        covered += ((cells["ci_low"] <= truth) & (truth <= cells["ci_high"])).tolist()
        widths += (cells["ci_high"] - cells["ci_low"])[size.ravel() == 2_000].tolist()
    assert len(covered) >= 400
    assert np.mean(covered) >= 0.90, f"95 % intervals covered {np.mean(covered):.1%} of {len(covered)} cells"
    prior = _cells_of(learner_for(CATALOG).fit(pd.DataFrame(columns=CELL_COLUMNS)).summary())
    prior_width = float((prior["ci_high"] - prior["ci_low"]).median())
    assert np.median(widths) < 0.5 * prior_width, f"2,000-outcome cells: {np.median(widths):.2f} wide, prior {prior_width:.2f}"


@pytest.mark.parametrize(("shape_t", "rate_t", "shape_h", "rate_h"), [(3.0, 4.0, 60.0, 50.0), (80.0, 90.0, 2.5, 3.0)])
def test_effect_quantiles_are_those_of_one_minus_a_ratio_of_gammas(shape_t, rate_t, shape_h, rate_h):
    """The analytic (F) quantiles against 400,000 draws, on posteriors of very different sizes (where
    swapping the F's degrees of freedom shows)."""
    rng = np.random.default_rng(0)
    e = 1 - rng.gamma(shape_t, 1 / rate_t, 400_000) / rng.gamma(shape_h, 1 / rate_h, 400_000)
    q = np.array([0.025, 0.5, 0.975])
    np.testing.assert_allclose(effect_quantiles(q, shape_t, rate_t, shape_h, rate_h), np.quantile(e, q), rtol=0.01, atol=0.01)


def test_the_posterior_narrows_as_outcomes_grow_and_settles_on_the_truth():
    """One cell (true effect 0.25) after 1, 4, 16 and 64 campaigns of 200 decided customers.

    Catches a learner that ignores outcomes (the prior's width stays) or counts them twice."""
    rng = np.random.default_rng(3)
    batches = [_rows(rng, "high", "discount_offer", 200, 0.25) for _ in range(64)]
    widths = []
    for campaigns in (1, 4, 16, 64):
        cells = outcome_cells(pd.concat(batches[:campaigns]))
        cell = _cells_of(learner_for(CATALOG).fit(cells).summary()).loc[("high", "discount_offer")]
        widths.append(cell["ci_high"] - cell["ci_low"])
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == 4, widths
    assert cell["ci_low"] <= 0.25 <= cell["ci_high"] and cell["ci_low"] > 0, cell.to_dict()
    assert widths[-1] < 0.3, widths


def test_cells_without_outcomes_keep_the_catalogs_prior():
    """No outcomes: 'mean' decides with exactly the catalog's effects; an action's other cells still learn."""
    empty = learner_for(CATALOG, LearningSettings(mode="mean")).fit(pd.DataFrame(columns=CELL_COLUMNS))
    np.testing.assert_allclose(empty.cell_effects().to_numpy(), np.broadcast_to(CATALOG.prior_effects, (3, 7)))
    assert empty.n_learned == 0
    rows = _rows(np.random.default_rng(1), "low", "advisor_call", 400, -0.4)
    unpooled = learner_for(CATALOG, LearningSettings(mode="mean", pool=False)).fit(outcome_cells(rows)).cell_effects()
    untouched = unpooled.drop(columns="advisor_call")
    np.testing.assert_allclose(untouched.to_numpy(), np.broadcast_to(CATALOG.prior_effects[CATALOG.names.index("advisor_call") != np.arange(7)], (3, 6)))
    assert unpooled.loc["medium", "advisor_call"] == pytest.approx(0.30)  # not pooled: its own prior
    assert unpooled.loc["low", "advisor_call"] < 0.30 - 0.1


def test_pooling_lets_an_actions_other_segments_start_from_what_it_learned():
    """Harm measured in one segment moves the action's other cells (pooled), not other actions."""
    rows = _rows(np.random.default_rng(1), "low", "advisor_call", 2_000, -0.4)
    pooled = learner_for(CATALOG, LearningSettings(mode="mean", pool=True)).fit(outcome_cells(rows)).cell_effects()
    assert pooled.loc["high", "advisor_call"] < 0.30 - 0.1
    assert pooled.loc["high", "discount_offer"] == pytest.approx(0.15)


def test_decisions_use_a_heavier_prior_than_the_report_on_the_same_outcomes():
    """advisor_call's outcomes in the low segment (2,000 decided) show harm (-0.4) where the catalog says
    +0.3. Read with priors worth 20 churners for the report and 160 for decisions: the report (effect, its
    interval, the holdouts needed) is the 20-weight learner's exactly, the decisions the 160-weight
    learner's, and these stay nearer the prior, in the measured cell and (pooled) in the action's other
    segments, in 'mean' mode and in Thompson draws.

    Catches a decision posterior that ignores its weight, a report that moves with it, and pooling lost
    on either side."""
    cells = outcome_cells(_rows(np.random.default_rng(1), "low", "advisor_call", 2_000, -0.4))

    def fitted(report: float, decision: float, mode: str = "mean") -> CellEffects:
        settings = LearningSettings(mode=mode, prior_churners=report, decision_churners=decision)
        return learner_for(CATALOG, settings).fit(cells)

    light, split, heavy = fitted(20, 20), fitted(20, 160), fitted(160, 160)
    reported = ["segment", "action", "effect", "ci_low", "ci_high", "holdout_needed"]
    pd.testing.assert_frame_equal(split.summary(0.2)[reported], light.summary(0.2)[reported])
    pd.testing.assert_frame_equal(split.cell_effects(), heavy.cell_effects())
    pd.testing.assert_series_equal(split.summary(0.2)["decision_effect"], heavy.summary(0.2)["decision_effect"])
    prior = 0.30
    for segment in ("low", "high"):  # the measured cell, and one its action's pooled outcomes move
        decided = split.cell_effects().loc[segment, "advisor_call"]
        read = light.cell_effects().loc[segment, "advisor_call"]
        assert read < decided < prior - 0.05, (segment, read, decided)
    assert _cells_of(split.summary()).loc[("low", "advisor_call"), "ci_high"] < 0  # the report still shows the harm

    campaigns = [f"c{k}" for k in range(200)]
    light_draws = pd.DataFrame([fitted(20, 20, "thompson").cell_effects(c).stack() for c in campaigns])
    split_draws = pd.DataFrame([fitted(20, 160, "thompson").cell_effects(c).stack() for c in campaigns])
    measured, unknown = ("low", "advisor_call"), ("low", "payment_rescue")
    assert abs(split_draws[measured].mean() - prior) < abs(light_draws[measured].mean() - prior)
    assert split_draws[unknown].std() < 0.5 * light_draws[unknown].std()  # less exploration where nothing is known


def test_holdout_needed_gives_about_80_percent_power():
    """At the number of held-out outcomes the power calculation asks for, the learner's 95 % interval
    excludes zero in about 80 % of 300 experiments (a neutral prior, so the data decide).

    Catches a formula that ignores the churn rate, the holdout share or the effect's size."""
    effect, share, p = 0.3, 0.2, 0.1
    n_holdout = int(holdout_needed(np.array(effect), np.array(1.0), np.array(p), np.array(0), share))
    assert 500 < n_holdout < 1_500, n_holdout  # about 840
    rng = np.random.default_rng(5)
    n = int(n_holdout / share)
    found = 0
    for _ in range(300):
        holdout = np.arange(n) < n_holdout
        rows = pd.DataFrame(
            {
                "segment": "low", "action": "a", "holdout": holdout,
                "churned": rng.random(n) < p * np.where(holdout, 1, 1 - effect), "churn_probability": p,
            }
        )
        cell = CellEffects(["a"], [0.0], pool=False).fit(outcome_cells(rows)).summary(share).iloc[0]
        found += cell["ci_low"] > 0
    assert 0.70 <= found / 300 <= 0.90, f"interval excluded 0 in {found} of 300"


def test_summary_says_how_many_more_holdouts_a_cell_needs():
    """Zero once the interval excludes zero; more for a small effect than a large one; none without a holdout share."""
    rng = np.random.default_rng(2)
    rows = pd.concat(
        [_rows(rng, "low", "discount_offer", 300, 0.05), _rows(rng, "low", "advisor_call", 30_000, 0.5)]
    )
    summary = _cells_of(learner_for(CATALOG).fit(outcome_cells(rows)).summary(0.2))
    assert summary.loc[("low", "advisor_call"), "holdout_needed"] == 0
    assert summary.loc[("low", "discount_offer"), "holdout_needed"] > 100
    assert summary.loc[("high", "payment_rescue"), "n_holdout"] == 0
    assert np.isnan(summary.loc[("high", "payment_rescue"), "holdout_needed"])  # no outcomes: no churn rate to go by
    unplanned = _cells_of(learner_for(CATALOG).fit(outcome_cells(rows)).summary(None))
    assert unplanned.loc[("low", "advisor_call"), "holdout_needed"] == 0  # already told from zero
    assert unplanned.drop(index=("low", "advisor_call"))["holdout_needed"].isna().all()


# --- Thompson sampling -------------------------------------------------------------------------------


def _ledger_cells(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return outcome_cells(
        pd.concat([_rows(rng, "medium", "discount_offer", 40_000, 0.2), _rows(rng, "high", "advisor_call", 50, 0.3)])
    )


def test_a_campaigns_draw_is_reproducible_and_another_campaign_draws_afresh():
    cells = _ledger_cells()
    first = learner_for(CATALOG).fit(cells).cell_effects("spring")
    again = learner_for(CATALOG).fit(cells.sample(frac=1, random_state=1)).cell_effects("spring")
    pd.testing.assert_frame_equal(first, again)  # same campaign, same outcomes (in any order): the same draw
    other = learner_for(CATALOG).fit(cells).cell_effects("summer")
    assert (first.to_numpy() != other.to_numpy()).mean() > 0.9
    # a cell's draw does not depend on the other actions' outcomes
    more = pd.concat([cells, outcome_cells(_rows(np.random.default_rng(9), "low", "payment_rescue", 500, 0.1))])
    moved = learner_for(CATALOG).fit(more).cell_effects("spring")
    assert moved.loc["medium", "discount_offer"] == first.loc["medium", "discount_offer"]
    assert moved.loc["low", "payment_rescue"] != first.loc["low", "payment_rescue"]


def test_draws_vary_where_little_is_known_and_follow_the_measurement_where_much_is():
    """Over 400 campaigns: a well-measured cell's draws stay within a few points of its posterior mean;
    a cell without outcomes draws around its prior, more widely (that is the exploration; how widely is
    the decision prior's weight's to say)."""
    learner = learner_for(CATALOG).fit(_ledger_cells())
    draws = pd.DataFrame([learner.cell_effects(f"c{k}").stack() for k in range(400)])
    measured, unknown = draws[("medium", "discount_offer")], draws[("low", "payment_rescue")]
    mean = learner_for(CATALOG, LearningSettings(mode="mean")).fit(_ledger_cells()).cell_effects()
    assert measured.std() < 0.05 and measured.mean() == pytest.approx(mean.loc["medium", "discount_offer"], abs=0.01)
    assert mean.loc["medium", "discount_offer"] == pytest.approx(0.2, abs=0.05)
    assert unknown.std() > 2 * measured.std() and unknown.mean() == pytest.approx(0.35, abs=0.05)


def test_the_effects_matrix_gives_each_customer_its_segments_cell():
    learner = learner_for(CATALOG).fit(_ledger_cells())
    scored = pd.DataFrame({"segment": ["high", "low", "high", "medium"]})
    table = learner.cell_effects("spring")
    np.testing.assert_array_equal(learner.effects(scored, "spring"), table.loc[scored["segment"]].to_numpy())


# --- decisions ---------------------------------------------------------------------------------


def _at_risk(n: int) -> pd.DataFrame:
    """High-value, high-risk customers with a failed payment: payment_rescue, advisor_call and discount_offer are eligible."""
    return pd.DataFrame(
        {
            "customer_id": [f"acct-{i:03d}" for i in range(n)],
            "churn_probability": 0.4,
            "clv": 400.0,
            "segment": "high",
            "risk_band": "high",
            "payment_failures_28d": 1,
        }
    )


@pytest.mark.parametrize("mode", ["mean", "thompson"])
def test_an_action_whose_outcomes_show_harm_is_no_longer_chosen(mode):
    """payment_rescue's prior (0.35 at a cost of 1) makes it every such customer's choice; outcomes of
    3,000 customers show it drives a third more of them away. Decided with what was learned, nobody gets
    it (in 'thompson' mode in none of 20 campaigns).

    Catches effects that never leave the prior, and a sign error between the learner and the policy."""
    catalog = CATALOG.model_copy(update={"budget": None})
    scored = _at_risk(50)
    assert (decide(scored, catalog)["action"] == "payment_rescue").all()
    rows = _rows(np.random.default_rng(4), "high", "payment_rescue", 3_000, -0.35, share=0.2)
    learner = learner_for(catalog, LearningSettings(mode=mode)).fit(outcome_cells(rows))
    cell = _cells_of(learner.summary()).loc[("high", "payment_rescue")]
    assert cell["ci_high"] < 0, cell.to_dict()
    for campaign in [f"c{k}" for k in range(20 if mode == "thompson" else 1)]:
        chosen = decide(scored, catalog, effects=learner.effects(scored, campaign), campaign=campaign)["action"]
        assert not (chosen == "payment_rescue").any(), chosen.value_counts()
        if mode == "mean":
            assert (chosen != NO_ACTION).all()  # the other actions are still worth their cost


def test_with_learned_effects_tags_the_model_version_and_priors_mode_decides_on_the_catalog():
    scored = _at_risk(3).assign(model_version="accounts-churn/2")
    learner = learner_for(CATALOG).fit(_ledger_cells())
    tagged, effects = with_learned_effects(scored, learner, "spring")
    assert (tagged["model_version"] == "accounts-churn/2;effects:thompson(2/21 cells)").all()
    np.testing.assert_array_equal(effects, learner.effects(scored, "spring"))
    assert with_learned_effects(scored, None, "spring") == (scored, None)
    untouched, none = with_learned_effects(scored, learner_for(CATALOG, LearningSettings(mode="priors")).fit(_ledger_cells()), "s")
    assert none is None and untouched is scored


# --- any ledger --------------------------------------------------------------------------------------


def test_learns_from_any_ledger_with_its_own_columns(tmp_path):
    """A ledger of text ids and no features at all (no simulator traits): its outcomes are learned, from SQL.

    Catches learning that needs anything past the ledger, and a SQL sum that differs from the rows'."""
    settings = load_settings(data_dir=tmp_path / "data", ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    assert learn_effects(settings, CATALOG, Ledger(settings.resolved_ledger_url)) is None  # nothing yet: the priors
    rng = np.random.default_rng(8)
    rows = pd.concat([_rows(rng, "medium", "discount_offer", 600, 0.3), _rows(rng, "low", "reengagement_message", 400, 0.1)])
    decided = rows.assign(
        customer_id=[f"acct-{i:04d}" for i in range(len(rows))], channel="email", cost=1.0, expected_value=1.0,
        clv=100.0, risk_band="high", reason="r", model_version="m",
    )
    decided = pd.concat([decided, decided.iloc[:5].assign(customer_id=lambda f: f["customer_id"] + "x", action=NO_ACTION)])
    at = datetime(2025, 3, 1, tzinfo=timezone.utc)
    ledger = Ledger(settings.resolved_ledger_url)
    try:
        ledger.record(decided.drop(columns="churned"), "spring", decided_at=at)
        ledger.record_outcomes(
            decided[["customer_id", "churned"]].assign(campaign="spring", revenue=0.0, horizon_end=at), "test", recorded_at=at
        )
        learner = learn_effects(settings, CATALOG, ledger)
        from_sql, from_rows = ledger.outcome_cells(), outcome_cells(ledger.decisions_with_outcomes())
    finally:
        ledger.close()
    pd.testing.assert_frame_equal(from_sql.reset_index(drop=True), from_rows.reset_index(drop=True), check_exact=False)
    assert learner is not None and learner.n_learned == 2
    summary = _cells_of(learner.summary())
    assert summary.loc[("medium", "discount_offer"), "n_treated"] + summary.loc[("medium", "discount_offer"), "n_holdout"] == 600
    pd.testing.assert_frame_equal(summary.reset_index(), _cells_of(learner_for(CATALOG).fit(from_rows).summary()).reset_index())


def test_outcomes_of_an_action_the_catalog_no_longer_lists_are_left_out_and_named():
    rng = np.random.default_rng(6)
    rows = pd.concat([_rows(rng, "low", "retired_offer", 300, 0.2), _rows(rng, "low", "discount_offer", 300, 0.2)])
    learner = learner_for(CATALOG).fit(outcome_cells(rows))
    assert learner.ignored_actions_ == ["retired_offer"]
    assert set(learner.summary()["action"]) == set(CATALOG.names)


# --- errors ------------------------------------------------------------------------------------------


def test_bad_input_is_named():
    rows = _rows(np.random.default_rng(0), "low", "discount_offer", 20, 0.1)
    with pytest.raises(DataError, match=r"outcome rows lack columns \['churn_probability'\]"):
        outcome_cells(rows.drop(columns="churn_probability"))
    with pytest.raises(DataError, match=r"churn_probability must be a number in \[0, 1\]; got 1.5 in row 3"):
        outcome_cells(rows.assign(churn_probability=[0.1, 0.1, 1.5, *[0.1] * 17]))
    cells = outcome_cells(rows)
    with pytest.raises(DataError, match=r"outcome cells lack columns \['expected'\]"):
        learner_for(CATALOG).fit(cells.drop(columns="expected"))
    with pytest.raises(DataError, match=r"churned must be a whole number within \[0, n\]"):
        learner_for(CATALOG).fit(cells.assign(churned=cells["n"] + 1))
    with pytest.raises(DataError, match="CellEffects is not fitted yet; call fit first"):
        learner_for(CATALOG).cell_effects("spring")
    with pytest.raises(DataError, match="draws per campaign; give the campaign id"):
        learner_for(CATALOG).fit(cells).cell_effects()
    with pytest.raises(DataError, match=r"scores have segments \['vip'\], which the learned effects do not know"):
        learner_for(CATALOG).fit(cells).effects(pd.DataFrame({"segment": ["vip"]}), "spring")
    with pytest.raises(DataError, match="prior_churners must be above 0; got 0"):
        CellEffects(["a"], [0.1], prior_churners=0).fit(cells)
    with pytest.raises(ConfigError, match=r"learning\.prior_churners"):
        load_settings(learning={"prior_churners": 0})
    with pytest.raises(DataError, match=r"decision_churners must be above 0 \(or None\); got -5"):
        CellEffects(["a"], [0.1], decision_churners=-5).fit(cells)
    with pytest.raises(ConfigError, match=r"learning\.decision_churners"):
        load_settings(learning={"decision_churners": 0})
    with pytest.raises(ConfigError, match=r"learning\.mode"):
        load_settings(learning={"mode": "greedy"})


def test_the_decision_weight_is_a_setting_the_learner_takes(monkeypatch, tmp_path):
    """`learning.decision_churners` from the environment reaches the learner; the report's weight stays its own."""
    monkeypatch.chdir(tmp_path)  # no churn.toml of the caller's
    monkeypatch.delenv("CHURN_LEARNING__PRIOR_CHURNERS", raising=False)
    monkeypatch.setenv("CHURN_LEARNING__DECISION_CHURNERS", "80")
    settings = load_settings().learning
    assert (settings.decision_churners, settings.prior_churners) == (80, LearningSettings().prior_churners)
    learner = learner_for(CATALOG, settings)
    assert (learner.decision_churners, learner.prior_churners) == (80, settings.prior_churners)
    # a learner built without one decides with the report's weight
    alone = CellEffects(["a"], [0.1], prior_churners=30, mode="mean").fit(pd.DataFrame(columns=CELL_COLUMNS))
    assert alone.decision_.rate_h[0, 0] == alone.reported_.rate_h[0, 0] == 30
