"""Settings: defaults, TOML file, CHURN_* variables, validation and derived paths."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from churn.errors import ConfigError
from churn.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No CHURN_* variable from the caller's shell and no churn.toml from the caller's folder."""
    for name in list(os.environ):
        if name.upper().startswith("CHURN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_without_file_or_variables():
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.data_dir == Path("data")
    assert settings.mlruns_dir == Path("mlruns")
    assert settings.online_store == "sqlite"
    assert settings.simulation.n_customers == 20_000
    assert settings.simulation.start == date(2024, 11, 1)
    assert settings.training.horizon_days == 30
    assert settings.training.calibration_bins == 10


def test_nested_environment_variable_overrides_default(monkeypatch):
    monkeypatch.setenv("CHURN_SIMULATION__N_CUSTOMERS", "2000")
    monkeypatch.setenv("CHURN_TRAINING__HORIZON_DAYS", "14")
    monkeypatch.setenv("CHURN_ONLINE_STORE", "redis")
    settings = load_settings()
    assert settings.simulation.n_customers == 2000
    assert settings.training.horizon_days == 14
    assert settings.online_store == "redis"
    # fields not named keep their defaults
    assert settings.simulation.seed == 42
    assert settings.training.calibration_bins == 10


def test_churn_toml_in_working_directory_is_read(tmp_path):
    (tmp_path / "churn.toml").write_text(
        'data_dir = "elsewhere"\n\n[simulation]\nn_customers = 500\nseed = 9\n\n[training]\ncalibration_bins = 14\n'
    )
    settings = load_settings()
    assert settings.data_dir == Path("elsewhere")
    assert settings.simulation.n_customers == 500
    assert settings.simulation.seed == 9
    assert settings.training.calibration_bins == 14


def test_churn_config_names_the_file(monkeypatch, tmp_path):
    (tmp_path / "churn.toml").write_text("[simulation]\nn_customers = 500\n")
    other = tmp_path / "conf" / "other.toml"
    other.parent.mkdir()
    other.write_text("[simulation]\nn_customers = 700\n")
    monkeypatch.setenv("CHURN_CONFIG", str(other))
    assert load_settings().simulation.n_customers == 700


def test_priority_arguments_over_variables_over_file(monkeypatch, tmp_path):
    (tmp_path / "churn.toml").write_text("[simulation]\nn_customers = 500\nseed = 1\ndays = 500\n")
    monkeypatch.setenv("CHURN_SIMULATION__N_CUSTOMERS", "600")
    monkeypatch.setenv("CHURN_SIMULATION__SEED", "2")
    settings = load_settings(simulation={"n_customers": 800, "seed": 3, "days": 450})
    assert (settings.simulation.n_customers, settings.simulation.seed, settings.simulation.days) == (800, 3, 450)
    settings = load_settings()
    # variables beat the file; what the variables leave alone comes from the file
    assert (settings.simulation.n_customers, settings.simulation.seed, settings.simulation.days) == (600, 2, 500)


def test_n_customers_below_minimum_is_a_config_error_naming_the_field(monkeypatch):
    monkeypatch.setenv("CHURN_SIMULATION__N_CUSTOMERS", "50")
    with pytest.raises(ConfigError, match=r"simulation\.n_customers: Input should be greater than or equal to 100"):
        load_settings()


def test_a_key_a_section_does_not_know_is_refused_by_name():
    """A typo, or a key this version removed (the simulator-only cutoffs), is an error, not silently ignored."""
    with pytest.raises(ConfigError, match=r"training\.cutoff_spacing_days: Extra inputs are not permitted"):
        load_settings(training={"cutoff_spacing_days": 10})
    with pytest.raises(ConfigError, match=r"simulation\.n_customer: Extra inputs are not permitted"):
        load_settings(simulation={"n_customer": 10})


def test_promotion_metric_must_be_known():
    with pytest.raises(ConfigError, match=r"promotion\.metric: Input should be 'roc_auc'"):
        load_settings(promotion={"metric": "accuracy"})


def test_invalid_value_in_toml_names_the_file_and_field(monkeypatch, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[simulation]\ndays = 100\n")
    monkeypatch.setenv("CHURN_CONFIG", str(bad))
    with pytest.raises(ConfigError, match=rf"from {bad}.*simulation\.days: Input should be greater than or equal to 400"):
        load_settings()


def test_unknown_online_store_is_rejected():
    with pytest.raises(ConfigError, match=r"online_store: Input should be 'sqlite' or 'redis' \(got 'memcached'\)"):
        load_settings(online_store="memcached")


def test_unknown_setting_is_rejected(tmp_path):
    (tmp_path / "churn.toml").write_text('data_dri = "typo"\n')
    with pytest.raises(ConfigError, match=r"data_dri: Extra inputs are not permitted"):
        load_settings()


def test_derived_paths_follow_data_dir(tmp_path):
    settings = load_settings(data_dir=tmp_path / "d", mlruns_dir=tmp_path / "m")
    assert settings.raw_dir == tmp_path / "d" / "raw"
    assert settings.truth_dir == tmp_path / "d" / "truth"
    assert settings.feature_repo_dir == tmp_path / "d" / "feast"
    assert settings.feature_tables_dir == tmp_path / "d" / "feast" / "tables"
    assert settings.outputs_dir == tmp_path / "d" / "outputs"
    assert settings.resolved_tracking_uri == f"sqlite:///{tmp_path / 'm' / 'mlflow.db'}"
    assert settings.resolved_ledger_url == f"sqlite:///{tmp_path / 'd' / 'ledger.db'}"
    assert settings.artifact_location == (tmp_path / "m" / "artifacts").as_uri()


def test_relative_default_paths_resolve_against_working_directory(tmp_path):
    settings = load_settings()
    assert settings.resolved_tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"
    assert settings.resolved_ledger_url == f"sqlite:///{tmp_path.resolve() / 'data' / 'ledger.db'}"


def test_explicit_urls_win_over_derived_ones():
    settings = load_settings(tracking_uri="http://mlflow:5000", ledger_url="postgresql+psycopg://u@h/db")
    assert settings.resolved_tracking_uri == "http://mlflow:5000"
    assert settings.resolved_ledger_url == "postgresql+psycopg://u@h/db"


def test_loading_settings_creates_nothing_and_ensure_dirs_does(tmp_path):
    settings = load_settings(data_dir=tmp_path / "d", mlruns_dir=tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    settings.ensure_dirs()
    for path in (settings.raw_dir, settings.truth_dir, settings.feature_tables_dir, settings.outputs_dir, tmp_path / "m"):
        assert path.is_dir()


@pytest.mark.parametrize("value", ['["unit-test-key-0123456789",', "unit-test-key-0123456789", "['unit-test-key-0123456789']"])
def test_a_malformed_api_key_list_is_one_line_naming_the_variable_not_the_value(monkeypatch, value):
    monkeypatch.setenv("CHURN_SERVING__API_KEYS", value)
    with pytest.raises(ConfigError, match=r"^invalid settings: CHURN_SERVING__API_KEYS is not valid JSON \(Expecting") as info:
        load_settings()
    assert "\n" not in str(info.value)
    assert "unit-test-key" not in str(info.value)


def test_the_default_body_limit_takes_the_largest_valid_request():
    """1,000 outcomes (the documented maximum) at their largest valid size, compact and indented."""
    import json

    from serving.service import MAX_IDS, Outcome

    longest_campaign = Outcome.model_json_schema()["properties"]["campaign"]["maxLength"]
    outcome = {
        "campaign": "c" * longest_campaign, "customer_id": 2**63 - 1, "churned": False,
        "revenue": 1.7976931348623157e308, "horizon_end": "2026-12-01T00:00:00.000000+00:00",
    }
    Outcome.model_validate_json(json.dumps(outcome))  # valid, as the service reads it: a body it must accept
    limit = load_settings().serving.max_body_bytes
    for indent in (None, 2):
        assert len(json.dumps({"outcomes": [outcome] * MAX_IDS}, indent=indent).encode()) <= limit


def test_an_ingested_data_sets_catalog_is_the_default_one(tmp_path):
    ingested = tmp_path / "d" / "ingested"
    ingested.mkdir(parents=True)
    (ingested / "manifest.json").write_text("{}")
    assert load_settings(data_dir=tmp_path / "d").actions_path is None  # no catalog kept: the packaged one
    (ingested / "actions.yaml").write_text("actions: []\n")
    assert load_settings(data_dir=tmp_path / "d").actions_path == ingested / "actions.yaml"
    chosen = tmp_path / "mine.yaml"
    assert load_settings(data_dir=tmp_path / "d", actions_path=chosen).actions_path == chosen  # the user's wins
    (ingested / "manifest.json").unlink()  # not (or no longer) ingested data
    assert load_settings(data_dir=tmp_path / "d").actions_path is None


def test_an_unknown_key_suggests_the_closest_known_one(tmp_path):
    with pytest.raises(ConfigError, match=r"simulation\.n_customer: Extra inputs are not permitted; did you mean `n_customers`\?"):
        load_settings(simulation={"n_customer": 10})
    (tmp_path / "churn.toml").write_text('data_dri = "typo"\n[profit]\noffer_cots = 5\n')  # the folder it runs in
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "data_dri: Extra inputs are not permitted; did you mean `data_dir`?" in str(caught.value)
    assert "profit.offer_cots: Extra inputs are not permitted; did you mean `offer_cost`?" in str(caught.value)
    # nothing close: the keys the section knows
    with pytest.raises(ConfigError, match=r"promotion\.zzz: Extra inputs are not permitted; the keys here are metric, tolerance"):
        load_settings(promotion={"zzz": 1})
