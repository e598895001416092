"""Threshold head: image-text cosine -> score by four ordered cut-points chosen on the training part.

The search (exact over a quantile grid, or the study's own 5,000 combinations with ``search="study"``)
lives in `heads/cuts.py`, below `heads.base`, where `--decode expected` uses it too.

predict_proba is one-hot on the predicted score: a threshold rule ranks, it has no probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagcons.errors import BadInputError
from tagcons.evaluate.metrics import compute_metrics
from tagcons.heads.base import HEAD_FILE, Head, check_finite_sorted, one_hot
from tagcons.heads.cuts import (  # the search lives below heads.base, where heads.decode uses it too
    MAX_GRID,
    SEARCHES,
    STUDY_FIXED_CUTS,
    STUDY_SCORES,
    scores_from_cuts,
    search_cuts,
    study_search,
)
from tagcons.heads.features import cosine_of
from tagcons.heads.params import between, choice
from tagcons.heads.registry import register_head


@register_head("threshold")
class ThresholdHead(Head):
    """Cosine similarity with four learned cut-points; ``objective`` is macro_f1 or qwk, ``search`` exact
    (the best cuts on the quantile grid) or study (the study's 5,000 combinations, cut for cut)."""

    OBJECTIVES = ("macro_f1", "qwk")
    PROBABILISTIC = False
    PARAM_TYPES = {"objective": choice(*OBJECTIVES), "search": choice(*SEARCHES)}
    PARAM_RANGES = {"n_grid": between(1, MAX_GRID)}

    def __init__(self, objective: str = "macro_f1", n_grid: int = 99, search: str = "exact"):
        self.objective = objective
        self.n_grid = n_grid
        self.search = search

    def fit(self, X, y, groups=None):
        X, y = self._fit_input(X, y)
        self.classes_ = np.unique(y)
        if self.search not in SEARCHES:
            raise BadInputError(f"threshold search '{self.search}': choose one of {', '.join(SEARCHES)}")
        if self.search == "study":
            self._fit_study(cosine_of(X), y)
        else:
            self._check_grid()
            self.thresholds_, self.train_objective_ = search_cuts(cosine_of(X), y, self.objective, self.n_grid)
        return self

    def _check_grid(self) -> None:
        if self.n_grid < len(self.classes_) - 1:
            raise BadInputError(
                f"--param n_grid={self.n_grid}: {len(self.classes_)} scores need at least "
                f"{len(self.classes_) - 1} candidate cut-points"
            )

    def _fit_study(self, similarity: np.ndarray, y: np.ndarray) -> None:
        """The study's search: four cuts over its 1-5 scale, whichever scores the training rows hold."""
        if self.objective != "macro_f1":
            raise BadInputError("search=study optimises macro-F1, as the study did; drop --objective qwk")
        if y.min() < STUDY_SCORES[0] or y.max() > STUDY_SCORES[-1]:
            raise BadInputError("search=study cuts the study's 1-5 scale; use search=exact for another --scale")
        self.classes_ = np.asarray(STUDY_SCORES)
        self.thresholds_, self.train_objective_ = study_search(similarity, y)

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
        return {"study_fixed_interval": {**compute_metrics(y, pred, labels=self.classes_), "rows": "test"}}

    def _state(self, run_dir: Path) -> dict:
        return {"thresholds": [float(t) for t in self.thresholds_], "train_objective": float(self.train_objective_)}

    def _restore(self, run_dir: Path, state: dict) -> None:
        self.thresholds_ = np.asarray(state["thresholds"], dtype=np.float64)
        self.train_objective_ = float(state["train_objective"])
        check_finite_sorted(self.thresholds_, len(self.classes_) - 1, run_dir / HEAD_FILE, "thresholds")
