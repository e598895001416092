"""Ordinal head: the cumulative logit (proportional-odds) model, maximum likelihood, on standardised features.

One linear projection f(x) = w.x and ordered thresholds b_1 < ... < b_{K-1}, with
P(score <= k | x) = sigmoid(b_k - f(x)), fitted by maximising the class-weighted log-likelihood with
a ridge penalty |w|^2 / (2C) (`tagcons.heads.cumulative_logit`; equal to statsmodels' ``OrderedModel``
without the penalty). It uses the order of the scores (a 2 mistaken for a 1 costs less than a 2
mistaken for a 5) with one weight vector instead of five, so it needs fewer rows than multinomial
logistic regression. ``predict`` is the model's latent-interval rule (the median of the predicted
distribution): argmax can skip a score whose interval is narrow, the median never does; in a run,
``--decode median`` decodes the calibrated probabilities the same way.

Everything else is the logreg head's: standardisation, the penalty chosen by inner cross-validation
on the training part (grouped by image, scored by the latent-interval predictions), one-thread fits on
small tables, the balanced class weights. The model needs a dense copy of the features (no streaming
fit). Runs saved when this head fitted skordinal's all-threshold surrogate (``LogisticAT``) load
unchanged: the saved projection and thresholds define the same probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagcons.errors import BadInputError
from tagcons.heads.base import chunked
from tagcons.heads.cumulative_logit import CumulativeLogit, class_proba, median_class
from tagcons.heads.logreg import LogregHead
from tagcons.heads.registry import register_head

MODEL_FILE = "ordinal.npz"


@register_head("ordinal")
class OrdinalHead(LogregHead):
    """Cumulative logit model (maximum likelihood, ridge penalty 1 / C chosen by inner CV on the training part)."""

    def _lbfgs(self, C, y):
        return CumulativeLogit(C, self.max_iter, self._weights(y))  # the balanced weights every head uses

    def _fit_dense(self, X, y):
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(X)
        model = self._lbfgs(self.C_, y).fit(scaler.transform(X), y)
        self._set_model(scaler.mean_, scaler.scale_, model.coef_, model.thresholds_, model.classes_)
        self.n_iter_ = np.atleast_1d(model.n_iter_)

    def _fit_streaming(self, X, y):
        raise BadInputError(
            f"the ordinal head needs the features in memory ({X.shape[0]} x {X.shape[1]} is above "
            f"max_dense_bytes={self.max_dense_bytes}); raise --param max_dense_bytes=... or use the logreg head"
        )

    def _set_model(self, mean, scale, coef, thresholds, classes):
        self.mean_, self.scale_ = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        self.coef_, self.thresholds_ = np.asarray(coef, np.float64), np.asarray(thresholds, np.float64)
        self.classes_ = np.asarray(classes).astype(int)

    def _latent(self, block: np.ndarray) -> np.ndarray:
        return ((np.asarray(block, np.float64) - self.mean_) / self.scale_) @ self.coef_

    def _proba_block(self, block: np.ndarray) -> np.ndarray:
        return class_proba(self._latent(block), self.thresholds_)  # one column per class in classes_

    def predict(self, X) -> np.ndarray:
        """The score whose latent interval holds w.x: the median of the predicted distribution."""
        X = self._predict_input(X)
        return self.classes_[chunked(lambda block: median_class(self._latent(block), self.thresholds_), X)]

    def _state(self, run_dir: Path) -> dict:
        np.savez(
            run_dir / MODEL_FILE,
            mean=self.mean_,
            scale=self.scale_,
            coef=self.coef_,
            thresholds=self.thresholds_,
            classes=self.classes_,
        )
        return {"C": self.C_, "cv_scores": {str(k): v for k, v in self.cv_scores_.items()}}

    def _restore(self, run_dir: Path, state: dict) -> None:
        with np.load(run_dir / MODEL_FILE, allow_pickle=False) as data:
            self._set_model(data["mean"], data["scale"], data["coef"], data["thresholds"], data["classes"])
        self.C_ = state["C"]
        self.cv_scores_ = {float(k): v for k, v in state["cv_scores"].items()}
