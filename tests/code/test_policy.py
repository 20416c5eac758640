"""Business rules: catalog validation, segments, risk bands and the choice of action."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from churn.errors import ConfigError, DataError
from features.simulate import ACTIONS
from serving.policy import NO_ACTION, ActionCatalog, RiskBands, decide, load_catalog, risk_band_of, segment_of


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
    action = _action("call", when=[{"feature": "complaints_28d", "op": "!=", "value": 1}])
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


def test_missing_condition_feature_is_a_data_error():
    scored = _scored([(1, 0.5, 200.0, "high", "high", 0)]).drop(columns="complaints_28d")
    with pytest.raises(
        DataError, match=r"action catalog conditions need features \['complaints_28d'\], which the scores do not carry"
    ):
        decide(scored, CATALOG)


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
        ({"lifecycle": {"established": 400, "loyal": 365}}, r"lifecycle.established \(400\) must be below lifecycle.loyal \(365\)"),
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
        ({"lifecycle_stages": ["teen"]}, r"actions.0.lifecycle_stages.0: Input should be 'new', 'established' or 'loyal'"),
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
