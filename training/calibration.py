"""Probability calibration: make a churn score of 0.2 mean that 2 in 10 such customers leave.

Gradient boosting ranks well but its probabilities drift (early stopping on AUC, class
imbalance), and a marketing team multiplies them by money. `ProbabilityCalibrator` maps raw
model probabilities to calibrated ones, fitted on data the trees never saw. It tries Platt
scaling (a logistic curve on the log-odds) and isotonic regression (a monotone step
function) and keeps the one with the lower log-loss in k-fold cross-validation on the
calibration data: isotonic is more flexible but overfits small or imbalanced samples.

The fitted map is plain numbers (`to_dict` / `from_dict`), so serving applies it without
scikit-learn objects.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from training.model import NotFittedError

Method = Literal["platt", "isotonic"]
# Probabilities are clipped away from 0 and 1 before taking log-odds and log-loss.
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _fit_map(method: Method, p: np.ndarray, y: np.ndarray) -> dict:
    """Fit one calibration map and return it as numbers."""
    if method == "platt":
        # large C: plain maximum likelihood, as in Platt (1999); the sample is not small
        logistic = LogisticRegression(C=1e6).fit(_logit(p).reshape(-1, 1), y)
        return {"method": "platt", "slope": float(logistic.coef_[0, 0]), "intercept": float(logistic.intercept_[0])}
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return {
        "method": "isotonic",
        "x": isotonic.X_thresholds_.tolist(),
        "y": isotonic.y_thresholds_.tolist(),
    }


def apply_map(mapping: dict, p: np.ndarray) -> np.ndarray:
    """Calibrated probabilities from raw ones with a map from `_fit_map` (or `to_dict`)."""
    p = np.asarray(p, dtype=float)
    if mapping["method"] == "platt":
        return 1.0 / (1.0 + np.exp(-(mapping["slope"] * _logit(p) + mapping["intercept"])))
    if mapping["method"] == "isotonic":
        return np.interp(p, mapping["x"], mapping["y"])
    raise ValueError(f"calibration method must be 'platt' or 'isotonic'; got {mapping['method']!r}")


class ProbabilityCalibrator:
    """Platt or isotonic calibration of churn probabilities, chosen by cross-validated log-loss.

    Parameters
    ----------
    methods : the candidates; one method skips the choice.
    n_folds : folds of the cross-validation that chooses.
    seed : seed of the fold split.
    """

    def __init__(self, methods: tuple[Method, ...] = ("platt", "isotonic"), n_folds: int = 5, seed: int = 0):
        self.methods = methods
        self.n_folds = n_folds
        self.seed = seed

    def fit(self, probability: np.ndarray, y_true: np.ndarray) -> ProbabilityCalibrator:
        """Choose the method by cross-validation on (probability, y_true), then refit it on all of it."""
        p = np.asarray(probability, dtype=float)
        y = np.asarray(y_true, dtype=int)
        if y.min() == y.max():
            raise ValueError("calibration needs both churners and non-churners in the calibration data")
        folds = StratifiedKFold(n_splits=self.n_folds, shuffle=True, random_state=self.seed)
        self.cv_log_loss_ = {}
        for method in self.methods:
            held_out = np.empty(len(p))
            for fit_rows, test_rows in folds.split(p, y):
                held_out[test_rows] = apply_map(_fit_map(method, p[fit_rows], y[fit_rows]), p[test_rows])
            self.cv_log_loss_[method] = float(log_loss(y, np.clip(held_out, _EPS, 1 - _EPS)))
        self.method_ = min(self.cv_log_loss_, key=self.cv_log_loss_.get)
        self.map_ = _fit_map(self.method_, p, y)
        return self

    def predict(self, probability: np.ndarray) -> np.ndarray:
        """Calibrated probabilities."""
        if not hasattr(self, "map_"):
            raise NotFittedError("this calibrator is not fitted yet; call fit first")
        return apply_map(self.map_, probability)

    def to_dict(self) -> dict:
        """The fitted map and the cross-validation scores, for the model's spec."""
        if not hasattr(self, "map_"):
            raise NotFittedError("this calibrator is not fitted yet; call fit first")
        return {**self.map_, "cv_log_loss": self.cv_log_loss_}

