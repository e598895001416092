"""Classification and ordinal metrics for 1-5 scores, all with the labels fixed to 1..5.

Every value is a plain float (or None where undefined, e.g. Spearman of a constant prediction), so
the dict goes straight into metrics.json.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    mean_absolute_error,
    precision_recall_fscore_support,
)

from tagcons.labels import LABELS


def _clean(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    if len(np.unique(y_true)) < 2 or len(np.unique(y_pred)) < 2:
        return None  # undefined for a constant vector (e.g. the majority baseline)
    return _clean(spearmanr(y_true, y_pred).statistic)


def _qwk(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    if len(np.unique(np.concatenate([y_true, y_pred]))) < 2:
        return None
    return _clean(cohen_kappa_score(y_true, y_pred, labels=list(LABELS), weights="quadratic"))


def _averaged(y_true: np.ndarray, y_pred: np.ndarray, average: str) -> dict:
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=list(LABELS), average=average, zero_division=0)
    return {f"{average}_precision": float(p), f"{average}_recall": float(r), f"{average}_f1": float(f)}


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true": expected on small parts
        return float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(LABELS), zero_division=0)
    return {
        str(k): {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, k in enumerate(LABELS)
    }


def compute_metrics(y_true, y_pred, proba=None) -> dict:
    """Headline metrics of integer predictions; with ``proba`` [n, 5] also the expected-score MAE."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        **_averaged(y_true, y_pred, "macro"),
        **_averaged(y_true, y_pred, "weighted"),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "qwk": _qwk(y_true, y_pred),
        "spearman": _spearman(y_true, y_pred),
        "per_class": per_class_report(y_true, y_pred),
        "n": int(len(y_true)),
    }
    if proba is not None:
        expected = np.asarray(proba) @ np.asarray(LABELS, dtype=float)
        metrics["mae_expected"] = float(np.mean(np.abs(expected - y_true)))
    return metrics


def majority_label(y_train) -> int:
    """The most frequent training score (ties go to the higher score, as ordinal data tends to)."""
    counts = np.bincount(np.asarray(y_train).astype(int), minlength=LABELS[-1] + 1)[1:]
    return int(LABELS[len(counts) - 1 - int(np.argmax(counts[::-1]))])


def majority_baseline(y_train, y_test) -> dict:
    """Metrics of always predicting the training part's most frequent score, on the test part."""
    label = majority_label(y_train)
    metrics = compute_metrics(y_test, np.full(len(y_test), label))
    metrics["label"] = label
    return metrics


def pooled_and_per_fold(folds: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> tuple[dict, list[dict]]:
    """Cross-validation: metrics of all out-of-fold predictions pooled, and of each fold.

    ``folds`` holds (y_true, y_pred, proba-or-None) per fold.
    """
    per_fold = [compute_metrics(t, p, pr) for t, p, pr in folds]
    has_proba = all(pr is not None for _, _, pr in folds)
    pooled = compute_metrics(
        np.concatenate([t for t, _, _ in folds]),
        np.concatenate([p for _, p, _ in folds]),
        np.concatenate([pr for _, _, pr in folds]) if has_proba else None,
    )
    return pooled, per_fold


def quick_scores(y_true, y_pred) -> dict:
    """accuracy, macro_f1 and qwk from one 5x5 confusion count, for per-epoch validation in training loops.

    Same values as compute_metrics (labels 1..5, zero_division=0, QWK 0 when undefined) at a fraction
    of scikit-learn's input-checking cost.
    """
    y_true, y_pred = np.asarray(y_true).astype(int) - 1, np.asarray(y_pred).astype(int) - 1
    k = len(LABELS)
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.float64)
    tp, true_n, pred_n = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    f1 = np.divide(2 * tp, true_n + pred_n, out=np.zeros(k), where=(true_n + pred_n) > 0)
    weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2
    expected = np.outer(true_n, pred_n) / max(confusion.sum(), 1.0)
    denominator = (weights * expected).sum()
    qwk = 1.0 - (weights * confusion).sum() / denominator if denominator > 0 else 0.0
    return {"accuracy": float(tp.sum() / max(confusion.sum(), 1.0)), "macro_f1": float(f1.mean()), "qwk": float(qwk)}
