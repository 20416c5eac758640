"""Registry governance: a retrained model replaces the champion only if it is not worse.

On the engine's small population, with a registry of its own: the first model (trained on
shuffled labels, so no better than chance) becomes champion because there is none; a model
trained on the real labels then beats it and is promoted; the shuffled-label model, put up
again as the challenger (saving a third training run), is refused. The history lists every
attempt.
"""

from __future__ import annotations

import pytest

from serving.scoring import Scorer
from training.train import train
from training.promote import PromotionError, history, promote
from training.registry import CHALLENGER, CHAMPION, connect, has_alias

CHURN, CLV = "simulated-churn", "simulated-clv"  # the simulated data set's models


@pytest.fixture(scope="module")
def governed(engine, tmp_path_factory):
    settings = engine.settings.model_copy(update={"mlruns_dir": tmp_path_factory.mktemp("governed") / "mlruns"})
    first = train(settings, shuffle_labels=True)
    good = train(settings)
    accepted = promote(settings, who="test-accept")
    _challenge_with(settings, first)
    refused = promote(settings, who="test-refuse")
    return settings, first, good, accepted, first, refused


def _challenge_with(settings, trained) -> None:
    """Put the churn and CLV versions of one training run up as the challenger pair."""
    client = connect(settings)
    client.set_registered_model_alias(CHURN, CHALLENGER, trained.version)
    client.set_registered_model_alias(CLV, CHALLENGER, trained.clv_version)


def test_first_model_becomes_champion_without_comparison(governed):
    _, first, *_ = governed
    assert first.promotion.startswith("promoted: no champion yet")
    assert first.summary["roc_auc"][0] < 0.6  # shuffled labels: chance level on the true held-out labels


def test_better_model_is_promoted(governed):
    _, first, good, accepted, *_ = governed
    assert good.promotion.startswith("challenger")
    assert accepted.promoted
    assert accepted.challenger == f"{CHURN}/{good.version}"
    assert accepted.champion == f"{CHURN}/{first.version}"
    assert accepted.challenger_metrics["roc_auc"] > accepted.champion_metrics["roc_auc"] + 0.1


def test_shuffled_label_model_is_refused_and_champion_stays(governed):
    settings, _, good, _, bad, refused = governed
    assert not refused.promoted
    assert refused.reason.startswith("refused: challenger roc_auc")
    assert refused.challenger == f"{CHURN}/{bad.version}"
    client = connect(settings)
    assert str(client.get_model_version_by_alias(CHURN, CHAMPION).version) == good.version
    assert str(client.get_model_version_by_alias(CLV, CHAMPION).version) == good.clv_version
    assert has_alias(client, CHURN, CHALLENGER)  # the refused model stays visible as the challenger
    assert Scorer.load(settings).churn.version == good.version


def test_history_lists_every_attempt(governed):
    settings, first, good, _, bad, _ = governed
    table = history(settings)
    assert table["decision"].tolist() == ["promoted", "promoted", "refused"]
    assert table["challenger"].tolist() == [f"{CHURN}/{v}" for v in (first.version, good.version, bad.version)]
    assert table["champion"].tolist() == ["", f"{CHURN}/{first.version}", f"{CHURN}/{good.version}"]
    assert table["who"].tolist()[1:] == ["test-accept", "test-refuse"]
    refused = table.iloc[2]
    assert refused["challenger_value"] < refused["champion_value"] - settings.promotion.tolerance
    assert refused["evaluated_on"] == table.iloc[1]["evaluated_on"] != ""


def test_each_version_names_its_feature_service(governed):
    settings, _, good, *_ = governed
    version = connect(settings).get_model_version(CHURN, good.version)
    assert version.tags["feature_service"] == "simulated_churn_v1"


def test_promoting_the_champion_again_is_refused(governed):
    settings, *_, bad, _ = governed
    client = connect(settings)
    champions = {name: client.get_model_version_by_alias(name, CHAMPION).version for name in (CHURN, CLV)}
    for name, version in champions.items():
        client.set_registered_model_alias(name, CHALLENGER, version)
    try:
        with pytest.raises(PromotionError, match=f"{CHURN}/{champions[CHURN]} is already the champion"):
            promote(settings)
    finally:
        _challenge_with(settings, bad)
