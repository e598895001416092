"""Image-clustered bootstrap intervals of the headline metrics, and paired differences between runs.

Pairs of one image are not independent (one photo, one annotator sitting), so the bootstrap
resamples whole test images: each resample draws ``n_images`` images with replacement and every
pair of a drawn image comes along. Everything is computed from confusion counts: one K x K count
per image, a [resamples, n_images] matrix of how often each image was drawn, and one matrix
product gives every resample's confusion matrix, from which all headline metrics follow in numpy
(2,022 pairs x 1,000 resamples in milliseconds; see benchmarks/bootstrap.py).

Metrics follow `compute_metrics` on the original rows exactly (labels fixed to the ones passed in,
zero_division=0); a value undefined in a resample (e.g. Spearman of a constant prediction) is left
out of that metric's interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tagcons.labels import LABELS

RESAMPLES = 1000
LEVEL = 0.95
INTERVAL_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "weighted_f1",
    "mae",
    "qwk",
    "spearman",
    "adjacent_accuracy",
)
LOWER_IS_BETTER = frozenset({"mae", "mae_expected"})


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
            "mae": (c * _distance(labels, 1)).sum(axis=(-2, -1)) / n,
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
    expected = true_n[..., :, None] * pred_n[..., None, :] / n[..., None, None]
    denominator = (weights * expected).sum(axis=(-2, -1))
    kappa = 1.0 - (weights * c).sum(axis=(-2, -1)) / denominator
    return np.where(denominator > 0, kappa, np.nan)


def _midranks(counts: np.ndarray) -> np.ndarray:
    """Average rank of each score given its count (ties share the mean of their ranks)."""
    return np.cumsum(counts, axis=-1) - counts + (counts + 1) / 2.0


def _spearman(c, true_n, pred_n, n) -> np.ndarray:
    """Pearson correlation of midranks, from the confusion counts (equals scipy's spearmanr)."""
    r, s = _midranks(true_n), _midranks(pred_n)
    r_mean, s_mean = (true_n * r).sum(-1) / n, (pred_n * s).sum(-1) / n
    r_dev, s_dev = r - r_mean[..., None], s - s_mean[..., None]
    covariance = (c * r_dev[..., :, None] * s_dev[..., None, :]).sum(axis=(-2, -1))
    spread = np.sqrt((true_n * r_dev**2).sum(-1) * (pred_n * s_dev**2).sum(-1))
    return np.where(spread > 1e-12, covariance / np.where(spread > 1e-12, spread, 1.0), np.nan)


def resampled_metrics(counts: ImageCounts, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every headline metric on every resample: {metric: [resamples]}."""
    stats = metrics_from_confusion(weights @ counts.confusion, counts.labels)
    if counts.abs_error_expected is not None:
        pairs_per_image = counts.confusion.sum(axis=1)
        stats["mae_expected"] = (weights @ counts.abs_error_expected) / (weights @ pairs_per_image)
    return stats


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """[low, high] percentile interval of the defined values (None when none is defined)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return [float(low), float(high)]


def bootstrap_intervals(
    y_true, y_pred, images, proba=None, resamples: int = RESAMPLES, seed: int = 0, labels=LABELS
) -> dict:
    """metrics.json's uncertainty block: ``ci95`` per headline metric, ``bootstrap``, ``n_test_images``."""
    counts = image_counts(y_true, y_pred, images, proba, labels)
    stats = resampled_metrics(counts, image_weights(counts.n_images, resamples, seed))
    return {
        "ci95": {name: percentile_interval(values) for name, values in stats.items()},
        "bootstrap": {"resamples": resamples, "seed": seed, "unit": "image"},
        "n_test_images": counts.n_images,
    }


def pooled_intervals(resampled: list[dict[str, np.ndarray]]) -> dict[str, list[float] | None]:
    """One interval per metric over the bootstrap distributions of several repeats taken together
    (split-to-split variation and test-sampling variation both widen it)."""
    names = resampled[0].keys()
    return {name: percentile_interval(np.concatenate([r[name] for r in resampled])) for name in names}


@dataclass
class PairedDifference:
    """``run`` minus ``reference`` on one metric, over the same test rows, resampling images jointly."""

    metric: str
    difference: float | None
    ci95: list[float] | None
    p_value: float | None

    @property
    def significant(self) -> bool:
        """Only when the interval excludes 0."""
        return self.ci95 is not None and (self.ci95[0] > 0 or self.ci95[1] < 0)


def aligned_counts(frames: list[pd.DataFrame], labels=LABELS) -> list[ImageCounts]:
    """Per-image counts of several prediction frames (image, true, pred[, p1..pK]) over one image order."""
    images = np.unique(np.concatenate([f["image"].astype(str).to_numpy() for f in frames]))
    return [_reindexed(_frame_counts(f, labels), images) for f in frames]


def _frame_counts(frame: pd.DataFrame, labels) -> ImageCounts:
    columns = [f"p{label}" for label in labels]
    proba = frame[columns].to_numpy() if set(columns) <= set(frame.columns) else None
    return image_counts(frame["true"], frame["pred"], frame["image"], proba, labels)


def _reindexed(counts: ImageCounts, images: np.ndarray) -> ImageCounts:
    position = np.searchsorted(images, counts.images)
    confusion = np.zeros((len(images), counts.confusion.shape[1]))
    confusion[position] = counts.confusion
    abs_error = None
    if counts.abs_error_expected is not None:
        abs_error = np.zeros(len(images))
        abs_error[position] = counts.abs_error_expected
    return ImageCounts(images, confusion, abs_error, counts.labels)


def paired_difference(
    run: ImageCounts, reference: ImageCounts, metric: str, resamples: int = RESAMPLES, seed: int = 0
) -> PairedDifference:
    """Difference of ``metric`` (run - reference) with a paired image-clustered bootstrap interval and a
    two-sided bootstrap p-value (the share of resamples on the other side of 0, doubled)."""
    weights = image_weights(run.n_images, resamples, seed)
    point = _point(run, metric) - _point(reference, metric)
    deltas = resampled_metrics(run, weights)[metric] - resampled_metrics(reference, weights)[metric]
    deltas = deltas[np.isfinite(deltas)]
    if not np.isfinite(point) or not len(deltas):
        return PairedDifference(metric, None, None, None)
    tail = min((deltas <= 0).sum(), (deltas >= 0).sum())
    p_value = min(1.0, 2.0 * (tail + 1) / (len(deltas) + 1))
    return PairedDifference(metric, float(point), percentile_interval(deltas), float(p_value))


def _point(counts: ImageCounts, metric: str) -> float:
    return float(resampled_metrics(counts, np.ones((1, counts.n_images)))[metric][0])


def repeat_summary(
    outcomes: list[tuple], seeds: list[int], resamples: int = RESAMPLES, bootstrap_seed: int = 0, labels=LABELS
) -> dict:
    """metrics.json's ``repeats``: the split (or CV) repeated with several seeds.

    ``outcomes`` holds (y_true, y_pred, images, proba-or-None) per seed. Reports each seed's headline
    metrics, their mean and sd (ddof=1), and the pooled 95% interval over all seeds' image resamples.
    """
    per_seed, resampled = [], []
    for y_true, y_pred, images, proba in outcomes:
        counts = image_counts(y_true, y_pred, images, proba, labels)
        per_seed.append({k: _finite(v[0]) for k, v in resampled_metrics(counts, np.ones((1, counts.n_images))).items()})
        resampled.append(resampled_metrics(counts, image_weights(counts.n_images, resamples, bootstrap_seed)))
    names = per_seed[0].keys()
    return {
        "seeds": list(seeds),
        "per_seed": per_seed,
        "mean": {name: _finite(_mean(_column(per_seed, name))) for name in names},
        "sd": {name: _finite(_sd(_column(per_seed, name))) for name in names},
        "ci95_pooled": pooled_intervals(resampled),
    }


def _column(rows: list[dict], name: str) -> np.ndarray:
    return np.asarray([np.nan if r[name] is None else r[name] for r in rows], dtype=np.float64)


def _mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def _sd(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
