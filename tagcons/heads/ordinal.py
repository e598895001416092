"""Ordinal head: a cumulative-link (all-threshold logistic) model on standardised pair features.

The model is skordinal's `LogisticAT` (scikit-learn compatible, maintained): one linear projection
f(x) = w.x and four ordered thresholds b_1 <= ... <= b_4, with P(score <= k | x) = sigmoid(b_k - f(x)).
It uses the order of the scores (a 2 mistaken for a 1 costs less than a 2 mistaken for a 5) with
one weight vector instead of five, so it needs fewer rows than multinomial logistic regression.

Everything else is the logreg head's: standardisation, the penalty chosen by inner cross-validation
on the training part (grouped by image), one-thread fits on small tables. The penalty is the same
scale: ``alpha = 1 / C``. The model needs a dense copy of the features (no streaming fit).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from tagcons.errors import BadInputError
from tagcons.heads.logreg import LogregHead
from tagcons.heads.registry import register_head

MODEL_FILE = "ordinal.npz"


def _logistic_at(C: float, max_iter: int, class_weight=None):
    from skordinal.classifiers import LogisticAT

    return LogisticAT(alpha=1.0 / C, max_iter=max_iter, class_weight=class_weight)


@register_head("ordinal")
class OrdinalHead(LogregHead):
    """All-threshold cumulative-link logistic model; C (= 1 / alpha) chosen by inner CV on the training part."""

    def _lbfgs(self, C, y):
        return _logistic_at(C, self.max_iter, self._weights(y))  # the balanced weights every head uses

    def _fit_dense(self, X, y):
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter bounds time; the fit is still usable
            model = self._lbfgs(self.C_, y).fit(scaler.transform(X), y)
        self._set_model(scaler.mean_, scaler.scale_, model)
        self.n_iter_ = np.atleast_1d(model.n_iter_)

    def _fit_streaming(self, X, y):
        raise BadInputError(
            f"the ordinal head needs the features in memory ({X.shape[0]} x {X.shape[1]} is above "
            f"max_dense_bytes={self.max_dense_bytes}); raise --param max_dense_bytes=... or use the logreg head"
        )

    def _set_model(self, mean, scale, model):
        self.mean_, self.scale_ = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        self.model_ = model
        self.classes_ = np.asarray(model.classes_).astype(int)
        self.coef_, self.thresholds_ = np.asarray(model.coef_), np.asarray(model.thresholds_)

    def _proba_block(self, block: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(block, np.float64) - self.mean_) / self.scale_
        return self.model_.predict_proba(scaled)  # one column per class in classes_

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
        model = _logistic_at(state["C"], self.max_iter)
        with np.load(run_dir / MODEL_FILE, allow_pickle=False) as data:
            model.coef_, model.thresholds_ = data["coef"], data["thresholds"]
            model.classes_, model.n_features_in_ = data["classes"], int(data["coef"].shape[0])
            self._set_model(data["mean"], data["scale"], model)
        self.C_ = state["C"]
        self.cv_scores_ = {float(k): v for k, v in state["cv_scores"].items()}
