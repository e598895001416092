"""Classification and ordinal metrics on a score scale (``labels``, the study's 1..5 by default).

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


def _qwk(y_true: np.ndarray, y_pred: np.ndarray, labels=LABELS) -> float | None:
    if len(np.unique(np.concatenate([y_true, y_pred]))) < 2:
        return None
    return _clean(cohen_kappa_score(y_true, y_pred, labels=list(labels), weights="quadratic"))


def _averaged(y_true: np.ndarray, y_pred: np.ndarray, average: str, labels=LABELS) -> dict:
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=list(labels), average=average, zero_division=0)
    return {f"{average}_precision": float(p), f"{average}_recall": float(r), f"{average}_f1": float(f)}


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true": expected on small parts
        return float(balanced_accuracy_score(y_true, y_pred))


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray, labels=LABELS) -> dict:
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(labels), zero_division=0)
    return {
        str(k): {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, k in enumerate(labels)
    }


def compute_metrics(y_true, y_pred, proba=None, labels=LABELS) -> dict:
    """Headline metrics of integer predictions on the scale ``labels``; with ``proba`` [n, K] also the
    expected-score MAE."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        **_averaged(y_true, y_pred, "macro", labels),
        **_averaged(y_true, y_pred, "weighted", labels),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "qwk": _qwk(y_true, y_pred, labels),
        "spearman": _spearman(y_true, y_pred),
        "per_class": per_class_report(y_true, y_pred, labels),
        "n": int(len(y_true)),
    }
    if proba is not None:
        expected = np.asarray(proba) @ np.asarray(labels, dtype=float)
        metrics["mae_expected"] = float(np.mean(np.abs(expected - y_true)))
    return metrics


def majority_label(y_train, labels=LABELS) -> int:
    """The most frequent training score (ties go to the higher score, as ordinal data tends to)."""
    y_train = np.asarray(y_train).astype(int)
    counts = np.array([(y_train == k).sum() for k in labels])
    return int(labels[len(counts) - 1 - int(np.argmax(counts[::-1]))])


def majority_baseline(y_train, y_test, labels=LABELS) -> dict:
    """Metrics of always predicting the training part's most frequent score, on the test part."""
    label = majority_label(y_train, labels)
    metrics = compute_metrics(y_test, np.full(len(y_test), label), labels=labels)
    metrics["label"] = label
    return metrics


def pooled_and_per_fold(
    folds: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]], labels=LABELS
) -> tuple[dict, list[dict]]:
    """Cross-validation: metrics of all out-of-fold predictions pooled, and of each fold.

    ``folds`` holds (y_true, y_pred, proba-or-None) per fold.
    """
    per_fold = [compute_metrics(t, p, pr, labels) for t, p, pr in folds]
    has_proba = all(pr is not None for _, _, pr in folds)
    pooled = compute_metrics(
        np.concatenate([t for t, _, _ in folds]),
        np.concatenate([p for _, p, _ in folds]),
        np.concatenate([pr for _, _, pr in folds]) if has_proba else None,
        labels,
    )
    return pooled, per_fold


def quick_scores(y_true, y_pred, labels=LABELS) -> dict:
    """accuracy, macro_f1 and qwk from one KxK confusion count, for per-epoch validation in training loops.

    Same values as compute_metrics (zero_division=0, QWK 0 when undefined) at a fraction of
    scikit-learn's input-checking cost.
    """
    labels = np.asarray(labels)
    y_true, y_pred = np.searchsorted(labels, np.asarray(y_true)), np.searchsorted(labels, np.asarray(y_pred))
    k = len(labels)
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.float64)
    tp, true_n, pred_n = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    f1 = 2 * tp / np.maximum(true_n + pred_n, 1)  # 0 where a score is neither true nor predicted (tp is 0)
    weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2
    expected = np.outer(true_n, pred_n) / max(confusion.sum(), 1.0)
    denominator = (weights * expected).sum()
    qwk = 1.0 - (weights * confusion).sum() / denominator if denominator > 0 else 0.0
    return {"accuracy": float(tp.sum() / max(confusion.sum(), 1.0)), "macro_f1": float(f1.mean()), "qwk": float(qwk)}
