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
from serving.policy import ActionCatalog, load_catalog, risk_band_of, segment_of
from training.calibration import apply_map
from training.dataset import check_features, to_matrix
from training.explain import contributions, reason_codes
from training.reason import Reason
from training.registered import FetchedModel, RegisteredModel, load_fetched


@dataclass(frozen=True)
class Scorer:
    """The champion churn and CLV models plus the action catalog."""

    churn: RegisteredModel
    clv: RegisteredModel
    catalog: ActionCatalog

    @classmethod
    def load(cls, settings: Settings, fetched: list[FetchedModel] | None = None) -> Scorer:
        """Load both champions and the catalog; refuse models whose features the store does not serve.

        `fetched`: the champions of `settings.training.scoring_models`, already fetched from the
        registry (`training.registry.fetch_champions`) by a caller that fetched them elsewhere;
        fetched here otherwise. After `churn ingest`, refuses with what the ingested data set
        lacks for decisions (`serving/contract_scoring.py`) rather than with a missing simulator model.
        """
        if settings.uses_ingested_data:
            from serving.contract_scoring import missing_for_decisions

            raise ConfigError(missing_for_decisions(settings))
        names = settings.training.scoring_models
        if fetched is None:
            from training.registry import fetch_champions  # MLflow, imported only by who fetches

            fetched = fetch_champions(settings, names)
        if [f.name for f in fetched] != names:
            raise ConfigError(f"expected the champions of {names}, got {[f.name for f in fetched]}")
        churn, clv = (load_fetched(f) for f in fetched)
        served = {s.name for s in feature_store(settings).list_feature_services()}
        for model in (churn, clv):
            if model.feature_service not in served:
                raise ConfigError(
                    f"model {model.label} was trained on feature service {model.feature_service!r}, "
                    f"which the feature store does not serve (it serves {sorted(served)}); run `churn features apply`"
                )
        if "calibration" not in churn.extra:
            raise ConfigError(f"churn model {churn.label} has no probability calibration; retrain it with `churn train`")
        return cls(churn=churn, clv=clv, catalog=load_catalog(settings.actions_path))

    @property
    def feature_services(self) -> list[str]:
        return sorted({self.churn.feature_service, self.clv.feature_service})

    @property
    def model_version(self) -> str:
        return f"{self.churn.label};{self.clv.label}"

    def score(self, features: pd.DataFrame) -> pd.DataFrame:
        """Churn probability, CLV, segment and risk band for each row.

        `features` columns: customer_id and every feature of both models' FeatureServices.
        Returns those columns plus churn_probability, clv, segment, risk_band, model_version.
        """
        check_features(features, self.churn.feature_names, f"scoring with {self.churn.label}")
        check_features(features, self.clv.feature_names, f"scoring with {self.clv.label}")
        out = features.copy()
        scores = self.scores(
            to_matrix(features, self.churn.feature_names, self.churn.categories),
            to_matrix(features, self.clv.feature_names, self.clv.categories),
        )
        for name, values in scores.items():
            out[name] = values
        out["model_version"] = self.model_version
        return out

    def scores(self, x_churn: np.ndarray, x_clv: np.ndarray) -> dict[str, np.ndarray]:
        """churn_probability, clv, segment and risk_band from both models' input matrices (rows aligned)."""
        # calibrated on held-out data at training time: a 0.2 means about 2 in 10 such customers leave
        probability = apply_map(self.churn.extra["calibration"], self.churn.booster.predict(x_churn))
        clv = np.maximum(self.clv.booster.predict(x_clv), 0.0)
        return {
            "churn_probability": probability,
            "clv": clv,
            "segment": segment_of(clv, self.clv.extra["segment_edges"]),
            "risk_band": risk_band_of(probability, self.catalog.risk_bands),
        }

    def reasons(self, features: pd.DataFrame, top: int = 3) -> list[list[Reason]]:
        """Up to `top` reasons per row why its churn risk is high, from the churn model's SHAP contributions.

        `features` columns: the churn model's features (as for `score`).
        """
        check_features(features, self.churn.feature_names, f"explaining with {self.churn.label}")
        contrib = contributions(
            self.churn.booster,
            to_matrix(features, self.churn.feature_names, self.churn.categories),
            self.churn.feature_names,
        )
        return reason_codes(features[self.churn.feature_names], contrib, top)
