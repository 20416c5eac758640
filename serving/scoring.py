"""Scoring: the champion models as raw boosters, applied to feature rows.

`Scorer` is loaded once (by the service at start-up, or by a batch run) and then scores
any frame of features with NumPy arrays straight into `Booster.predict`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn.errors import ConfigError
from churn.settings import Settings
from features.store import feature_store
from serving.policy import ActionCatalog, Segment, load_catalog, risk_band_of, segment_of
from training.calibration import apply_map
from training.dataset import check_features, required_features, to_matrix
from training.explain import contributions, reason_codes
from training.reason import Reason
from training.registered import FetchedModel, RegisteredModel, load_fetched, registered_value
from training.value import customer_value, value_columns


@dataclass(frozen=True)
class Scorer:
    """The champion churn model, the CLV model when the data set has one, and the action catalog.

    Every data set is scored the same way: a calibrated churn probability from the churn
    model's booster, a customer value (`training/value.py`: the CLV model's prediction, a
    declared recurring charge times the expected retained periods, a declared column, or one
    constant), the value segment from the edges learned at training, and the risk band.
    """

    churn: RegisteredModel
    clv: RegisteredModel | None
    catalog: ActionCatalog

    @classmethod
    def load(cls, settings: Settings, fetched: list[FetchedModel] | None = None) -> Scorer:
        """Load the champions and the catalog; refuse models whose features the store does not serve.

        `fetched`: the champions (`training.registry.fetch_scoring_champions`), already fetched
        from the registry by a caller that fetched them elsewhere; fetched here otherwise.
        """
        if fetched is None:
            from training.registry import fetch_scoring_champions  # MLflow, imported only by who fetches

            fetched = fetch_scoring_champions(settings)
        models = [load_fetched(f) for f in fetched]
        churn, clv = models[0], (models[1] if len(models) > 1 else None)
        served = {s.name for s in feature_store(settings).list_feature_services()}
        for model in models:
            if model.feature_service not in served:
                raise ConfigError(
                    f"model {model.label} was trained on feature service {model.feature_service!r}, "
                    f"which the feature store does not serve (it serves {sorted(served)}); run `churn features apply`"
                )
        if "calibration" not in churn.extra:
            raise ConfigError(f"churn model {churn.label} has no probability calibration; retrain it with `churn train`")
        method = registered_value(churn.extra)["method"]
        if (clv is None) != (method != "model"):
            raise ConfigError(
                f"churn model {churn.label} values customers by {method!r}, "
                f"{'but no CLV model came with it' if clv is None else f'yet a CLV model ({clv.label}) came with it'}"
            )
        return cls(churn=churn, clv=clv, catalog=load_catalog(settings.actions_path))

    @property
    def models(self) -> list[RegisteredModel]:
        return [self.churn] if self.clv is None else [self.churn, self.clv]

    @property
    def feature_services(self) -> list[str]:
        return sorted({m.feature_service for m in self.models})

    @property
    def model_version(self) -> str:
        return ";".join(m.label for m in self.models)

    @property
    def required_features(self) -> list[str]:
        """Features a customer must have to be scored (`training.dataset.required_features`)."""
        return list(dict.fromkeys(f for m in self.models for f in required_features(m)))

    @property
    def value(self) -> dict:
        """How customers are valued (`training/value.py`): the churn model's spec says."""
        return registered_value(self.churn.extra)

    @property
    def segment_edges(self) -> list[float]:
        return (self.clv or self.churn).extra["segment_edges"]

    @property
    def constant_value(self) -> bool:
        """True when every customer has the same value (no value declared): one segment, `medium`."""
        return bool(self.value.get("constant"))

    def segments(self, clv: np.ndarray) -> np.ndarray:
        """Value segment of each value: by the learned edges, or `medium` for all under a constant value."""
        if self.constant_value:
            return np.full(len(clv), Segment.MEDIUM.value)
        return segment_of(clv, self.segment_edges)

    def score(self, features: pd.DataFrame) -> pd.DataFrame:
        """Churn probability, CLV, segment and risk band for each row.

        `features` columns: customer_id and every feature of the models' FeatureServices.
        Returns those columns plus churn_probability, clv, segment, risk_band, model_version.
        """
        for model in self.models:
            check_features(features, model.feature_names, f"scoring with {model.label}", required_features(model))
        out = features.copy()
        scores = self.scores(
            to_matrix(features, self.churn.feature_names, self.churn.categories),
            None if self.clv is None else to_matrix(features, self.clv.feature_names, self.clv.categories),
            {c: pd.to_numeric(features[c], errors="coerce").to_numpy(dtype=float) for c in value_columns(self.value)},
        )
        for name, values in scores.items():
            out[name] = values
        out["model_version"] = self.model_version
        return out

    def scores(self, x_churn: np.ndarray, x_clv: np.ndarray | None, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """churn_probability, clv, segment and risk_band from the models' input matrices (rows aligned).

        `columns`: the features the value reads (`training.value.value_columns`), as float arrays.
        """
        # calibrated on held-out data at training time: a 0.2 means about 2 in 10 such customers leave
        probability = apply_map(self.churn.extra["calibration"], self.churn.booster.predict(x_churn))
        predicted = None if self.clv is None else self.clv.booster.predict(x_clv)
        clv = customer_value(self.value, columns, probability, predicted)
        return {
            "churn_probability": probability,
            "clv": clv,
            "segment": self.segments(clv),
            "risk_band": risk_band_of(probability, self.catalog.risk_bands),
        }

    def reasons(self, features: pd.DataFrame, top: int = 3) -> list[list[Reason]]:
        """Up to `top` reasons per row why its churn risk is high, from the churn model's SHAP contributions.

        `features` columns: the churn model's features (as for `score`).
        """
        check_features(features, self.churn.feature_names, f"explaining with {self.churn.label}", required_features(self.churn))
        contrib = contributions(
            self.churn.booster,
            to_matrix(features, self.churn.feature_names, self.churn.categories),
            self.churn.feature_names,
        )
        return reason_codes(features[self.churn.feature_names], contrib, top)
