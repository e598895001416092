"""Classification and ordinal metrics on a score scale (``labels``, the study's 1..5 by default).

Every value is a plain float (or None where undefined, e.g. Spearman of a constant prediction), so
the dict goes straight into metrics.json. Everything but Spearman comes from one K x K confusion
count, with scikit-learn's definitions (``zero_division=0``; balanced accuracy over the scores that
are true somewhere; macro averages over the scores that are true or predicted somewhere, as
scikit-learn's ``average="macro"`` without ``labels``, so perfect predictions score 1 on a scale with
unused scores; ``macro_f1_full_scale`` over every score of the scale; quadratic weights by position
on the scale), at a fraction of the cost of
scikit-learn's input checks: a run computes metrics for its head, each baseline and each decoding.
tests/test_metrics_definitions.py checks every value against its textbook definition; docs/metrics.md
states each definition and the rows it is computed on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from tagcons.labels import LABELS


@dataclass(frozen=True)
class Confusion:
    """Counts of (true, predicted) score pairs on a scale: ``counts[i, j]`` rows with true ``labels[i]``
    predicted ``labels[j]``."""

    counts: np.ndarray

    @classmethod
    def of(cls, y_true, y_pred, labels=LABELS) -> Confusion:
        labels = np.asarray(labels)
        true_at, pred_at = _positions(np.asarray(y_true), labels), _positions(np.asarray(y_pred), labels)
        k = len(labels)
        return cls(np.bincount(true_at * k + pred_at, minlength=k * k).reshape(k, k).astype(np.float64))

    @property
    def n(self) -> float:
        return float(self.counts.sum())

    @property
    def true_n(self) -> np.ndarray:
        return self.counts.sum(axis=1)

    @property
    def pred_n(self) -> np.ndarray:
        return self.counts.sum(axis=0)

    @property
    def tp(self) -> np.ndarray:
        return np.diag(self.counts)

    def precision(self) -> np.ndarray:
        return self.tp / np.maximum(self.pred_n, 1)  # 0 where nothing is predicted (tp is 0)

    def recall(self) -> np.ndarray:
        return self.tp / np.maximum(self.true_n, 1)  # 0 where nothing is true (tp is 0)

    def f1(self) -> np.ndarray:
        return 2 * self.tp / np.maximum(self.true_n + self.pred_n, 1)  # 0 where a score is neither

    @property
    def seen(self) -> np.ndarray:
        """Scores that are true or predicted somewhere: the ones a macro average runs over."""
        return (self.true_n + self.pred_n) > 0

    def macro_f1(self) -> float:
        return float(self.f1()[self.seen].mean()) if self.seen.any() else 0.0

    def accuracy(self) -> float:
        return float(self.tp.sum() / max(self.n, 1.0))

    def balanced_accuracy(self) -> float:
        """Mean recall over the scores that are true somewhere (scikit-learn's balanced_accuracy_score)."""
        return float(self.recall()[self.true_n > 0].mean())

    def adjacent_accuracy(self) -> float:
        """Share of rows predicted at most one step from the true score on the scale (the study's adj_acc)."""
        k = len(self.counts)
        near = np.abs(np.arange(k)[:, None] - np.arange(k)[None, :]) <= 1
        return float((self.counts * near).sum() / max(self.n, 1.0))

    def qwk(self) -> float:
        """Quadratic weighted kappa; 0 where no disagreement is expected by chance."""
        k = len(self.counts)
        weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2
        chance = (weights * np.outer(self.true_n, self.pred_n)).sum() / max(self.n, 1.0)
        return float(1.0 - (weights * self.counts).sum() / chance) if chance > 0 else 0.0


def _positions(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Index of each value on the scale ``labels`` (sorted); a value off the scale is a programming error."""
    at = np.searchsorted(labels, values)
    off = (at >= len(labels)) | (labels[np.minimum(at, len(labels) - 1)] != values)
    if off.any():
        raise ValueError(f"scores {sorted(set(values[off].tolist()))} are not on the scale {labels.tolist()}")
    return at


def _clean(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    if len(np.unique(y_true)) < 2 or len(np.unique(y_pred)) < 2:
        return None  # undefined for a constant vector (e.g. the majority baseline)
    return _clean(spearmanr(y_true, y_pred).statistic)


def _qwk(y_true: np.ndarray, y_pred: np.ndarray, confusion: Confusion) -> float | None:
    if len(np.unique(np.concatenate([y_true, y_pred]))) < 2:
        return None  # one score everywhere: kappa is undefined
    return confusion.qwk()


def _averaged(confusion: Confusion, average: str) -> dict:
    """Precision, recall and F1 averaged: "macro" (each score true or predicted somewhere alike) or "weighted"
    (by support)."""
    weights = confusion.seen / confusion.seen.sum()
    if average == "weighted":
        weights = confusion.true_n / confusion.n
    values = {"precision": confusion.precision(), "recall": confusion.recall(), "f1": confusion.f1()}
    return {f"{average}_{name}": float(np.dot(weights, value)) for name, value in values.items()}


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray, labels=LABELS) -> dict:
    return _per_class(Confusion.of(y_true, y_pred, labels), labels)


def _per_class(confusion: Confusion, labels) -> dict:
    precision, recall, f1, support = confusion.precision(), confusion.recall(), confusion.f1(), confusion.true_n
    return {
        str(k): {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, k in enumerate(labels)
    }


def compute_metrics(y_true, y_pred, proba=None, labels=LABELS, expected=None) -> dict:
    """Headline metrics of integer predictions on the scale ``labels``; with ``proba`` [n, K] (or the
    expected scores ``proba @ labels`` themselves, as a streamed predict keeps them) also the expected-score
    MAE."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    if not len(y_true):
        raise ValueError("no rows to compute metrics on")
    confusion = Confusion.of(y_true, y_pred, labels)
    metrics = {
        "accuracy": confusion.accuracy(),
        "balanced_accuracy": confusion.balanced_accuracy(),
        **_averaged(confusion, "macro"),
        "macro_f1_full_scale": float(confusion.f1().mean()),  # every score of the scale, unused ones at 0
        **_averaged(confusion, "weighted"),
        "mae": float(np.mean(np.abs(y_true - y_pred))),
        "qwk": _qwk(y_true, y_pred, confusion),
        "adjacent_accuracy": confusion.adjacent_accuracy(),
        "spearman": _spearman(y_true, y_pred),
        "per_class": _per_class(confusion, labels),
        "n": int(len(y_true)),
    }
    if proba is not None:
        expected = np.asarray(proba) @ np.asarray(labels, dtype=float)
    if expected is not None:
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
    """accuracy, macro_f1 and qwk, for per-epoch validation in training loops (0, not None, where undefined)."""
    confusion = Confusion.of(y_true, y_pred, labels)
    return {"accuracy": confusion.accuracy(), "macro_f1": confusion.macro_f1(), "qwk": confusion.qwk()}


SUMMARY_SD_DDOF = 1  # the sample sd, as the study's table reports mean +- sd over its folds


def fold_summary(per_fold: list[dict]) -> dict:
    """Mean and sd (ddof 1) over folds of each headline number (metrics undefined in a fold are left out)."""
    names = [k for k, v in per_fold[0].items() if k not in ("n", "fold") and (v is None or isinstance(v, float))]
    summary = {"rows": f"each of the {len(per_fold)} folds' rows, then mean and sd (ddof 1) over folds"}
    summary["mean"] = {name: _over_folds(per_fold, name, np.mean, 1) for name in names}
    summary["sd"] = {name: _over_folds(per_fold, name, lambda v: np.std(v, ddof=SUMMARY_SD_DDOF), 2) for name in names}
    summary["n_folds"] = len(per_fold)
    return summary


def _over_folds(per_fold: list[dict], name: str, reduce, at_least: int) -> float | None:
    values = [fold[name] for fold in per_fold if fold.get(name) is not None]
    return float(reduce(values)) if len(values) >= at_least else None
