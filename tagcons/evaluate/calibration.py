"""Probability quality and temperature scaling for 1-5 score probabilities.

- `calibration_metrics`: log-loss, multiclass Brier score (mean over rows of sum_k (p_k - [y = k])^2)
  and expected calibration error (top-label confidence against accuracy in 15 equal-width bins).
- `fit_temperature`: one scalar T minimising the log-loss on probabilities the model gave to
  *held-out* rows (scikit-learn's temperature scaling, see there); `apply_temperature` turns p
  into softmax(log p / T).

Temperature scaling keeps the ranking of the scores within a row (argmax does not change), so it
fixes over- or under-confidence without touching accuracy. Any head or fine-tuned model that yields
probabilities can be calibrated here, since only its probabilities are needed.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp, softmax

from tagcons.labels import LABELS

ECE_BINS = 15
EPS = 1e-12


def columns_of(y: np.ndarray, labels=LABELS) -> np.ndarray:
    """The probability column of each score: its position in the scale ``labels``."""
    return np.searchsorted(np.asarray(labels), np.asarray(y).astype(int))


def log_loss(proba: np.ndarray, y: np.ndarray, labels=LABELS) -> float:
    """Mean negative log-probability of the true score (one column per score in ``labels``)."""
    picked = np.asarray(proba)[np.arange(len(y)), columns_of(y, labels)]
    return float(-np.mean(np.log(np.clip(picked, EPS, 1.0))))


def brier_score(proba: np.ndarray, y: np.ndarray, labels=LABELS) -> float:
    """Multiclass Brier score: mean over rows of the squared distance to the one-hot truth."""
    proba = np.asarray(proba, dtype=np.float64)
    truth = np.zeros_like(proba)
    truth[np.arange(len(y)), columns_of(y, labels)] = 1.0
    return float(np.mean(np.sum((proba - truth) ** 2, axis=1)))


def reliability_bins(proba: np.ndarray, y: np.ndarray, bins: int = ECE_BINS, labels=LABELS) -> list[dict]:
    """Top-label confidence vs accuracy per equal-width confidence bin (empty bins left out)."""
    proba = np.asarray(proba)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == columns_of(y, labels)
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


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = ECE_BINS, labels=LABELS) -> float:
    """Count-weighted mean |accuracy - confidence| over the reliability bins."""
    table = reliability_bins(proba, y, bins, labels)
    total = sum(b["count"] for b in table)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in table) / max(total, 1))


def calibration_metrics(proba: np.ndarray, y: np.ndarray, labels=LABELS) -> dict:
    return {
        "log_loss": log_loss(proba, y, labels),
        "brier": brier_score(proba, y, labels),
        "ece": expected_calibration_error(proba, y, labels=labels),
    }


def fit_temperature(proba: np.ndarray, y: np.ndarray, labels=LABELS) -> float:
    """Temperature T minimising the log-loss of softmax(log p / T) on these (held-out) rows.

    The same one-parameter fit as scikit-learn's ``CalibratedClassifierCV(FrozenEstimator(model),
    method="temperature")`` (a test checks they agree), done directly: scikit-learn 1.9's version
    reads integer targets as column positions (scores must be re-encoded to columns of ``labels``) and runs
    ``cross_val_predict`` even on a frozen model, which fails on a validation part that lacks a score.
    """
    logits = np.log(_renormalised(proba) + EPS)
    rows, columns = np.arange(len(y)), columns_of(y, labels)

    def loss(log_beta: float) -> float:
        scaled = np.exp(log_beta) * logits
        return float(np.mean(logsumexp(scaled, axis=1) - scaled[rows, columns]))

    best = minimize_scalar(loss, bounds=(-10.0, 10.0), method="bounded", options={"xatol": 1e-10})
    return float(np.exp(-best.x))


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T); T = 1 returns p (renormalised)."""
    proba = _renormalised(proba)
    if temperature == 1.0:
        return proba
    return softmax(np.log(proba + EPS) / temperature, axis=1)


def _renormalised(proba: np.ndarray) -> np.ndarray:
    proba = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
    return proba / np.maximum(proba.sum(axis=1, keepdims=True), EPS)
