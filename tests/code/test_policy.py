"""Business rules: catalog validation, segments, risk bands and the choice of action."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from churn.errors import ConfigError, DataError
from features.simulate import ACTIONS
from serving.policy import (
    NO_ACTION,
    ActionCatalog,
    LifecycleEdges,
    RiskBands,
    decide,
    eligibility,
    lifecycle_stage_of,
    load_catalog,
    risk_band_of,
    segment_of,
)


def _action(name: str, **overrides) -> dict:
    action = {
        "name": name,
        "channel": "email",
        "cost": 1.0,
        "effect": 0.1,
        "reason": f"reason of {name}",
        "segments": ["low", "medium", "high"],
        "risk_bands": ["low", "medium", "high"],
    }
    return {**action, **overrides}


def _catalog_dict(*actions: dict, medium: float = 0.1, high: float = 0.3) -> dict:
    return {"risk_bands": {"medium": medium, "high": high}, "actions": list(actions)}


def _write_yaml(tmp_path, data: dict):
    path = tmp_path / "actions.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --- catalog loading and validation -------------------------------------------------------


def test_packaged_catalog_loads_and_uses_the_simulator_action_names():
    catalog = load_catalog()
    assert [a.name for a in catalog.actions] == list(ACTIONS)
    assert catalog.risk_bands.medium == 0.05
    assert catalog.risk_bands.high == 0.20
    assert catalog.conditions_features() == {
        "tenure_days",
        "days_since_last_active",
        "activity_trend_7d_28d",
        "complaints_28d",
        "payment_failures_28d",
    }


def test_catalog_from_a_path(tmp_path):
    path = _write_yaml(tmp_path, _catalog_dict(_action("call", channel="phone", cost=25)))
    catalog = load_catalog(path)
    assert [(a.name, a.channel, a.cost) for a in catalog.actions] == [("call", "phone", 25.0)]
    # a str path works as well as a Path
    assert load_catalog(str(path)) == catalog


def test_missing_catalog_file(tmp_path):
    with pytest.raises(ConfigError, match=r"action catalog .*nowhere\.yaml does not exist"):
        load_catalog(tmp_path / "nowhere.yaml")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "actions.yaml"
    path.write_text("risk_bands: {medium: 0.1\nactions: [\n")
    with pytest.raises(ConfigError, match=r"action catalog .*actions\.yaml is not valid YAML"):
        load_catalog(path)


def test_empty_catalog_file(tmp_path):
    path = tmp_path / "actions.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match=r"action catalog .*actions\.yaml: .*valid dictionary"):
        load_catalog(path)


def test_duplicate_action_names(tmp_path):
    path = _write_yaml(tmp_path, _catalog_dict(_action("call"), _action("sms"), _action("call")))
    with pytest.raises(ConfigError, match=r"action names must be unique; repeated: \['call'\]"):
        load_catalog(path)


def test_reserved_action_name(tmp_path):
    path = _write_yaml(tmp_path, _catalog_dict(_action("none")))
    with pytest.raises(ConfigError, match=r"actions\.0\.name: .*'none' is reserved for 'no action'"):
        load_catalog(path)


@pytest.mark.parametrize(("medium", "high"), [(0.3, 0.2), (0.2, 0.2)])
def test_medium_band_must_be_below_high(tmp_path, medium, high):
    path = _write_yaml(tmp_path, _catalog_dict(_action("call"), medium=medium, high=high))
    with pytest.raises(
        ConfigError, match=rf"risk_bands\.medium \({medium}\) must be below risk_bands\.high \({high}\)"
    ):
        load_catalog(path)


def test_negative_cost(tmp_path):
    path = _write_yaml(tmp_path, _catalog_dict(_action("call"), _action("sms", cost=-2.0)))
    with pytest.raises(ConfigError, match=r"actions\.1\.cost: Input should be greater than or equal to 0 \(got -2\.0\)"):
        load_catalog(path)


def test_unknown_segment(tmp_path):
    path = _write_yaml(tmp_path, _catalog_dict(_action("call", segments=["high", "vip"])))
    with pytest.raises(ConfigError, match=r"actions\.0\.segments\.1: Input should be 'low', 'medium' or 'high' \(got 'vip'\)"):
        load_catalog(path)


def test_every_problem_is_listed(tmp_path):
    path = _write_yaml(tmp_path, _catalog_dict(_action("call", cost=-1.0, risk_bands=["extreme"])))
    with pytest.raises(ConfigError, match=r"actions\.0\.cost: .*; actions\.0\.risk_bands\.0: "):
        load_catalog(path)


def test_unknown_condition_operator(tmp_path):
    action = _action("call", when=[{"feature": "complaints_28d", "op": "~=", "value": 1}])
    path = _write_yaml(tmp_path, _catalog_dict(action))
    with pytest.raises(ConfigError, match=r"actions\.0\.when\.0\.op: Input should be"):
        load_catalog(path)


# --- segments and risk bands --------------------------------------------------------------


def test_segment_of_uses_edges_with_edges_in_the_upper_segment():
    clv = np.array([0.0, 99.99, 100.0, 250.0, 500.0, 10_000.0])
    assert segment_of(clv, [100.0, 500.0]).tolist() == ["low", "low", "medium", "medium", "high", "high"]


def test_risk_band_of_is_at_or_above_threshold():
    bands = RiskBands(medium=0.05, high=0.2)
    p = np.array([0.0, 0.049, 0.05, 0.1999, 0.2, 1.0])
    assert risk_band_of(p, bands).tolist() == ["low", "low", "medium", "medium", "high", "high"]


# --- decide --------------------------------------------------------------------------------

# cost, effect and the expected values below are picked so that the arithmetic is exact in binary
CATALOG = ActionCatalog.model_validate(
    _catalog_dict(
        _action("call", channel="phone", cost=10.0, effect=0.5, segments=["high"], risk_bands=["medium", "high"]),
        _action(
            "email",
            channel="email",
            cost=1.0,
            effect=0.125,
            risk_bands=["high"],
            when=[{"feature": "complaints_28d", "op": ">=", "value": 1}],
        ),
        _action("sms", channel="sms", cost=2.0, effect=0.25, segments=["medium", "high"], risk_bands=["medium", "high"]),
    )
)


def _scored(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["customer_id", "churn_probability", "clv", "segment", "risk_band", "complaints_28d"]
    )


def test_decide_chooses_the_best_eligible_action_by_expected_value():
    scored = _scored(
        [
            # call: .5*.5*200-10 = 40; sms: .5*.25*200-2 = 23; email not eligible (no complaint)
            (1, 0.5, 200.0, "high", "high", 0),
            # call not eligible (segment); email: .5*.125*200-1 = 11.5; sms: 23
            (2, 0.5, 200.0, "medium", "high", 2),
            # low risk: nothing applies
            (3, 0.05, 50.0, "low", "low", 3),
            # sms only: .25*.25*16-2 = -1 (not worth its cost)
            (4, 0.25, 16.0, "medium", "medium", 0),
            # email only (low segment): .5*.125*64-1 = 3
            (5, 0.5, 64.0, "low", "high", 1),
            # email only: .5*.125*16-1 = 0 exactly, which is no gain
            (6, 0.5, 16.0, "low", "high", 1),
        ]
    )
    decisions = decide(scored, CATALOG)
    assert list(decisions.columns) == ["customer_id", "action", "channel", "cost", "expected_value", "reason"]
    assert decisions["customer_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert decisions["action"].tolist() == ["call", "sms", NO_ACTION, NO_ACTION, "email", NO_ACTION]
    assert decisions["channel"].tolist() == ["phone", "sms", "", "", "email", ""]
    assert decisions["cost"].tolist() == [10.0, 2.0, 0.0, 0.0, 1.0, 0.0]
    assert decisions["expected_value"].tolist() == [40.0, 23.0, 0.0, 0.0, 3.0, 0.0]


def test_decide_reasons_name_the_risk_value_and_gain():
    scored = _scored([(1, 0.5, 200.0, "high", "high", 0), (4, 0.25, 16.0, "medium", "medium", 0)])
    reasons = decide(scored, CATALOG)["reason"].tolist()
    assert reasons[0] == "reason of call: churn risk 50% (high), 12-month value 200 (high), expected gain 40.00"
    assert reasons[1] == (
        "no eligible action is worth its cost: churn risk 25% (medium), 12-month value 16 (medium)"
    )


def test_decide_uses_the_given_segment_and_band_not_recomputed_ones():
    # the same scores, but the customer is in the low segment: 'call' (high only) and 'sms' are out
    scored = _scored([(1, 0.5, 200.0, "low", "high", 0)])
    assert decide(scored, CATALOG)["action"].tolist() == [NO_ACTION]


def test_all_conditions_of_an_action_must_hold():
    catalog = ActionCatalog.model_validate(
        _catalog_dict(
            _action(
                "rescue",
                cost=1.0,
                effect=0.5,
                when=[
                    {"feature": "payment_failures_28d", "op": ">=", "value": 1},
                    {"feature": "tenure_days", "op": "<", "value": 90},
                ],
            )
        )
    )
    scored = pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 4],
            "churn_probability": 0.5,
            "clv": 100.0,
            "segment": "medium",
            "risk_band": "high",
            "payment_failures_28d": [1, 0, 2, 1],
            "tenure_days": [10, 10, 90, 89],
        }
    )
    decisions = decide(scored, catalog)
    assert decisions["action"].tolist() == ["rescue", NO_ACTION, NO_ACTION, "rescue"]
    assert decisions["expected_value"].tolist() == [24.0, 0.0, 0.0, 24.0]


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("<", [True, False, False]),
        ("<=", [True, True, False]),
        (">", [False, False, True]),
        (">=", [False, True, True]),
        ("==", [False, True, False]),
    ],
)
def test_condition_operators(op, expected):
    catalog = ActionCatalog.model_validate(
        _catalog_dict(_action("a", cost=0.0, effect=0.5, when=[{"feature": "x", "op": op, "value": 2}]))
    )
    scored = pd.DataFrame(
        {"customer_id": [1, 2, 3], "churn_probability": 0.5, "clv": 10.0, "segment": "low", "risk_band": "low", "x": [1, 2, 3]}
    )
    assert (decide(scored, catalog)["action"] == "a").tolist() == expected


def test_harmful_action_is_never_chosen_even_when_free():
    catalog = ActionCatalog.model_validate(_catalog_dict(_action("annoy", cost=0.0, effect=-0.2)))
    scored = _scored([(1, 0.9, 1000.0, "high", "high", 0)])
    decisions = decide(scored, catalog)
    assert decisions["action"].tolist() == [NO_ACTION]
    assert decisions["expected_value"].tolist() == [0.0]


def test_an_action_whose_feature_is_missing_is_eligible_for_no_one():
    # customer 2 has a complaint; without the feature, 'email' cannot be told and is never chosen
    scored = _scored([(1, 0.5, 200.0, "high", "high", 0), (2, 0.5, 200.0, "low", "high", 2)])
    assert decide(scored, CATALOG)["action"].tolist() == ["call", "email"]
    without = scored.drop(columns="complaints_28d")
    assert decide(without, CATALOG)["action"].tolist() == ["call", NO_ACTION]
    assert eligibility(without, CATALOG)[:, 1].tolist() == [False, False]
    assert CATALOG.unusable(set(without.columns)) == {"email": ["complaints_28d"]}
    assert CATALOG.unusable(set(scored.columns)) == {}


def test_decide_on_no_customers_returns_an_empty_frame():
    decisions = decide(_scored([]), CATALOG)
    assert len(decisions) == 0
    assert list(decisions.columns) == ["customer_id", "action", "channel", "cost", "expected_value", "reason"]


def test_packaged_catalog_decisions():
    """The shipped catalog on two customers, expected values by hand."""
    catalog = load_catalog()
    scored = pd.DataFrame(
        {
            "customer_id": [7, 8],
            "churn_probability": [0.5, 0.01],
            "clv": [400.0, 100.0],
            "segment": ["high", "low"],
            "risk_band": ["high", "low"],
            "tenure_days": [400, 400],
            "activity_trend_7d_28d": [1.0, 1.0],
            "complaints_28d": [0, 1],
            "payment_failures_28d": [0, 0],
        }
    )
    decisions = decide(scored, catalog)
    # 7: advisor_call .5*.3*400-25 = 35 beats discount_offer .5*.15*400-8 = 22
    # 8: service_recovery .01*.25*100-5 = -4.75: not worth it
    assert decisions["action"].tolist() == ["advisor_call", NO_ACTION]
    assert decisions["expected_value"].to_numpy() == pytest.approx([35.0, 0.0])


# --- budget, capacity, lifecycle and cooldown fields ---------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"budget": -1}, r"budget: Input should be greater than or equal to 0 \(got -1\)"),
        ({"cooldown_days": -3}, r"cooldown_days: Input should be greater than or equal to 0 \(got -3\)"),
        ({"holdout_share": 0.8}, r"holdout_share: Input should be less than or equal to 0.5 \(got 0.8\)"),
        ({"explore_share": -0.1}, r"explore_share: Input should be greater than or equal to 0 \(got -0.1\)"),
        ({"lifecycle": {"established": 0}}, r"lifecycle.established: Input should be greater than 0 \(got 0\)"),
        ({"lifecycle": {"lapsing_days": -1}}, r"lifecycle.lapsing_days: Input should be greater than 0 \(got -1\)"),
    ],
)
def test_catalog_limits_are_validated(tmp_path, overrides, message):
    path = _write_yaml(tmp_path, {**_catalog_dict(_action("a")), **overrides})
    with pytest.raises(ConfigError, match=message):
        load_catalog(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"capacity": -5}, r"actions.0.capacity: Input should be greater than or equal to 0 \(got -5\)"),
        ({"cooldown_days": 1.5}, r"actions.0.cooldown_days: Input should be a valid integer"),
        (
            {"lifecycle_stages": ["teen"]},
            r"actions.0.lifecycle_stages.0: Input should be 'new', 'lapsing', 'at_risk' or 'established'",
        ),
        ({"lifecycle_stages": []}, r"actions.0.lifecycle_stages: List should have at least 1 item"),
    ],
)
def test_action_limits_are_validated(tmp_path, overrides, message):
    path = _write_yaml(tmp_path, _catalog_dict(_action("a", **overrides)))
    with pytest.raises(ConfigError, match=message):
        load_catalog(path)


def test_packaged_catalog_has_limits():
    catalog = load_catalog()
    assert catalog.budget is not None and catalog.budget > 0
    assert catalog.cooldown_days > 0
    assert 0 < catalog.holdout_share <= 0.5
    assert {a.name: a.capacity for a in catalog.actions}["advisor_call"] == 200


def test_cooldowns_block_any_action_then_the_same_action_longer():
    from datetime import datetime, timezone

    from serving.policy import cooldown_blocks

    catalog = ActionCatalog.model_validate(
        {
            **_catalog_dict(_action("call", cooldown_days=90), _action("mail")),
            "cooldown_days": 28,
        }
    )
    now = datetime(2025, 6, 1, tzinfo=timezone.utc)
    recent = pd.DataFrame(
        {
            "customer_id": [1, 2, 3],
            "action": ["call", "call", "mail"],
            "decided_at": pd.to_datetime([now - pd.Timedelta(days=7), now - pd.Timedelta(days=60), now - pd.Timedelta(days=30)]),
        }
    )
    blocked = cooldown_blocks(np.array([1, 2, 3, 4]), recent, catalog, now)
    # 1: called a week ago, within 28 days: nothing; 2: called 60 days ago: no call yet, mail is fine;
    # 3: mailed 30 days ago: free again; 4: never contacted
    assert blocked.tolist() == [[True, True], [True, False], [False, False], [False, False]]


# --- lifecycle stages ----------------------------------------------------------------------


def test_lifecycle_stages_in_order_of_precedence():
    scored = pd.DataFrame(
        {
            # new beats lapsing and at risk; lapsing beats at risk; at risk; established; edges
            "tenure_days": [10, 400, 400, 400, 90, 89, 400, np.nan],
            "days_since_last_active": [60, 45, 3, 3, 29, 0, 30, 0],
            "activity_trend_7d_28d": [0.1, 0.1, 0.5, 1.2, 0.8, 1.0, 1.0, 1.0],
        }
    )
    stages = lifecycle_stage_of(scored, LifecycleEdges())
    assert stages.tolist() == [
        "new", "lapsing", "at_risk", "established", "established", "new", "lapsing", "established",
    ]


def test_lifecycle_edges_come_from_the_catalog():
    scored = pd.DataFrame({"tenure_days": [100], "days_since_last_active": [10], "activity_trend_7d_28d": [0.9]})
    assert lifecycle_stage_of(scored, LifecycleEdges(established=120)).tolist() == ["new"]
    assert lifecycle_stage_of(scored, LifecycleEdges(lapsing_days=10)).tolist() == ["lapsing"]
    assert lifecycle_stage_of(scored, LifecycleEdges(at_risk_trend=1.0)).tolist() == ["at_risk"]


def test_a_stage_whose_input_is_missing_is_never_assigned():
    edges = LifecycleEdges()
    # a snapshot: tenure only, so new or established
    assert lifecycle_stage_of(pd.DataFrame({"tenure_days": [10, 400]}), edges).tolist() == ["new", "established"]
    # logs with no tenure: lapsing, at risk or established, never new
    logs = pd.DataFrame({"days_since_last_active": [40, 2, 2], "activity_trend_7d_28d": [1.0, 0.3, 1.0]})
    assert lifecycle_stage_of(logs, edges).tolist() == ["lapsing", "at_risk", "established"]
    # the simulator's name of recency is read too
    simulator = pd.DataFrame({"tenure_days": [400], "days_since_last_activity": [40]})
    assert lifecycle_stage_of(simulator, edges).tolist() == ["lapsing"]
    assert lifecycle_stage_of(pd.DataFrame({"x": [1]}), edges) is None


def _customers(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {"customer_id": range(n), "churn_probability": 0.5, "clv": 10.0, "segment": "low", "risk_band": "low"}
    return pd.DataFrame({**base, **columns})


def _stage_catalog() -> ActionCatalog:
    return ActionCatalog.model_validate(
        _catalog_dict(
            _action("welcome", cost=0.0, effect=0.5, lifecycle_stages=["new"]),
            _action("winback", cost=0.0, effect=0.4, lifecycle_stages=["lapsing"]),
            _action("nudge", cost=0.0, effect=0.3, lifecycle_stages=["at_risk"]),
            _action("thanks", cost=0.0, effect=0.2, lifecycle_stages=["established"]),
        )
    )


def test_stage_bound_actions_follow_the_stages():
    scored = _customers(
        tenure_days=[10, 400, 400, 400], days_since_last_active=[0, 40, 0, 0], activity_trend_7d_28d=[1.0, 1.0, 0.5, 1.0]
    )
    assert decide(scored, _stage_catalog())["action"].tolist() == ["welcome", "winback", "nudge", "thanks"]


def test_stage_bound_actions_without_their_inputs_are_unusable():
    catalog = _stage_catalog()
    # a snapshot with tenure: lapsing and at-risk actions can never apply
    assert catalog.unusable({"tenure_days", "contract"}) == {
        "winback": ["days_since_last_active"],
        "nudge": ["activity_trend_7d_28d"],
    }
    # no stage input at all: every stage-bound action
    assert catalog.unusable({"contract"}) == {
        "welcome": ["tenure_days"],
        "winback": ["days_since_last_active"],
        "nudge": ["activity_trend_7d_28d"],
        "thanks": ["tenure_days", "days_since_last_active", "activity_trend_7d_28d"],
    }
    assert decide(_customers(x=[1.0]), catalog)["action"].tolist() == [NO_ACTION]
    # either name of recency serves
    assert "winback" not in catalog.unusable({"tenure_days", "days_since_last_activity"})
    assert catalog.conditions_features({"tenure_days", "days_since_last_activity", "x"}) == {
        "tenure_days", "days_since_last_activity",
    }


def test_an_old_catalog_with_loyal_still_loads(tmp_path):
    old = {
        **_catalog_dict(_action("perk", lifecycle_stages=["established", "loyal"]), _action("vip", lifecycle_stages=["loyal"])),
        "lifecycle": {"established": 90, "loyal": 365},
    }
    catalog = load_catalog(_write_yaml(tmp_path, old))
    assert catalog.lifecycle.established == 90
    assert [a.lifecycle_stages for a in catalog.actions] == [["established"], ["established"]]


# --- conditions on declared columns ----------------------------------------------------------


def _one_condition(feature: str, op: str, value) -> ActionCatalog:
    return ActionCatalog.model_validate(
        _catalog_dict(_action("a", cost=0.0, effect=0.5, when=[{"feature": feature, "op": op, "value": value}]))
    )


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("==", "Month-to-month", [True, False, False, False]),
        ("!=", "Month-to-month", [False, True, True, False]),
        ("in", ["One year", "Two year"], [False, True, True, False]),
        ("in", ["Month-to-month"], [True, False, False, False]),
    ],
)
def test_string_conditions_on_a_categorical_column(op, value, expected):
    scored = _customers(contract=pd.array(["Month-to-month", "One year", "Two year", None], dtype="string"))
    assert (decide(scored, _one_condition("contract", op, value))["action"] == "a").tolist() == expected


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [("!=", 2, [True, False, True, False]), ("in", [1, 3], [True, False, True, False])],
)
def test_not_equal_and_in_on_numbers(op, value, expected):
    scored = _customers(x=[1.0, 2.0, 3.0, np.nan])  # a missing value satisfies no condition
    assert (decide(scored, _one_condition("x", op, value))["action"] == "a").tolist() == expected


def test_a_numeric_comparison_on_a_categorical_feature_is_a_data_error():
    scored = _customers(contract=["Month-to-month", "One year"])
    with pytest.raises(DataError, match=r"action 'a': condition contract >= 1\.0 compares numbers, .*feature 'contract' is categorical"):
        decide(scored, _one_condition("contract", ">=", 1))


def test_a_string_compared_with_a_numeric_feature_is_a_data_error():
    scored = _customers(tenure_days=[10, 400])
    with pytest.raises(DataError, match=r"action 'a': condition tenure_days == '10' compares text, .*is numeric"):
        decide(scored, _one_condition("tenure_days", "==", "10"))


@pytest.mark.parametrize(
    ("op", "value", "message"),
    [
        ("<", "Month-to-month", r"op '<' compares numbers; got the string 'Month-to-month'"),
        ("in", "Month-to-month", r"op 'in' needs a list value"),
        ("==", ["a", "b"], r"a list value needs op 'in'"),
    ],
)
def test_condition_values_must_fit_the_op(tmp_path, op, value, message):
    action = _action("a", when=[{"feature": "contract", "op": op, "value": value}])
    with pytest.raises(ConfigError, match=rf"actions\.0\.when\.0: .*condition on 'contract': {message}"):
        load_catalog(_write_yaml(tmp_path, _catalog_dict(action)))
