"""Threshold head: image-text cosine -> score by four ordered cut-points chosen on the training part.

Search. The candidate cut-points are the ``n_grid`` quantiles of the training cosines. They cut the
sorted similarities into n_grid + 1 segments; class k takes the segments between its two cuts.
Macro-F1 is a sum of one term per class, and each class's term depends only on its own interval
(TP and predicted count come from cumulative per-segment label counts), so the best 4 cuts follow
from a dynamic programme over the chain of intervals: the exact optimum over all C(n_grid, 4)
ordered combinations (3.8 M for 99) in O(5 * n_grid^2) array operations.

QWK is 1 - A/B where both A (weighted disagreements) and B (their expectation under the marginals)
are sums of per-class interval terms; Dinkelbach's method (minimise A - lambda*B by the same DP,
set lambda = A/B of the result, repeat) reaches the exact best ratio in a few rounds.

predict_proba is one-hot on the predicted score: a threshold rule ranks, it has no probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagcons.evaluate.metrics import compute_metrics
from tagcons.heads.base import Head, one_hot
from tagcons.heads.features import cosine_of
from tagcons.heads.registry import register_head
from tagcons.labels import LABELS

STUDY_FIXED_CUTS = (0.2, 0.4, 0.6, 0.8)  # the study's fixed 0.2-interval similarity -> score mapping
MAX_DINKELBACH_ROUNDS = 50


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
    return np.divide(2.0 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0) / cum.shape[1]


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
    value = np.where(invalid[0], -np.inf, terms[0, 0])
    value[last] = -np.inf  # a_1 must leave room for the other classes
    back = []
    for k in range(1, n_classes):
        candidate = value[:, None] + np.where(invalid, -np.inf, terms[k])
        back.append(np.argmax(candidate, axis=0))
        value = candidate[back[-1], np.arange(last + 1)]
        if k < n_classes - 1:
            value[last] = -np.inf
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


@register_head("threshold")
class ThresholdHead(Head):
    """Cosine similarity with four learned cut-points; ``objective`` is macro_f1 or qwk."""

    OBJECTIVES = ("macro_f1", "qwk")

    def __init__(self, objective: str = "macro_f1", n_grid: int = 99):
        self.objective = objective
        self.n_grid = n_grid

    def fit(self, X, y, groups=None):
        X, y = self._fit_input(X, y)
        self.classes_ = np.unique(y)
        self.thresholds_, self.train_objective_ = search_cuts(cosine_of(X), y, self.objective, self.n_grid)
        return self

    def predict(self, X) -> np.ndarray:
        X = self._predict_input(X)
        return scores_from_cuts(cosine_of(X), self.thresholds_, self.classes_)

    def predict_proba(self, X) -> np.ndarray:
        return one_hot(self.predict(X), self.classes_)

    def extra_test_metrics(self, X, y) -> dict:
        """The study's mapping on the same test rows: cosine in [0, 0.2) -> 1, [0.2, 0.4) -> 2, ... [0.8, 1] -> 5."""
        if len(self.classes_) != len(STUDY_FIXED_CUTS) + 1:
            return {}  # the study's mapping is for five scores
        pred = scores_from_cuts(cosine_of(X), STUDY_FIXED_CUTS, self.classes_)
        return {"study_fixed_interval": compute_metrics(y, pred, labels=self.classes_)}

    def _state(self, run_dir: Path) -> dict:
        return {"thresholds": [float(t) for t in self.thresholds_], "train_objective": float(self.train_objective_)}

    def _restore(self, run_dir: Path, state: dict) -> None:
        self.thresholds_ = np.asarray(state["thresholds"], dtype=np.float64)
        self.train_objective_ = float(state["train_objective"])
