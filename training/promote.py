"""Gated promotion: a retrained model replaces the one in production only if it is not worse.

`churn train` registers new versions under the MLflow alias `challenger`. `promote` scores the
challenger and the champion on the same held-out data: the challenger's test cutoff (the latest
fully labelled one), which neither model was fitted or calibrated on (checked from each
model's recorded cutoffs). It compares them on `settings.promotion.metric` and moves the
`champion` alias only if the challenger is within `settings.promotion.tolerance` of the
champion or better; otherwise it says why and leaves the champion alone.

The churn model is the one judged; the CLV model trained in the same run moves with it, so
serving always pairs models from one run. Every attempt, accepted or refused, is recorded as a
run of the MLflow experiment `churn-engine-promotions` (who, what, when, both models' metrics,
the decision and why); `history` reads them back.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from datetime import datetime

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from churn.errors import ChurnError, ModelNotFoundError
from churn import clock
from churn.settings import Settings
from training.backtest import fold_metrics
from training.calibration import apply_map
from training.dataset import label_frame, to_matrix, training_set
from training.registry import CHALLENGER, CHAMPION, RegisteredModel, connect, has_alias, load_alias

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


def _churn_probability(model: RegisteredModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated, raw) churn probabilities of a registered churn model."""
    if "calibration" not in model.extra:
        raise PromotionError(f"model {model.label} has no probability calibration in its spec; retrain it with `churn train`")
    raw = model.booster.predict(to_matrix(frame, model.feature_names, model.categories))
    return apply_map(model.extra["calibration"], raw), raw


def _held_out_everywhere(champion: RegisteredModel, cutoff: str) -> None:
    """Refuse a comparison on data the champion was fitted or calibrated on: it would favour the champion."""
    seen = [*champion.extra.get("fit_cutoffs", []), champion.extra.get("calibration_cutoff")]
    if None in seen:
        raise PromotionError(f"champion {champion.label} does not record its training cutoffs; cannot compare fairly")
    if max(seen) >= cutoff:
        raise PromotionError(
            f"champion {champion.label} was fitted or calibrated on cutoffs up to {max(seen)}, not before the "
            f"challenger's test cutoff {cutoff}; a fair comparison needs data neither model saw"
        )


def _evaluate(settings: Settings, models: list[RegisteredModel], clv: RegisteredModel, cutoff: str) -> list[dict[str, float]]:
    """Metrics of each churn model on the customers active at `cutoff`, with their observed labels."""
    cfg = settings.training
    stamp = pd.Timestamp(cutoff, tz="UTC").to_pydatetime()
    labels = label_frame(settings.raw_dir, [stamp], cfg.horizon_days, cfg.clv_horizon_days)
    frames: dict[str, pd.DataFrame] = {}
    for service in {m.feature_service for m in [*models, clv]}:
        frames[service] = training_set(settings, labels[["customer_id", "event_timestamp", "churned"]], service)
    clv_frame = frames[clv.feature_service]
    predicted_clv = pd.Series(
        np.maximum(clv.booster.predict(to_matrix(clv_frame, clv.feature_names, clv.categories)), 0.0),
        index=clv_frame["customer_id"].to_numpy(),
    )
    out = []
    for model in models:
        frame = frames[model.feature_service]
        probability, raw = _churn_probability(model, frame)
        values = predicted_clv.loc[frame["customer_id"].to_numpy()].to_numpy()
        out.append(
            fold_metrics(frame["churned"].to_numpy(), probability, raw, values, settings.profit, cfg.calibration_bins)
        )
    return out


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


def _paired_clv_version(client: MlflowClient, settings: Settings, churn_run_id: str) -> str:
    """The CLV challenger version trained in the same run as the churn challenger."""
    name = settings.training.clv_model_name
    try:
        version = client.get_model_version_by_alias(name, CHALLENGER)
    except mlflow.exceptions.MlflowException as exc:
        raise PromotionError(f"no '{CHALLENGER}' version of {name!r} to pair with the churn challenger") from exc
    if version.run_id != churn_run_id:
        raise PromotionError(
            f"the '{CHALLENGER}' versions of the churn and CLV models come from different runs "
            f"({churn_run_id} and {version.run_id}); retrain with `churn train`"
        )
    return str(version.version)


def promote(settings: Settings, who: str | None = None) -> PromotionDecision:
    """Compare the challenger with the champion and move `champion` if the challenger is not worse.

    With no champion yet, the challenger becomes champion without comparison (recorded as such).
    After `churn ingest`, the ingested data set's model goes through the same gate
    (`training/contract_promote.py`).
    """
    if settings.uses_ingested_data:
        from training.contract_promote import promote_contract

        return promote_contract(settings, who)
    cfg = settings.training
    client = connect(settings)
    challenger = load_alias(settings, cfg.churn_model_name, CHALLENGER)
    clv_version = _paired_clv_version(client, settings, challenger.run_id)
    who = who or getpass.getuser()
    metric = settings.promotion.metric
    if not has_alias(client, cfg.churn_model_name, CHAMPION):
        decision = PromotionDecision(
            promoted=True, reason="promoted: no champion yet, so the first model becomes champion without comparison",
            metric=metric, challenger=challenger.label, champion=None, evaluated_on=None, who=who,
            decided_at=clock.now(settings),
        )
    else:
        champion = load_alias(settings, cfg.churn_model_name, CHAMPION)
        if champion.version == challenger.version:
            raise PromotionError(f"{challenger.label} is already the champion")
        cutoff = challenger.extra["test_cutoff"]
        _held_out_everywhere(champion, cutoff)
        clv = load_alias(settings, cfg.clv_model_name, CHALLENGER)
        new, old = _evaluate(settings, [challenger, champion], clv, cutoff)
        ok, reason = _judge(settings, new, old)
        decision = PromotionDecision(
            promoted=ok, reason=reason, metric=metric, challenger=challenger.label, champion=champion.label,
            evaluated_on=cutoff, who=who, decided_at=clock.now(settings),
            challenger_metrics=new, champion_metrics=old,
        )
    if decision.promoted:
        for name, version in ((cfg.churn_model_name, challenger.version), (cfg.clv_model_name, clv_version)):
            client.set_registered_model_alias(name, CHAMPION, version)
            client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(cfg.churn_model_name, challenger.version, "promotion", decision.reason)
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
