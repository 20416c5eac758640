"""Probability calibration: it fixes miscalibrated scores and picks the method that fits."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import ProbabilityCalibrator, apply_map
from training.evaluate import expected_calibration_error
from training.model import NotFittedError


def _sample(true_p: np.ndarray, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(len(true_p)) < true_p).astype(int)


def test_overconfident_scores_become_calibrated_with_platt():
    # true log-odds are half the model's: a logistic (Platt) distortion
    rng = np.random.default_rng(0)
    logit = rng.normal(-3.0, 1.5, 20_000)
    raw = 1 / (1 + np.exp(-logit))
    truth = 1 / (1 + np.exp(-(0.5 * logit - 1.2)))
    y = _sample(truth, 1)
    calibrator = ProbabilityCalibrator().fit(raw, y)
    assert calibrator.method_ == "platt"
    y_new = _sample(truth, 2)
    assert expected_calibration_error(y_new, raw) > 0.02
    assert expected_calibration_error(y_new, calibrator.predict(raw)) < 0.01


def test_a_step_shaped_truth_is_fitted_by_isotonic():
    # churn is 2% below a score of 0.5 and 40% above: no logistic curve fits that jump
    rng = np.random.default_rng(4)
    raw = rng.random(20_000)
    truth = np.where(raw < 0.5, 0.02, 0.4)
    calibrator = ProbabilityCalibrator().fit(raw, _sample(truth, 5))
    assert calibrator.method_ == "isotonic"
    assert calibrator.cv_log_loss_["isotonic"] < calibrator.cv_log_loss_["platt"]
    assert calibrator.predict(np.array([0.2, 0.8])) == pytest.approx([0.02, 0.4], abs=0.02)


def test_the_stored_map_reproduces_the_calibrator():
    rng = np.random.default_rng(6)
    raw = rng.random(2_000)
    calibrator = ProbabilityCalibrator(methods=("isotonic",)).fit(raw, _sample(raw**2, 7))
    mapping = calibrator.to_dict()
    assert mapping["method"] == "isotonic"
    assert np.array_equal(apply_map(mapping, raw), calibrator.predict(raw))


def test_unfitted_and_one_class_are_refused():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ProbabilityCalibrator().predict(np.array([0.1]))
    with pytest.raises(ValueError, match="both churners and non-churners"):
        ProbabilityCalibrator().fit(np.array([0.1, 0.2, 0.3]), np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="'platt' or 'isotonic'; got 'spline'"):
        apply_map({"method": "spline"}, np.array([0.1]))
