"""The promotion gate for models trained on ingested data (`churn ingest` -> ... -> `churn train`).

Same rule and record as the simulator's gate (`training/promote.py`): `churn train` registers
the new version of `<data set>-churn` (and of `<data set>-clv`, when the value is a model) as
`challenger`; `churn promote` moves `champion` of both to them only if it is within `settings.promotion.tolerance` of the champion on
`settings.promotion.metric`, or better; every attempt is a run of `churn-engine-promotions`.
The very first model of a data set (no champion yet) becomes champion at once, recorded as
such, as on the simulator's path.

What is compared: the held-out evaluation `churn train` measured for each version, the mean
over the config's evaluation splits (outer stratified folds of a snapshot, rolling cutoffs of
logs). Neither model's fit saw its test rows, and both versions were measured by the same
splits on the same labelled rows, which the gate checks through a fingerprint of the
evaluation data (keys, true labels, split definitions). A data set registered after a new
ingest is evaluated on other rows: the gate refuses to compare those figures (it would judge
the data, not the models) and says so.
"""

from __future__ import annotations

import getpass
import hashlib
import json

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from churn import clock
from churn.settings import Settings
from features.contract import Contract
from features.ingest import read_manifest
from training.promote import PromotionDecision, PromotionError, _judge, _record
from training.registry import CHALLENGER, CHAMPION, connect, has_alias

# Metrics the gate compares (the evaluation measures more: calibration and campaign profit, in the run).
HELD_OUT_METRICS = ("roc_auc", "pr_auc", "top_decile_lift")
FINGERPRINT_TAG = "evaluation_fingerprint"


def contract_model_name(contract_name: str) -> str:
    """Registered name of a data set's churn model (`telco` -> `telco-churn`)."""
    return f"{contract_name.replace('_', '-')}-churn"


def contract_clv_name(contract_name: str) -> str:
    """Registered name of a data set's value model (`retail` -> `retail-clv`; value method `model` only)."""
    return f"{contract_name.replace('_', '-')}-clv"


def evaluation_fingerprint(frame: pd.DataFrame, splits: list[tuple[np.ndarray, np.ndarray]], split_names: list[str]) -> str:
    """Hash of the labelled rows and of the splits every model of this data set is evaluated on."""
    digest = hashlib.sha256()
    keys = frame[["customer_id", "event_timestamp", "churned"]]
    digest.update(pd.util.hash_pandas_object(keys, index=False).to_numpy().tobytes())
    digest.update(json.dumps(split_names).encode())
    for train_rows, test_rows in splits:
        digest.update(np.asarray(train_rows, dtype=np.int64).tobytes())
        digest.update(np.asarray(test_rows, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def held_out_tags(summary: dict[str, tuple[float, float]], fingerprint: str, split_names: list[str]) -> dict[str, str]:
    """Version tags the gate reads: each held-out metric's mean, and what it was measured on."""
    tags = {f"held_out_{k}": repr(summary[k][0]) for k in HELD_OUT_METRICS}
    tags[FINGERPRINT_TAG] = fingerprint
    tags["evaluated_on"] = "; ".join(split_names)
    return tags


def _metrics(version) -> dict[str, float]:
    missing = [k for k in HELD_OUT_METRICS if f"held_out_{k}" not in version.tags]
    if missing:
        raise PromotionError(
            f"{version.name}/{version.version} records no held-out {', '.join(missing)} "
            "(registered before the gate covered ingested data); retrain it with `churn train`"
        )
    return {k: float(version.tags[f"held_out_{k}"]) for k in HELD_OUT_METRICS}


def _version(client: MlflowClient, name: str, alias: str, settings: Settings):
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        raise PromotionError(f"no '{alias}' version of {name!r} in {settings.resolved_tracking_uri}; run `churn train`") from exc


def promote_contract(settings: Settings, who: str | None = None) -> PromotionDecision:
    """Gate the challenger of the ingested data set's churn model (see the module docstring)."""
    contract = Contract.model_validate(read_manifest(settings.ingested_dir)["contract"])
    name = contract_model_name(contract.name)
    metric = settings.promotion.metric
    if metric not in HELD_OUT_METRICS:
        raise PromotionError(
            f"settings.promotion.metric is {metric!r}, which the evaluation of ingested data does not measure "
            f"(it measures {', '.join(HELD_OUT_METRICS)}); set CHURN_PROMOTION__METRIC to one of those"
        )
    client = connect(settings)
    challenger = _version(client, name, CHALLENGER, settings)
    new = _metrics(challenger)
    who = who or getpass.getuser()
    label = f"{name}/{challenger.version}"
    if not has_alias(client, name, CHAMPION):
        decision = PromotionDecision(
            promoted=True, reason="promoted: no champion yet, so the first model becomes champion without comparison",
            metric=metric, challenger=label, champion=None, evaluated_on=None, who=who,
            decided_at=clock.now(settings), challenger_metrics=new,
        )
    else:
        champion = _version(client, name, CHAMPION, settings)
        if champion.version == challenger.version:
            raise PromotionError(f"{label} is already the champion")
        old = _metrics(champion)
        theirs, ours = champion.tags.get(FINGERPRINT_TAG), challenger.tags.get(FINGERPRINT_TAG)
        if theirs != ours:
            raise PromotionError(
                f"champion {name}/{champion.version} was evaluated on other data than challenger {label} "
                f"(evaluation fingerprints {theirs} and {ours}: the data set was re-ingested or its evaluation "
                "settings changed); their held-out figures are not comparable"
            )
        ok, reason = _judge(settings, new, old)
        decision = PromotionDecision(
            promoted=ok, reason=reason, metric=metric, challenger=label, champion=f"{name}/{champion.version}",
            evaluated_on=challenger.tags.get("evaluated_on"), who=who, decided_at=clock.now(settings),
            challenger_metrics=new, champion_metrics=old,
        )
    if decision.promoted:
        # the value model trained beside the churn model moves with it (segment edges live in both)
        for model_name in (name, contract_clv_name(contract.name)):
            if has_alias(client, model_name, CHALLENGER):
                version = client.get_model_version_by_alias(model_name, CHALLENGER).version
                client.set_registered_model_alias(model_name, CHAMPION, version)
                client.delete_registered_model_alias(model_name, CHALLENGER)
    client.set_model_version_tag(name, challenger.version, "promotion", decision.reason)
    _record(settings, client, decision)
    return decision
