"""Ordered cut-points on one number (a cosine, an expected score): the exact search and the study's.

The threshold head cuts the image-text cosine with them; `--decode expected` and lgbm's regression
cut the expected score. Below `heads.base`, so the decoding rule (`heads.decode`) can use it too.

Search. The candidate cut-points are the ``n_grid`` quantiles of the training cosines. They cut the
sorted similarities into n_grid + 1 segments; class k takes the segments between its two cuts.
Macro-F1 is a sum of one term per class, and each class's term depends only on its own interval
(TP and predicted count come from cumulative per-segment label counts), so the best 4 cuts follow
from a dynamic programme over the chain of intervals: the exact optimum over all C(n_grid, 4)
ordered combinations (3.8 M for 99) in O(5 * n_grid^2) array operations.

QWK is 1 - A/B where both A (weighted disagreements) and B (their expectation under the marginals)
are sums of per-class interval terms; Dinkelbach's method (minimise A - lambda*B by the same DP,
set lambda = A/B of the result, repeat) reaches the exact best ratio in a few rounds.

``search="study"`` reproduces the study's own search instead, cut for cut: 100 candidates drawn by
``np.random.seed(42); sorted(np.random.uniform(0.05, 0.95, 100))``, only the first 5,000 of
``itertools.combinations(candidates, 4)`` in that order (so the first two cuts stay near 0.055 and
0.07), each scored by scikit-learn's macro ``f1_score`` and the first best kept. It is vectorised
(all 5,000 combinations at once) and keeps the same cut-points as the study's loop.

"""

from __future__ import annotations

from itertools import combinations, islice

import numpy as np

from tagcons.labels import LABELS

STUDY_FIXED_CUTS = (0.2, 0.4, 0.6, 0.8)  # the study's fixed 0.2-interval similarity -> score mapping
STUDY_SCORES = LABELS  # the study's 1-5 scale (search=study cuts it in five)
K = len(STUDY_FIXED_CUTS) + 1
MAX_DINKELBACH_ROUNDS = 50
SEARCHES = ("exact", "study")
MAX_GRID = 2000  # the search holds [K, n_grid, n_grid] tables: 2,000 candidates already take 160 MB for 5 scores
STUDY_SEED, STUDY_CANDIDATES, STUDY_RANGE, STUDY_COMBINATIONS = 42, 100, (0.05, 0.95), 5000


def scores_from_cuts(similarity: np.ndarray, cuts, classes=LABELS) -> np.ndarray:
    """The class whose rank is the number of cut-points at or below the similarity (K classes, K-1 cuts)."""
    return np.asarray(classes)[(np.asarray(similarity)[:, None] >= np.asarray(cuts)[None, :]).sum(axis=1)]


def _segment_counts(similarity: np.ndarray, codes: np.ndarray, grid: np.ndarray, k: int) -> np.ndarray:
    """Cumulative class counts: cum[s, c] = rows of class c in segments < s; shape [n_grid + 2, k]."""
    segment = np.searchsorted(grid, similarity, side="right")
    counts = np.zeros((len(grid) + 1, k))
    np.add.at(counts, (segment, codes), 1.0)
    return np.vstack([np.zeros((1, k)), np.cumsum(counts, axis=0)])


def _interval_tables(cum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """per_class[a, b, c] = rows of class c in segments [a, b); predicted[a, b] = all rows there."""
    per_class = cum[None, :, :] - cum[:, None, :]
    return per_class, per_class.sum(axis=2)


def _macro_f1_terms(cum: np.ndarray) -> np.ndarray:
    """terms[k, a, b] = F1 of class k if it takes segments [a, b), divided by K."""
    per_class, predicted = _interval_tables(cum)
    true_total = cum[-1]
    denominator = predicted[None, :, :] + true_total[:, None, None]
    tp = np.moveaxis(per_class, 2, 0)
    return 2.0 * tp / np.maximum(denominator, 1) / cum.shape[1]  # 0 where no row is true or predicted (tp is 0)


def _qwk_parts(cum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A-terms (weighted observed disagreement) and B-terms (expected) per class interval."""
    k = cum.shape[1]
    labels = np.arange(k)
    weights = (labels[:, None] - labels[None, :]) ** 2 / (k - 1) ** 2  # [true, pred]
    per_class, predicted = _interval_tables(cum)
    observed = np.einsum("abc,ck->kab", per_class, weights)
    expected_weight = cum[-1] @ weights / cum[-1].sum()  # u_k: expected weight of one row predicted k
    return observed, expected_weight[:, None, None] * predicted[None, :, :]


def best_chain(terms: np.ndarray) -> tuple[np.ndarray, float]:
    """Maximise sum_k terms[k, a_k, a_{k+1}] over 0 = a_0 < a_1 < ... < a_{K-1} < a_K = last; exact DP.

    Returns the K-1 inner boundaries and the best total (K = terms.shape[0] classes).
    """
    n_classes = terms.shape[0]
    last = terms.shape[1] - 1
    invalid = ~np.triu(np.ones((last + 1, last + 1), dtype=bool), k=1)  # need a < b
    value = np.where(invalid[0], -np.inf, terms[0, 0])  # a class ending at ``last`` leaves no room: invalid masks it
    back = []
    for k in range(1, n_classes):
        candidate = value[:, None] + np.where(invalid, -np.inf, terms[k])
        back.append(np.argmax(candidate, axis=0))
        value = candidate[back[-1], np.arange(last + 1)]
    cuts = [last]
    for pointers in reversed(back):
        cuts.append(int(pointers[cuts[-1]]))
    return np.asarray(cuts[1:][::-1]), float(value[last])


def search_cuts(similarity: np.ndarray, y: np.ndarray, objective: str = "macro_f1", n_grid: int = 99):
    """Best K-1 cut-points (values) on the quantile grid for the K classes in y; returns (cuts, objective value)."""
    grid = np.quantile(similarity, np.arange(1, n_grid + 1) / (n_grid + 1))
    classes, codes = np.unique(y, return_inverse=True)
    cum = _segment_counts(similarity, codes.reshape(-1), grid, len(classes))
    if objective == "macro_f1":
        boundaries, best = best_chain(_macro_f1_terms(cum))
    else:
        boundaries, best = _best_qwk(cum)
    return grid[boundaries - 1], best


def study_candidates() -> list[float]:
    """The study's cut-point candidates: np.random.seed(42); sorted(np.random.uniform(0.05, 0.95, 100))."""
    return sorted(np.random.RandomState(STUDY_SEED).uniform(*STUDY_RANGE, STUDY_CANDIDATES))  # legacy seeding


def study_combinations() -> np.ndarray:
    """Candidate indices of the first 5,000 of itertools.combinations(candidates, 4), in order: [5000, 4]."""
    return np.asarray(list(islice(combinations(range(STUDY_CANDIDATES), K - 1), STUDY_COMBINATIONS)))


def study_search(similarity: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """The study's search over its 5,000 candidate combinations; the first best wins, as in its loop.

    Vectorised through per-segment label counts: a row's score under cuts (c1..c4) only depends on how
    many candidates lie at or below its similarity, so each combination's confusion counts are
    differences of cumulative counts, and its macro-F1 is computed as scikit-learn's f1_score does
    (the mean over the scores that are true or predicted; F1 0 where a score is one and not the other).
    """
    candidates = np.asarray(study_candidates())
    codes = np.asarray(y).astype(int) - STUDY_SCORES[0]
    cum = _segment_counts(np.asarray(similarity), codes, candidates, K)  # [101 + 1, K]
    combos = study_combinations()
    edges = np.concatenate(
        [np.zeros((len(combos), 1), int), combos + 1, np.full((len(combos), 1), len(candidates) + 1)], axis=1
    )
    counts = cum[edges[:, 1:]] - cum[edges[:, :-1]]  # [combination, predicted score, true score]
    tp = np.diagonal(counts, axis1=1, axis2=2)
    denominator = counts.sum(axis=2) + cum[-1][None, :]  # predicted + true, per score
    f1 = 2.0 * tp / np.maximum(denominator, 1)  # 0 where a score is neither true nor predicted (tp is 0)
    present = denominator > 0
    scores = f1.sum(axis=1, where=present) / present.sum(axis=1)
    best = int(np.argmax(scores))  # the first maximum: the study's loop replaced its best only on a strict gain
    return candidates[combos[best]], float(scores[best])


def _ratio(observed: np.ndarray, expected: np.ndarray, boundaries: np.ndarray) -> float:
    edges = np.concatenate([[0], boundaries, [observed.shape[1] - 1]])
    a = sum(observed[k, edges[k], edges[k + 1]] for k in range(observed.shape[0]))
    b = sum(expected[k, edges[k], edges[k + 1]] for k in range(observed.shape[0]))
    return a / b


def _best_qwk(cum: np.ndarray) -> tuple[np.ndarray, float]:
    observed, expected = _qwk_parts(cum)
    boundaries, _ = best_chain(_macro_f1_terms(cum))  # a sensible start; any feasible chain works
    ratio = _ratio(observed, expected, boundaries)
    for _ in range(MAX_DINKELBACH_ROUNDS):
        candidate, _ = best_chain(-(observed - ratio * expected))
        new_ratio = _ratio(observed, expected, candidate)
        if new_ratio >= ratio - 1e-12:
            break
        boundaries, ratio = candidate, new_ratio
    return boundaries, 1.0 - ratio
