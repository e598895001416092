"""Headline metrics of image-weighted confusion counts: one K x K count per test image, summed with any weights.

`image_counts` turns predictions into per-image counts; `resampled_metrics` gives every headline metric for
every row of a weight matrix ([resamples, n_images]: how often each image was drawn) in numpy, from one
matrix product; `point_metrics` is the same on the test rows themselves. The bootstrap (intervals.py) and
the simulations (simulation.py) read metrics only through these, so they equal `compute_metrics` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagcons.labels import LABELS

RESAMPLES = 1000  # the bootstrap's default number of image resamples


@dataclass
class ImageCounts:
    """Per-image sufficient statistics of one set of predictions on one set of test rows."""

    images: np.ndarray  # [n_images] the image keys, sorted
    confusion: np.ndarray  # [n_images, K*K] counts, row-major (true, pred)
    abs_error_expected: np.ndarray | None  # [n_images] sum of |expected - true|, when probabilities exist
    labels: tuple

    @property
    def n_images(self) -> int:
        return len(self.images)


def image_counts(y_true, y_pred, images, proba=None, labels=LABELS) -> ImageCounts:
    """Confusion counts of each image's pairs (labels outside ``labels`` are an error of the caller)."""
    labels = tuple(labels)
    k = len(labels)
    keys, image_code = np.unique(np.asarray(images).astype(str), return_inverse=True)
    true_code, pred_code = _codes(y_true, labels), _codes(y_pred, labels)
    cells = image_code * k * k + true_code * k + pred_code
    confusion = np.bincount(cells, minlength=len(keys) * k * k).reshape(len(keys), k * k).astype(np.float64)
    abs_error = None
    if proba is not None:
        expected = np.asarray(proba, dtype=float) @ np.asarray(labels, dtype=float)
        abs_error = np.bincount(image_code, weights=np.abs(expected - np.asarray(y_true, dtype=float)))
        abs_error = np.pad(abs_error, (0, len(keys) - len(abs_error)))
    return ImageCounts(keys, confusion, abs_error, labels)


def _codes(values, labels: tuple) -> np.ndarray:
    lookup = {label: i for i, label in enumerate(labels)}
    return np.asarray([lookup[int(v)] for v in np.asarray(values).astype(int)], dtype=np.int64)


def image_weights(n_images: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, n_images]: how many times each image is drawn in each resample (rows sum to n_images)."""
    draws = np.random.default_rng(seed).integers(0, n_images, size=(resamples, n_images))
    flat = draws + (np.arange(resamples) * n_images)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n_images).reshape(resamples, n_images).astype(np.float64)


def metrics_from_confusion(confusion: np.ndarray, labels=LABELS) -> dict[str, np.ndarray]:
    """Headline metrics of a stack of confusion matrices [..., K, K] (rows true, columns predicted).

    NaN where a metric is undefined (no rows; QWK or Spearman of a constant vector).
    """
    c = np.asarray(confusion, dtype=np.float64)
    k = len(labels)
    c = c.reshape(c.shape[:-1] + (k, k)) if c.shape[-1] == k * k else c
    n = c.sum(axis=(-2, -1))
    true_n, pred_n, tp = c.sum(axis=-1), c.sum(axis=-2), np.diagonal(c, axis1=-2, axis2=-1)
    f1 = _safe_divide(2 * tp, true_n + pred_n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "accuracy": tp.sum(axis=-1) / n,
            "balanced_accuracy": _balanced_accuracy(tp, true_n),
            "macro_f1": _macro(f1, true_n + pred_n > 0),
            "weighted_f1": (f1 * true_n).sum(axis=-1) / n,
            "mae": np.einsum("...ij,ij->...", c, _distance(labels, 1)) / n,
            "qwk": _qwk(c, true_n, pred_n, n, k),
            "spearman": _spearman(c, true_n, pred_n, n),
            "adjacent_accuracy": (c * (_distance(labels, 1) <= 1)).sum(axis=(-2, -1)) / n,
        }


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _macro(values: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Mean over the scores true or predicted somewhere (scikit-learn's macro average, as `compute_metrics`)."""
    return (values * seen).sum(axis=-1) / seen.sum(axis=-1)


def _distance(labels, power: int) -> np.ndarray:
    values = np.asarray(labels, dtype=np.float64)
    return np.abs(values[:, None] - values[None, :]) ** power


def _balanced_accuracy(tp: np.ndarray, true_n: np.ndarray) -> np.ndarray:
    """Mean recall over the scores present in the true labels (scikit-learn's definition)."""
    present = true_n > 0
    return (_safe_divide(tp, true_n) * present).sum(axis=-1) / present.sum(axis=-1)


def _qwk(c, true_n, pred_n, n, k) -> np.ndarray:
    weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2.0  # label positions, as scikit-learn
    denominator = np.einsum("...i,ij,...j->...", true_n, weights, pred_n) / n
    kappa = 1.0 - np.einsum("...ij,ij->...", c, weights) / denominator
    return np.where(denominator > 0, kappa, np.nan)


def _midranks(counts: np.ndarray) -> np.ndarray:
    """Average rank of each score given its count (ties share the mean of their ranks)."""
    return np.cumsum(counts, axis=-1) - counts + (counts + 1) / 2.0


def _spearman(c, true_n, pred_n, n) -> np.ndarray:
    """Pearson correlation of midranks, from the confusion counts (equals scipy's spearmanr)."""
    r, s = _midranks(true_n), _midranks(pred_n)
    r_mean, s_mean = (true_n * r).sum(-1) / n, (pred_n * s).sum(-1) / n
    r_dev, s_dev = r - r_mean[..., None], s - s_mean[..., None]
    covariance = np.einsum("...ij,...i,...j->...", c, r_dev, s_dev)
    spread = np.sqrt((true_n * r_dev**2).sum(-1) * (pred_n * s_dev**2).sum(-1))
    return np.where(spread > 1e-12, covariance / np.where(spread > 1e-12, spread, 1.0), np.nan)


def resampled_metrics(counts: ImageCounts, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every headline metric on every resample: {metric: [resamples]}."""
    return metrics_of_sums(counts, weights @ image_rows(counts))


def image_rows(counts: ImageCounts) -> np.ndarray:
    """[n_images, K*K (+1)]: each image's confusion counts, and its summed expected-score error if any."""
    if counts.abs_error_expected is None:
        return counts.confusion
    return np.column_stack([counts.confusion, counts.abs_error_expected])


def metrics_of_sums(counts: ImageCounts, sums: np.ndarray) -> dict[str, np.ndarray]:
    """Every headline metric of summed image rows [m, K*K (+1)]: {metric: [m]}."""
    cells = len(counts.labels) ** 2
    stats = metrics_from_confusion(sums[:, :cells], counts.labels)
    if sums.shape[1] > cells:
        with np.errstate(invalid="ignore", divide="ignore"):
            stats["mae_expected"] = sums[:, cells] / sums[:, :cells].sum(axis=1)
    return stats


def point_metrics(counts: ImageCounts) -> dict[str, float]:
    """Every headline metric on the test rows themselves (NaN where undefined)."""
    return {name: float(v[0]) for name, v in resampled_metrics(counts, np.ones((1, counts.n_images))).items()}
