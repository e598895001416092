"""Probability quality and temperature scaling for 1-5 score probabilities.

- `calibration_metrics`: log-loss, multiclass Brier score (mean over rows of sum_k (p_k - [y = k])^2)
  and expected calibration error (top-label confidence against accuracy in 15 equal-width bins).
- `fit_temperature`: one scalar T fitted by scikit-learn's temperature scaling
  (``CalibratedClassifierCV(FrozenEstimator(...), method="temperature")``) on probabilities the
  model gave to *held-out* rows; `apply_temperature` turns p into softmax(log p / T).

Temperature scaling keeps the ranking of the scores within a row (argmax does not change), so it
fixes over- or under-confidence without touching accuracy. Any head or fine-tuned model that yields
probabilities can be calibrated here, since only its probabilities are needed.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin

from tagcons.evaluate.metrics import LABELS

ECE_BINS = 15
EPS = 1e-12


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-probability of the true score (scores 1..K)."""
    picked = np.asarray(proba)[np.arange(len(y)), np.asarray(y).astype(int) - 1]
    return float(-np.mean(np.log(np.clip(picked, EPS, 1.0))))


def brier_score(proba: np.ndarray, y: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of the squared distance to the one-hot truth."""
    proba = np.asarray(proba, dtype=np.float64)
    truth = np.zeros_like(proba)
    truth[np.arange(len(y)), np.asarray(y).astype(int) - 1] = 1.0
    return float(np.mean(np.sum((proba - truth) ** 2, axis=1)))


def reliability_bins(proba: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Top-label confidence vs accuracy per equal-width confidence bin (empty bins left out)."""
    proba = np.asarray(proba)
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) + 1) == np.asarray(y).astype(int)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return [
        {
            "confidence": float(confidence[which == b].mean()),
            "accuracy": float(correct[which == b].mean()),
            "count": int((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Count-weighted mean |accuracy - confidence| over the reliability bins."""
    table = reliability_bins(proba, y, bins)
    total = sum(b["count"] for b in table)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in table) / max(total, 1))


def calibration_metrics(proba: np.ndarray, y: np.ndarray) -> dict:
    return {
        "log_loss": log_loss(proba, y),
        "brier": brier_score(proba, y),
        "ece": expected_calibration_error(proba, y),
    }


class _GivenProbabilities(ClassifierMixin, BaseEstimator):
    """A fitted 'classifier' whose input already is its probabilities: lets scikit-learn calibrate any model."""

    def fit(self, X, y):
        self.classes_ = np.arange(np.asarray(X).shape[1])
        return self

    def predict_proba(self, X):
        return np.asarray(X, dtype=np.float64)

    def predict(self, X):
        return self.classes_[np.argmax(X, axis=1)]


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """Temperature T minimising the log-loss of softmax(log p / T) on these (held-out) rows.

    The scores are passed to scikit-learn as 0-based column indices: its temperature scaling uses
    the integer targets as column positions, so 1-5 scores must be encoded first.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    proba = _renormalised(proba)
    columns = np.asarray(y).astype(int) - LABELS[0]
    given = _GivenProbabilities().fit(proba, columns)
    calibrated = CalibratedClassifierCV(FrozenEstimator(given), method="temperature").fit(proba, columns)
    beta = float(calibrated.calibrated_classifiers_[0].calibrators[0].beta_)
    return 1.0 / beta


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T); T = 1 returns p (renormalised)."""
    proba = _renormalised(proba)
    if temperature == 1.0:
        return proba
    return softmax(np.log(proba + EPS) / temperature, axis=1)


def _renormalised(proba: np.ndarray) -> np.ndarray:
    proba = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
    return proba / np.maximum(proba.sum(axis=1, keepdims=True), EPS)
