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
from training.promote import PromotionError, history, promote
from training.registry import CHALLENGER, CHAMPION, connect, has_alias
from training.train import train


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
    client.set_registered_model_alias("churn-risk", CHALLENGER, trained.churn_version)
    client.set_registered_model_alias("customer-clv", CHALLENGER, trained.clv_version)


def test_first_model_becomes_champion_without_comparison(governed):
    _, first, *_ = governed
    assert first.promotion.startswith("promoted: no champion yet")
    assert first.churn_metrics["roc_auc"] < 0.6  # shuffled labels: chance level


def test_better_model_is_promoted(governed):
    _, first, good, accepted, *_ = governed
    assert good.promotion.startswith("challenger")
    assert accepted.promoted
    assert accepted.challenger == f"churn-risk/{good.churn_version}"
    assert accepted.champion == f"churn-risk/{first.churn_version}"
    assert accepted.challenger_metrics["roc_auc"] > accepted.champion_metrics["roc_auc"] + 0.1


def test_shuffled_label_model_is_refused_and_champion_stays(governed):
    settings, _, good, _, bad, refused = governed
    assert not refused.promoted
    assert refused.reason.startswith("refused: challenger roc_auc")
    assert refused.challenger == f"churn-risk/{bad.churn_version}"
    client = connect(settings)
    assert str(client.get_model_version_by_alias("churn-risk", CHAMPION).version) == good.churn_version
    assert str(client.get_model_version_by_alias("customer-clv", CHAMPION).version) == good.clv_version
    assert has_alias(client, "churn-risk", CHALLENGER)  # the refused model stays visible as the challenger
    assert Scorer.load(settings).churn.version == good.churn_version


def test_history_lists_every_attempt(governed):
    settings, first, good, _, bad, _ = governed
    table = history(settings)
    assert table["decision"].tolist() == ["promoted", "promoted", "refused"]
    assert table["challenger"].tolist() == [f"churn-risk/{v}" for v in (first.churn_version, good.churn_version, bad.churn_version)]
    assert table["champion"].tolist() == ["", f"churn-risk/{first.churn_version}", f"churn-risk/{good.churn_version}"]
    assert table["who"].tolist()[1:] == ["test-accept", "test-refuse"]
    refused = table.iloc[2]
    assert refused["challenger_value"] < refused["champion_value"] - settings.promotion.tolerance
    assert refused["evaluated_on"] == table.iloc[1]["evaluated_on"] != ""


def test_each_version_names_its_feature_service(governed):
    settings, _, good, *_ = governed
    version = connect(settings).get_model_version("churn-risk", good.churn_version)
    assert version.tags["feature_service"] == settings.training.feature_service


def test_promoting_the_champion_again_is_refused(governed):
    settings, *_, bad, _ = governed
    client = connect(settings)
    champions = {name: client.get_model_version_by_alias(name, CHAMPION).version for name in ("churn-risk", "customer-clv")}
    for name, version in champions.items():
        client.set_registered_model_alias(name, CHALLENGER, version)
    try:
        with pytest.raises(PromotionError, match=f"churn-risk/{champions['churn-risk']} is already the champion"):
            promote(settings)
    finally:
        _challenge_with(settings, bad)
