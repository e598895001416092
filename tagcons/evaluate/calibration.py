"""Probability quality and temperature scaling for 1-5 score probabilities.

- `calibration_metrics`: log-loss, multiclass Brier score (mean over rows of sum_k (p_k - [y = k])^2),
  expected calibration error (top-label confidence against accuracy in 15 equal-width bins), class-wise
  ECE (each score's p_k against its frequency, binned alike, averaged over the scores), the mean
  expected score against the mean true score, and each score's mean probability against its share.
  Top-label ECE looks only at the most probable score: probabilities shifted towards the rare scores
  (what balanced class weights do) can keep it near 0 while p(score 1) is several times too high;
  class-wise ECE and the mean expected score show that shift.
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


def classwise_ece(proba: np.ndarray, y: np.ndarray, bins: int = ECE_BINS, labels=LABELS) -> float:
    """Mean over the scores (those true somewhere or given probability somewhere) of the count-weighted
    |frequency of the score - mean p_k| over equal-width bins of p_k (Kull et al., 2019)."""
    proba = np.asarray(proba, dtype=np.float64)
    truth = columns_of(y, labels)[:, None] == np.arange(proba.shape[1])[None, :]
    seen = truth.any(axis=0) | (proba > 0).any(axis=0)
    return float(np.mean([_binned_gap(proba[:, k], truth[:, k], bins) for k in np.flatnonzero(seen)]))


def _binned_gap(p: np.ndarray, hit: np.ndarray, bins: int) -> float:
    which = np.minimum((p * bins).astype(int), bins - 1)
    gaps = [abs(hit[which == b].mean() - p[which == b].mean()) * (which == b).sum() for b in np.unique(which)]
    return float(sum(gaps) / len(p))


def calibration_metrics(proba: np.ndarray, y: np.ndarray, labels=LABELS) -> dict:
    proba, scores = np.asarray(proba, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    truth = columns_of(y, labels)
    return {
        "log_loss": log_loss(proba, y, labels),
        "brier": brier_score(proba, y, labels),
        "ece": expected_calibration_error(proba, y, labels=labels),
        "classwise_ece": classwise_ece(proba, y, labels=labels),
        "mean_expected_score": float(np.mean(proba @ scores)),
        "mean_true_score": float(np.mean(scores[truth])),
        "mean_proba": {str(k): float(proba[:, i].mean()) for i, k in enumerate(labels)},
        "true_share": {str(k): float(np.mean(truth == i)) for i, k in enumerate(labels)},
    }


def fit_temperature(proba: np.ndarray, y: np.ndarray, labels=LABELS, prior=None) -> float:
    """Temperature T minimising the log-loss of softmax(log p / T) on these (held-out) rows (with ``prior``:
    of `apply_temperature`'s softmax(log p / T + log prior)).

    The same one-parameter fit as scikit-learn's ``CalibratedClassifierCV(FrozenEstimator(model),
    method="temperature")`` (a test checks they agree), done directly: scikit-learn 1.9's version
    reads integer targets as column positions (scores must be re-encoded to columns of ``labels``) and runs
    ``cross_val_predict`` even on a frozen model, which fails on a validation part that lacks a score.
    """
    logits = np.log(_renormalised(proba) + EPS)
    rows, columns = np.arange(len(y)), columns_of(y, labels)
    offset = 0.0 if prior is None else np.log(np.asarray(prior, dtype=np.float64))[None, :]

    def loss(log_beta: float) -> float:
        scaled = np.exp(log_beta) * logits + offset
        return float(np.mean(logsumexp(scaled, axis=1) - scaled[rows, columns]))

    best = minimize_scalar(loss, bounds=(-10.0, 10.0), method="bounded", options={"xatol": 1e-10})
    return float(np.exp(-best.x))


def apply_temperature(proba: np.ndarray, temperature: float, prior=None) -> np.ndarray:
    """softmax(log p / T), then times ``prior`` (one multiplier per column) and renormalised; T = 1 and no
    prior return p (renormalised).

    With the prior, T flattens the probabilities towards the prior instead of towards uniform: probabilities
    of a class-weighted head (whose own prior is flat) tempered, then the weights' shift divided out."""
    proba = _renormalised(proba)
    if temperature != 1.0:
        proba = softmax(np.log(proba + EPS) / temperature, axis=1)
    return reweighted(proba, prior)


def reweighted(proba: np.ndarray, multipliers) -> np.ndarray:
    """p_k * m_k, renormalised per row (``multipliers`` None: p unchanged)."""
    if multipliers is None:
        return proba
    weighted = np.asarray(proba, dtype=np.float64) * np.asarray(multipliers, dtype=np.float64)
    return weighted / np.maximum(weighted.sum(axis=1, keepdims=True), 1e-300)


def _renormalised(proba: np.ndarray) -> np.ndarray:
    proba = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
    return proba / np.maximum(proba.sum(axis=1, keepdims=True), EPS)
