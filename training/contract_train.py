"""`churn train` on ingested data: evaluate honestly, then train, log and register the churn model.

1. Evaluation on the config's splits (stratified folds for a snapshot, rolling cutoffs for
   logs; see `training/contract_eval.py`), with the same auto-tuned model that gets registered.
2. The model to register is fitted on the latest fully labelled cutoffs (or the whole
   snapshot) and logged to MLflow as a pyfunc holding its ensemble of LightGBM boosters,
   registered as `<data set>-churn` and aliased `challenger`, with its held-out evaluation
   as version tags. `churn promote` gates it (`training/contract_promote.py`); the first
   model of a data set becomes champion at once, as on the simulator's path.
"""

from __future__ import annotations

import json
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd

from churn.settings import Settings
from features.definitions import contract_service_name
from training.contract_eval import backtest, contract_data, engine_model, summarize
from training.dataset import fingerprint, to_matrix
from training.contract_promote import contract_model_name, evaluation_fingerprint, held_out_tags, promote_contract
from training.registry import CHALLENGER, CHAMPION, connect, experiment_id, has_alias
from training.tuning import AutoTunedModel


@dataclass(frozen=True)
class ContractTrainResult:
    """What `churn train` did on ingested data."""

    run_id: str
    model_name: str
    version: str
    split_names: list[str]
    per_split: list[dict[str, float]]
    summary: dict[str, tuple[float, float]]
    n_train_rows: int
    search: list[dict]
    promotion: str


class BoosterEnsemble(mlflow.pyfunc.PythonModel):
    """The registered form of an `AutoTunedModel`: boosters saved as text, probabilities averaged."""

    def load_context(self, context) -> None:
        self.spec = json.loads(Path(context.artifacts["spec"]).read_text())
        self.boosters = [lgb.Booster(model_file=context.artifacts[k]) for k in sorted(context.artifacts) if k.startswith("booster_")]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        matrix = to_matrix(model_input, self.spec["feature_names"], self.spec["categories"])
        return np.mean([b.predict(matrix) for b in self.boosters], axis=0)


def _log_model(model: AutoTunedModel, name: str, service: str) -> str:
    """Log the ensemble as a pyfunc and register it; returns the new version."""
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {}
        for i, booster in enumerate(model.boosters_):
            path = Path(tmp) / f"booster_{i}.txt"
            booster.save_model(str(path))
            artifacts[f"booster_{i}"] = str(path)
        spec = Path(tmp) / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "feature_service": service,
                    "feature_names": list(model.feature_names),
                    "categories": model.categories_,
                    "search": model.search_,
                }
            )
        )
        artifacts["spec"] = str(spec)
        info = mlflow.pyfunc.log_model(
            name=name, python_model=BoosterEnsemble(), artifacts=artifacts, registered_model_name=name
        )
    return str(info.registered_model_version)


def _shuffled(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """Churn labels permuted within each cutoff: same base rates, no signal (a deliberately useless model)."""
    rng = np.random.default_rng(seed)
    labels = frame["churned"].to_numpy().copy()
    for rows in frame.groupby("event_timestamp").indices.values():
        labels[rows] = rng.permutation(labels[rows])
    return labels


def train_contract(
    settings: Settings, step: Callable[[str], None] = lambda _: None, shuffle_labels: bool = False
) -> ContractTrainResult:
    """Evaluate, fit and register the churn model of the ingested data set (as challenger).

    `shuffle_labels` fits on labels permuted within each cutoff (evaluation still scores the
    true labels): a model no better than chance, to show (and test) that the gate refuses it.
    """
    step("labels and point-in-time training set (Feast)")
    data = contract_data(settings)
    contract = data.contract
    fit_labels = _shuffled(data.frame, contract.evaluation.seed) if shuffle_labels else None

    def make() -> AutoTunedModel:
        return engine_model(data)

    step(f"evaluate on {len(data.splits)} splits")
    per_split = backtest(data, {"engine": make}, fit_labels=fit_labels)["engine"]
    summary = summarize(per_split)

    step("fit the model to register")
    final = data.frame.iloc[data.final_rows]
    y = data.frame["churned"].to_numpy() if fit_labels is None else fit_labels
    model = make().fit(final, y[data.final_rows])

    step("log and register in MLflow")
    name = contract_model_name(contract.name)
    service = contract_service_name(contract.name)
    client = connect(settings)
    with mlflow.start_run(experiment_id=experiment_id(settings, client), run_name=f"train-{contract.name}") as run:
        mlflow.log_params(
            {
                "data_set": contract.name,
                "churn_definition": contract.churn.definition,
                "horizon_days": contract.churn.horizon_days,
                "splits": "; ".join(data.split_names),
                "train_rows": len(final),
                "shuffled_labels": shuffle_labels,
                "chosen": str([c["params"] for c in model.search_[: model.ensemble]])[:500],
            }
        )
        for k, (mean, sd) in summary.items():
            mlflow.log_metrics({f"eval_{k}_mean": mean, f"eval_{k}_sd": sd})
        mlflow.log_dict({"splits": data.split_names, "metrics": per_split, "search": model.search_}, "evaluation.json")
        mlflow.set_tags(
            {
                "feature_service.churn": service,
                "data_fingerprint.churn": fingerprint(final[["customer_id", "event_timestamp", "churned"]]),
                "lightgbm_version": lgb.__version__,
                "python_version": platform.python_version(),
            }
        )
        version = _log_model(model, name, service)
        tags = {"feature_service": service, "run_id": run.info.run_id}
        tags |= held_out_tags(summary, evaluation_fingerprint(data.frame, data.splits, data.split_names), data.split_names)
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        client.set_registered_model_alias(name, CHALLENGER, version)
    if has_alias(client, name, CHAMPION):
        promotion = "challenger: run `churn promote` to compare it with the champion"
    else:
        promotion = promote_contract(settings).reason
    return ContractTrainResult(
        run.info.run_id, name, version, data.split_names, per_split, summary, len(final), model.search_, promotion
    )
