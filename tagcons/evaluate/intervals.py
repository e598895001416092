"""Image-clustered bootstrap intervals of the headline metrics, and paired differences between runs.

Pairs of one image are not independent (one photo, one annotator sitting), so the bootstrap
resamples whole test images: each resample draws ``n_images`` images with replacement and every
pair of a drawn image comes along. Everything is computed from confusion counts: one K x K count
per image, a [resamples, n_images] matrix of how often each image was drawn, and one matrix
product gives every resample's confusion matrix, from which all headline metrics follow in numpy.

The intervals are studentised (bootstrap-t): each resample's deviation from the estimate is divided
by that resample's own standard error, and the estimate's standard error scales the percentiles of
those t values back. Standard errors come from the infinitesimal jackknife over images (each image's
influence is the metric's gradient along its counts; gradients by finite differences at the test
rows, carried to each resample by the Hessian, so a few hundred metric evaluations whatever the
number of images). Percentile intervals covered 88-90% at the study's 33 test images; these cover
close to 95% from 20 images on (docs/intervals.md, benchmarks/intervals.py).

Metrics follow `compute_metrics` on the original rows exactly (labels fixed to the ones passed in,
zero_division=0). A resample where a metric is undefined (e.g. Spearman of a constant prediction)
counts as lying beyond both ends of its interval, half each, so it widens the interval; their number
is recorded (``bootstrap.undefined``) and logged as a warning when over 1% of the resamples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tagcons.evaluate.image_metrics import (
    RESAMPLES,
    ImageCounts,
    image_counts,
    image_rows,
    image_weights,
    metrics_of_sums,
    point_metrics,
)
from tagcons.labels import LABELS

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
BOUNDS = {
    "accuracy": (0.0, 1.0),
    "balanced_accuracy": (0.0, 1.0),
    "macro_f1": (0.0, 1.0),
    "weighted_f1": (0.0, 1.0),
    "qwk": (-1.0, 1.0),
    "spearman": (-1.0, 1.0),
    "adjacent_accuracy": (0.0, 1.0),
    "mae": (0.0, np.inf),
}
METHOD = "studentised (bootstrap-t, infinitesimal-jackknife standard errors over images)"
MANY_UNDEFINED = 0.01  # share of resamples with a metric undefined above which a warning is logged
log = logging.getLogger(__name__)


@dataclass
class Resampled:
    """One run's metrics on the test rows and on every resample, with what their standard errors need.

    ``gradients[metric]`` [m, columns] is the metric's gradient along the summed counts at each weighting
    (row 0 the test rows): each image's influence is the gradient times its counts (the infinitesimal
    jackknife), and the standard error of a weighting, or of a difference between runs, follows
    (`standard_error`).
    """

    values: dict[str, np.ndarray]  # metric -> [1 + resamples]: the test rows, then one value per resample
    gradients: dict[str, np.ndarray]  # metric -> [1 + resamples, columns]
    rows: np.ndarray  # [n_images, columns] each image's counts
    weights: np.ndarray  # [1 + resamples, n_images], row 0 all ones

    def influence(self, metric: str) -> np.ndarray:
        """[1 + resamples, n_images]: each image's influence on ``metric`` at each weighting."""
        return self.gradients[metric] @ self.rows.T


def resample(counts: ImageCounts, resamples: int = RESAMPLES, seed: int = 0) -> Resampled:
    """Metrics of the test rows (row 0) and of ``resamples`` image resamples drawn with ``seed``, and their
    gradients: exact at the test rows, carried to each resample by the Hessian (a first-order Taylor step),
    which costs a few hundred metric evaluations however many images and resamples there are."""
    weights = np.vstack([np.ones((1, counts.n_images)), image_weights(counts.n_images, resamples, seed)])
    rows = image_rows(counts)
    sums = weights @ rows
    values = metrics_of_sums(counts, sums)
    gradients, hessians = _derivatives(counts, sums[0])
    names = list(gradients)
    steps = np.split((sums - sums[0]) @ np.concatenate([hessians[n] for n in names], axis=1), len(names), axis=1)
    return Resampled(values, {n: gradients[n] + step for n, step in zip(names, steps)}, rows, weights)


def _derivatives(counts: ImageCounts, sums: np.ndarray) -> tuple[dict, dict]:
    """({metric: [columns]}, {metric: [columns, columns]}): gradient and Hessian of every metric at the
    summed counts, by forward differences (one batch of metric evaluations).

    Zero along a count that is absent: no image has it, so it never enters an influence (and a count of
    0 is where F1 and recall jump).
    """
    cells, columns = len(counts.labels) ** 2, len(sums)
    step = 1e-4 * max(float(sums[:cells].sum()), 1.0)
    unit = step * np.eye(columns)
    corners = sums + unit[:, None, :] + unit[None, :, :]  # [columns, columns, columns]: two steps each
    points = np.concatenate([sums[None], sums + unit, corners.reshape(-1, columns)])
    moved = metrics_of_sums(counts, points)
    present = np.concatenate([sums[:cells] > 0, np.ones(columns - cells, bool)])
    mask = np.outer(present, present)
    gradients, hessians = {}, {}
    for name, value in moved.items():
        f0, f1, f2 = value[0], value[1 : columns + 1], value[columns + 1 :].reshape(columns, columns)
        gradients[name] = np.where(present, (f1 - f0) / step, 0.0)
        hessians[name] = np.where(mask, (f2 - f1[:, None] - f1[None, :] + f0) / step**2, 0.0)
    return gradients, hessians


def standard_error(influence: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[m]: the infinitesimal-jackknife standard error of the metric at each weighting of the images,
    sqrt(sum_i w_i (u_i - mean_w u)^2) for the images' influences u at that weighting."""
    n_images = weights.shape[1]
    weighted = np.einsum("mn,mn->m", weights, influence)
    squares = np.einsum("mn,mn,mn->m", weights, influence, influence)
    return np.sqrt(np.maximum(squares - np.square(weighted) / n_images, 0.0))


FLAT = 0.1  # a resample whose standard error is below this share of the test rows' shows no spread


def pivot_errors(errors: np.ndarray) -> np.ndarray:
    """[resamples]: the standard errors the resamples' t* divide by. A resample without spread (se* ~ 0: every
    image where two runs differ drawn out of it) takes the test rows' se (the basic bootstrap there) instead of
    an infinite t*, which would stretch every interval of the table to the metric's bounds; NaN stays NaN."""
    resampled = errors[1:]
    return np.where(resampled <= FLAT * errors[0], errors[0], resampled)


def studentised_replicates(values: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """[resamples]: theta - t* . se for each resample's t* = (theta* - theta) / se*, the bootstrap-t
    distribution set on the estimate; its percentiles are the studentised interval's ends.

    ``values`` and ``errors`` hold the test rows first, then the resamples. NaN where the metric or its
    standard error is undefined in a resample; the resamples themselves when the test rows show no spread.
    """
    point, point_error = values[0], errors[0]
    if not np.isfinite(point):
        return np.full(len(values) - 1, np.nan)
    if not point_error > 0:
        return values[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (values[1:] - point) / pivot_errors(errors)
    t = np.where(values[1:] == point, 0.0, t)  # no movement: t is 0 even where se* is 0
    return point - t * point_error


def interval(replicates: np.ndarray, level: float = LEVEL, bounds: tuple = (-np.inf, np.inf)) -> list[float] | None:
    """[low, high] percentiles of ``replicates``, an undefined one (NaN) counted as lying beyond both ends,
    half each, so that it widens the interval instead of silently narrowing it; clipped to ``bounds``.
    None when nothing is defined or an end is unbounded."""
    replicates = np.asarray(replicates, dtype=np.float64)
    defined = replicates[~np.isnan(replicates)]
    if not len(defined):
        return None
    total, undefined = len(replicates), len(replicates) - len(defined)
    tail = (1.0 - level) / 2.0
    levels = [(q * total - 0.5 * undefined) / len(defined) for q in (tail, 1.0 - tail)]
    low, high = np.quantile(np.clip(defined, *bounds), np.clip(levels, 0.0, 1.0))
    return [float(low), float(high)] if np.isfinite(low) and np.isfinite(high) else None


def metric_bounds(metric: str, labels=LABELS) -> tuple[float, float]:
    """The values a metric can take (an interval never reaches past them); unbounded when unknown."""
    if metric in LOWER_IS_BETTER:
        return 0.0, float(max(labels) - min(labels))
    return BOUNDS.get(metric, (-np.inf, np.inf))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """[low, high] percentile interval of the defined values (None when none is defined)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return [float(low), float(high)]


def _studentised(resampled: Resampled) -> dict[str, np.ndarray]:
    """{metric: [resamples]} studentised replicates of one run."""
    return {
        name: studentised_replicates(values, standard_error(resampled.influence(name), resampled.weights))
        for name, values in resampled.values.items()
    }


def undefined_counts(replicates: dict[str, np.ndarray], resamples: int) -> dict[str, int]:
    """{metric: resamples where it is undefined}, warned about where they are many (over MANY_UNDEFINED)."""
    counts = {name: int(np.isnan(values).sum()) for name, values in replicates.items()}
    # Undefined everywhere is undefined on the test rows too (a constant baseline's QWK): no interval, no news.
    many = {name: n for name, n in counts.items() if MANY_UNDEFINED * resamples < n < resamples}
    if many:
        log.warning(
            "%s undefined in %s of %d resamples: their intervals count these as lying beyond both ends",
            ", ".join(many),
            ", ".join(str(n) for n in many.values()),
            resamples,
        )
    return counts


def bootstrap_intervals(
    y_true, y_pred, images, proba=None, resamples: int = RESAMPLES, seed: int = 0, labels=LABELS
) -> dict:
    """metrics.json's uncertainty block: ``ci95`` per headline metric, ``bootstrap``, ``n_test_images``."""
    counts = image_counts(y_true, y_pred, images, proba, labels)
    replicates = _studentised(resample(counts, resamples, seed))
    return {
        "ci95": {name: interval(values, bounds=metric_bounds(name, labels)) for name, values in replicates.items()},
        "bootstrap": {**_procedure(resamples, seed), "undefined": undefined_counts(replicates, resamples)},
        "n_test_images": counts.n_images,
    }


def _procedure(resamples: int, seed: int) -> dict:
    """metrics.json's ``bootstrap``: how the intervals were drawn."""
    return {"resamples": resamples, "seed": seed, "unit": "image", "method": METHOD}


def pooled_intervals(resampled: list[dict[str, np.ndarray]], labels=LABELS) -> dict[str, list[float] | None]:
    """One interval per metric over the (studentised) replicates of several repeats taken together
    (split-to-split variation and test-sampling variation both widen it)."""
    names = resampled[0].keys()
    pooled = {name: np.concatenate([r[name] for r in resampled]) for name in names}
    return {name: interval(values, bounds=metric_bounds(name, labels)) for name, values in pooled.items()}


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
    """Difference of ``metric`` (run - reference) with a paired, studentised image-clustered bootstrap
    interval (both runs resampled on the same images) and its two-sided p-value (the share of resamples
    whose |t*| reaches the observed |t|)."""
    values, errors = difference_resamples(resample(run, resamples, seed), resample(reference, resamples, seed), metric)
    if not np.isfinite(values[0]):
        return PairedDifference(metric, None, None, None)
    span = metric_bounds(metric, run.labels)[1] - metric_bounds(metric, run.labels)[0]
    ci95 = interval(studentised_replicates(values, errors), bounds=(-span, span))
    return PairedDifference(metric, float(values[0]), ci95, _p_value(values, errors))


def difference_resamples(run: Resampled, reference: Resampled, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, standard errors) of run - reference on the test rows (first) and every shared resample."""
    values = run.values[metric] - reference.values[metric]
    return values, standard_error(run.influence(metric) - reference.influence(metric), run.weights)


def _p_value(values: np.ndarray, errors: np.ndarray) -> float | None:
    """Two-sided bootstrap-t p-value of a difference of 0 (1 where the test rows show no spread)."""
    if not errors[0] > 0:
        return 1.0 if values[0] == 0 else None
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.abs(values[1:] - values[0]) / pivot_errors(errors)
    reached = np.where(np.isnan(t), True, t >= abs(values[0]) / errors[0])  # undefined counts against a claim
    return float(min(1.0, (reached.sum() + 1) / (len(t) + 1)))


def repeat_summary(
    outcomes: list[tuple], seeds: list[int], resamples: int = RESAMPLES, bootstrap_seed: int = 0, labels=LABELS
) -> dict:
    """metrics.json's ``repeats``: the split (or CV) repeated with several seeds.

    ``outcomes`` holds (y_true, y_pred, images, proba-or-None) per seed. Reports each seed's headline
    metrics, their mean and sd (ddof=1), and the pooled 95% interval over all seeds' image resamples.
    """
    per_seed, replicates = [], []
    for y_true, y_pred, images, proba in outcomes:
        counts = image_counts(y_true, y_pred, images, proba, labels)
        per_seed.append({k: _finite(v) for k, v in point_metrics(counts).items()})
        replicates.append(_studentised(resample(counts, resamples, bootstrap_seed)))
    names = per_seed[0].keys()
    return {
        "seeds": list(seeds),
        "per_seed": per_seed,
        "mean": {name: _finite(_mean(_column(per_seed, name))) for name in names},
        "sd": {name: _finite(_sd(_column(per_seed, name))) for name in names},
        "ci95_pooled": pooled_intervals(replicates, labels),
        "undefined_pooled": undefined_counts(
            {name: np.concatenate([r[name] for r in replicates]) for name in names}, resamples * len(outcomes)
        ),
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
