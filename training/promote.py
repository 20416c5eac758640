"""Gated promotion: a retrained model replaces the one in production only if it is not worse.

`churn train` registers the new version of `<data set>-churn` (and of `<data set>-clv`, when
the value is a model) under the MLflow alias `challenger`; `churn promote` moves `champion` of
both to them only if the challenger is within `settings.promotion.tolerance` of the champion
on `settings.promotion.metric`, or better; otherwise it says why and leaves the champion
alone. The value model trained in the same run moves with the churn model, so serving always
pairs models from one run. The very first model of a data set (no champion yet) becomes
champion at once, recorded as such. Every attempt, accepted or refused, is recorded as a run of
the MLflow experiment `churn-engine-promotions` (who, what, when, both models' metrics, the
decision and why); `history` reads them back.

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
from dataclasses import dataclass, field
from datetime import datetime

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from churn import clock
from churn.errors import ChurnError, ModelNotFoundError
from churn.settings import Settings
from features.contract import Contract
from features.ingest import read_manifest
from training.registry import CHALLENGER, CHAMPION, connect, has_alias

# Metrics the gate can compare (each version records their held-out means); `settings.promotion.metric` picks one.
HELD_OUT_METRICS = ("roc_auc", "pr_auc", "top_decile_lift", "brier", "ece", "empc")
FINGERPRINT_TAG = "evaluation_fingerprint"
PROMOTIONS_EXPERIMENT = "churn-engine-promotions"
# Metrics where a smaller value is better; every other metric is better when larger.
_LOWER_IS_BETTER = {"brier", "ece"}


class PromotionError(ChurnError):
    """The comparison cannot be made fairly (no challenger, mismatched runs, overlapping data)."""


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of one promotion attempt."""

    promoted: bool
    reason: str
    metric: str
    challenger: str
    champion: str | None
    evaluated_on: str | None
    who: str
    decided_at: datetime
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)




def churn_model_name(contract_name: str) -> str:
    """Registered name of a data set's churn model (`telco` -> `telco-churn`)."""
    return f"{contract_name.replace('_', '-')}-churn"


def clv_model_name(contract_name: str) -> str:
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


def _judge(settings: Settings, challenger: dict[str, float], champion: dict[str, float]) -> tuple[bool, str]:
    rule = settings.promotion
    new, old = challenger[rule.metric], champion[rule.metric]
    if rule.metric in _LOWER_IS_BETTER:
        ok, bound, sign = new <= old + rule.tolerance, old + rule.tolerance, "<="
    else:
        ok, bound, sign = new >= old - rule.tolerance, old - rule.tolerance, ">="
    verdict = "promoted" if ok else "refused"
    return ok, (
        f"{verdict}: challenger {rule.metric} {new:.4f} vs champion {old:.4f}; the rule is challenger {sign} "
        f"champion {'+' if sign == '<=' else '-'} tolerance {rule.tolerance} = {bound:.4f}"
    )


def _version(client: MlflowClient, name: str, alias: str, settings: Settings):
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        raise PromotionError(f"no '{alias}' version of {name!r} in {settings.resolved_tracking_uri}; run `churn train`") from exc


def promote(settings: Settings, who: str | None = None) -> PromotionDecision:
    """Gate the challenger of the data set's churn model (see the module docstring)."""
    contract = Contract.model_validate(read_manifest(settings.ingested_dir)["contract"])
    name = churn_model_name(contract.name)
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
        for model_name in (name, clv_model_name(contract.name)):
            if has_alias(client, model_name, CHALLENGER):
                version = client.get_model_version_by_alias(model_name, CHALLENGER).version
                client.set_registered_model_alias(model_name, CHAMPION, version)
                client.delete_registered_model_alias(model_name, CHALLENGER)
    client.set_model_version_tag(name, challenger.version, "promotion", decision.reason)
    _record(settings, client, decision)
    return decision


def _record(settings: Settings, client: MlflowClient, decision: PromotionDecision) -> None:
    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(PROMOTIONS_EXPERIMENT, artifact_location=settings.artifact_location)
    )
    run = client.create_run(
        experiment_id,
        run_name=f"promote-{decision.challenger.replace('/', '-v')}",
        tags={
            "decision": "promoted" if decision.promoted else "refused",
            "reason": decision.reason,
            "who": decision.who,
            "challenger": decision.challenger,
            "champion": decision.champion or "",
            "evaluated_on": decision.evaluated_on or "",
            "metric": decision.metric,
            "tolerance": str(settings.promotion.tolerance),
            "decided_at": decision.decided_at.isoformat(),
        },
    )
    for prefix, metrics in (("challenger", decision.challenger_metrics), ("champion", decision.champion_metrics)):
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, f"{prefix}_{key}", value)
    client.set_terminated(run.info.run_id)


def history(settings: Settings) -> pd.DataFrame:
    """Every promotion attempt, oldest first.

    Returns columns: decided_at, who, challenger, champion, decision, metric, challenger_value,
    champion_value, evaluated_on, reason.
    """
    client = connect(settings)
    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    if experiment is None:
        raise ModelNotFoundError(f"no promotion has been recorded in {settings.resolved_tracking_uri}; run `churn train`")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=10_000)
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        metric = tags.get("metric", "")
        rows.append(
            {
                "decided_at": tags.get("decided_at", ""),
                "who": tags.get("who", ""),
                "challenger": tags.get("challenger", ""),
                "champion": tags.get("champion", ""),
                "decision": tags.get("decision", ""),
                "metric": metric,
                "challenger_value": metrics.get(f"challenger_{metric}", float("nan")),
                "champion_value": metrics.get(f"champion_{metric}", float("nan")),
                "evaluated_on": tags.get("evaluated_on", ""),
                "reason": tags.get("reason", ""),
            }
        )
    return pd.DataFrame(rows).sort_values("decided_at", kind="stable").reset_index(drop=True)
