"""Simulated test sets from a known population, to check what the intervals and `compare` claim.

Each image has a latent appropriateness shared by its pairs (an image effect), each pair its own
deviation; the true score cuts the latent value at the study's score shares. A head sees the latent
value with noise, part of it per image (a head errs alike on the pairs of one photo) and part of it
shared by all heads (heads of one backbone err alike), and cuts its view at the same shares. Heads
of one population are exchangeable, so their population metrics are equal: any "significant"
difference between them is a false claim. ``population_metrics`` gives a population's metric values
from a very large sample, the targets an interval should cover.

Used by tests/test_interval_coverage.py, tests/test_simultaneous.py, benchmarks/intervals.py and
benchmarks/compare_fwer.py; no production code imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagcons.evaluate.image_metrics import ImageCounts, image_counts, metrics_from_confusion
from tagcons.labels import LABELS

STUDY_SHARES = (78 / 2022, 205 / 2022, 315 / 2022, 551 / 2022, 873 / 2022)
PAIRS_PER_IMAGE = 2022 / 172


@dataclass(frozen=True)
class Population:
    """A data-generating process; ``signal`` is the correlation of a head's view with the latent score
    (0.8: QWK about 0.7; 0.3: QWK about 0.25, the study's)."""

    signal: float = 0.8
    image_share: float = 0.3  # share of the latent variance (and of a head's noise) that is per image
    shared_noise: float = 0.5  # share of a head's noise common to all heads
    pairs_per_image: float = PAIRS_PER_IMAGE
    shares: tuple = STUDY_SHARES

    def cuts(self) -> np.ndarray:
        from scipy.special import ndtri

        return ndtri(np.cumsum(self.shares)[:-1])


def draw(population: Population, n_images: int, rng, heads: int = 1, signals=None):
    """(y_true [n], preds [heads, n], images [n], proba [heads, n, 5]) of ``n_images`` random images;
    ``signals`` (one per head) gives heads of different skill, each as a population of that signal."""
    signal = np.asarray([population.signal] * heads if signals is None else signals, dtype=np.float64)[:, None]
    heads = len(signal)
    sizes = 1 + rng.poisson(population.pairs_per_image - 1, n_images)
    images = np.repeat(np.arange(n_images), sizes)
    latent = _mixed(rng, images, n_images, population.image_share, 1)[0]
    cuts = population.cuts()
    common = _mixed(rng, images, n_images, population.image_share, 1)[0]
    own = _mixed(rng, images, n_images, population.image_share, heads)
    noise = np.sqrt(population.shared_noise) * common + np.sqrt(1 - population.shared_noise) * own
    view = signal * latent + np.sqrt(1 - signal**2) * noise
    y_true = np.searchsorted(cuts, latent) + 1
    preds = np.searchsorted(cuts, view) + 1
    return y_true, preds, images, _proba(view, signal, cuts)


def _mixed(rng, images: np.ndarray, n_images: int, image_share: float, rows: int) -> np.ndarray:
    """[rows, n] standard normal values, ``image_share`` of their variance shared within an image."""
    per_image = rng.standard_normal((rows, n_images))[:, images]
    per_pair = rng.standard_normal((rows, len(images)))
    return np.sqrt(image_share) * per_image + np.sqrt(1 - image_share) * per_pair


def _proba(view: np.ndarray, signal: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """p(true score | the head's view), the calibrated probabilities of a bivariate normal."""
    from scipy.special import ndtr

    signal = signal[..., None]
    edges = np.concatenate([[-np.inf], cuts, [np.inf]])
    cdf = ndtr((edges[None, None, :] - signal * view[..., None]) / np.sqrt(1 - signal**2))
    return np.diff(cdf, axis=-1)


def draw_counts(population: Population, n_images: int, rng, heads: int = 1, signals=None) -> list[ImageCounts]:
    """One test set's per-image counts for each head (same images, same true scores)."""
    y_true, preds, images, proba = draw(population, n_images, rng, heads, signals)
    return [image_counts(y_true, p, images, pr, LABELS) for p, pr in zip(preds, proba)]


def population_metrics(population: Population, n_images: int = 100_000, seed: int = 12345) -> dict[str, float]:
    """The population's value of every headline metric (one head), from ``n_images`` images."""
    y_true, preds, _, proba = draw(population, n_images, np.random.default_rng(seed))
    k = len(LABELS)
    confusion = np.bincount((y_true - 1) * k + preds[0] - 1, minlength=k * k).astype(np.float64)
    values = {name: float(value) for name, value in metrics_from_confusion(confusion, LABELS).items()}
    expected = proba[0] @ np.asarray(LABELS, dtype=np.float64)
    values["mae_expected"] = float(np.abs(expected - y_true).mean())
    return values
