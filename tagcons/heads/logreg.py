"""Logistic-regression head: standardised features, multinomial L-BFGS, C chosen by inner CV.

The inner cross-validation runs on the training part only (grouped by image when the caller passes
groups). Classes are weighted as in every head (``class_weight="balanced"``: n / (K * count) on the
rows being fitted; ``class_weight=none`` turns it off). Above ``cv_max_rows`` training rows the C
search uses a random subsample of that size, and when a dense float32 copy of the features would
exceed ``max_dense_bytes`` the final fit streams mini-batches instead: the scaler by ``partial_fit``
and a one-vs-rest SGD logistic model (``alpha = 1 / (C * n)``, the same penalty scale), so a million
pairs never sit in memory at once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from tagcons.data.splits import cv_fold_indices
from tagcons.errors import BadInputError
from tagcons.heads.base import (
    PREDICT_CHUNK,
    Head,
    chunked,
    class_weight_map,
    reading,
    require,
)
from tagcons.heads.features import PairFeatures
from tagcons.heads.params import FLOAT, FLOATS, INT, at_least, optional, positive
from tagcons.heads.registry import register_head
from tagcons.labels import LABELS
from tagcons.runtime import auto_threads, limited_threads

STREAM_CHUNK = 8192
NPZ_FILE = "logreg.npz"
NPZ_ARRAYS = ("mean", "scale", "coef", "intercept", "classes")


@register_head("logreg")
class LogregHead(Head):
    init_kind = "linear"
    PARAM_TYPES = {"C": optional(FLOAT), "Cs": FLOATS, "threads": optional(INT)}
    PARAM_RANGES = {
        "C": positive(),
        "Cs": positive(),
        "inner_folds": at_least(2),
        "max_iter": at_least(1),
        "cv_max_rows": at_least(2),
        "max_dense_bytes": at_least(0),
        "sgd_epochs": at_least(1),
    }

    def __init__(
        self,
        C=None,
        Cs=(0.001, 0.01, 0.1, 1.0),
        inner_folds=3,
        max_iter=500,
        cv_max_rows=20000,
        max_dense_bytes=2 * 1024**3,
        sgd_epochs=5,
        class_weight="balanced",
        threads=None,
        seed=42,
    ):
        self.C = C
        self.Cs = Cs
        self.inner_folds = inner_folds
        self.max_iter = max_iter
        self.cv_max_rows = cv_max_rows
        self.max_dense_bytes = max_dense_bytes
        self.sgd_epochs = sgd_epochs
        self.class_weight = class_weight
        self.threads = threads
        self.seed = seed

    def fit(self, X, y, groups=None):
        X, y = self._fit_input(X, y)
        with limited_threads(auto_threads(len(y), self.threads)):
            self.C_, self.cv_scores_ = (self.C, {}) if self.C is not None else self._search_C(X, y, groups)
            if _nbytes(X) <= self.max_dense_bytes:
                self._fit_dense(np.asarray(X, dtype=np.float32), y)
            else:
                self._fit_streaming(X, y)
        return self

    def _search_C(self, X, y, groups):
        rows = np.arange(len(y))
        if len(rows) > self.cv_max_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(rows, self.cv_max_rows, replace=False))
        dense, sub_y = np.asarray(X[rows], dtype=np.float32), y[rows]
        sub_groups = None if groups is None else np.asarray(groups)[rows]
        folds = cv_fold_indices(
            sub_y, sub_groups, "images" if groups is not None else "pairs", self.inner_folds, self.seed
        )
        folds = _fittable(folds, sub_y)
        scores = {
            float(C): float(np.mean([self._fold_score(dense, sub_y, tr, te, C) for tr, te in folds])) for C in self.Cs
        }
        return max(scores, key=lambda C: (scores[C], -C)), scores  # ties: the stronger penalty

    def _fold_score(self, X, y, train, test, C) -> float:
        scaler = StandardScaler().fit(X[train])
        model = self._lbfgs(C, y[train]).fit(scaler.transform(X[train]), y[train])
        return f1_score(y[test], model.predict(scaler.transform(X[test])), average="macro", zero_division=0)

    def _lbfgs(self, C, y) -> LogisticRegression:
        return LogisticRegression(C=C, solver="lbfgs", max_iter=self.max_iter, class_weight=self._weights(y))

    def _weights(self, y) -> dict | None:
        """{score: weight} for the scores in `y` (the rows being fitted), or None when weighting is off."""
        return class_weight_map(self.class_weight, y)

    def _fit_dense(self, X, y):
        scaler = StandardScaler().fit(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter bounds time; the fit is still usable
            model = self._lbfgs(self.C_, y).fit(scaler.transform(X), y)
        self._set(scaler.mean_, scaler.scale_, model.coef_, model.intercept_, model.classes_, multinomial=True)
        self.n_iter_ = model.n_iter_

    def _fit_streaming(self, X, y):
        scaler = StandardScaler()
        for start in range(0, len(y), STREAM_CHUNK):
            scaler.partial_fit(X[np.arange(start, min(start + STREAM_CHUNK, len(y)))])
        model = SGDClassifier(
            loss="log_loss", alpha=1.0 / (self.C_ * len(y)), class_weight=self._weights(y), random_state=self.seed
        )
        rng = np.random.default_rng(self.seed)
        for _ in range(self.sgd_epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), STREAM_CHUNK):
                batch = np.sort(order[start : start + STREAM_CHUNK])
                model.partial_fit(scaler.transform(X[batch]), y[batch], classes=np.unique(y))
        self._set(scaler.mean_, scaler.scale_, model.coef_, model.intercept_, model.classes_, multinomial=False)
        self.n_iter_ = np.atleast_1d(model.n_iter_)

    def _set(self, mean, scale, coef, intercept, classes, multinomial):
        self.mean_, self.scale_ = mean.astype(np.float64), scale.astype(np.float64)
        self.coef_, self.intercept_ = coef.astype(np.float64), intercept.astype(np.float64)
        self.classes_, self.multinomial_ = np.asarray(classes).astype(int), bool(multinomial)

    def predict_proba(self, X) -> np.ndarray:
        X = self._predict_input(X)
        with limited_threads(auto_threads(len(X), self.threads)):
            if isinstance(X, PairFeatures) and X.kind == "concat" and self._linear_logits:
                return self._pair_proba(X)
            return chunked(self._proba_block, X)

    @property
    def _linear_logits(self) -> bool:
        """logreg's own logits (a subclass with another probability model, e.g. ordinal, computes its own)."""
        return type(self)._proba_block is LogregHead._proba_block

    def _pair_proba(self, X: PairFeatures) -> np.ndarray:
        """Concatenated features are linear in the image and the text apart: their logits are computed once
        per unique image and per unique text and added per pair (a post's image is not recomputed per tag)."""
        d = X.image_embeds.shape[1]
        image_logits = self._side_logits(X.image_embeds, slice(0, d))
        text_logits = self._side_logits(X.text_embeds, slice(d, 2 * d)) + self.intercept_
        blocks = [slice(lo, lo + PREDICT_CHUNK) for lo in range(0, len(X), PREDICT_CHUNK)] or [slice(0, 0)]
        return np.concatenate(
            [self._from_logits(image_logits[X.image_index[b]] + text_logits[X.text_index[b]]) for b in blocks]
        )

    def _side_logits(self, embeds: np.ndarray, columns: slice) -> np.ndarray:
        mean, scale = self.mean_[columns].astype(np.float32), self.scale_[columns].astype(np.float32)
        weights = self.coef_[:, columns].T.astype(np.float32)
        return in_fixed_blocks(lambda rows: ((rows.astype(np.float32) - mean) / scale) @ weights, embeds)

    def _proba_block(self, block: np.ndarray) -> np.ndarray:
        block = (block - self.mean_.astype(np.float32)) / self.scale_.astype(np.float32)
        return self._from_logits(block @ self.coef_.T.astype(np.float32) + self.intercept_)

    def _from_logits(self, logits: np.ndarray) -> np.ndarray:
        if logits.shape[1] == 1:  # two classes: one logit for the second
            return np.hstack([1.0 - expit(logits), expit(logits)])
        if self.multinomial_:
            proba = softmax(logits, axis=1)
        else:  # one-vs-rest, normalised as SGDClassifier.predict_proba does
            proba = expit(logits)
            proba /= np.maximum(proba.sum(axis=1, keepdims=True), 1e-12)
        return proba

    def _state(self, run_dir: Path) -> dict:
        np.savez(
            run_dir / NPZ_FILE,
            mean=self.mean_,
            scale=self.scale_,
            coef=self.coef_,
            intercept=self.intercept_,
            classes=self.classes_,
        )
        return {
            "C": self.C_,
            "cv_scores": {str(k): v for k, v in self.cv_scores_.items()},
            "multinomial": self.multinomial_,
        }

    def _restore(self, run_dir: Path, state: dict) -> None:
        path = run_dir / NPZ_FILE
        require(path.is_file(), path, "is missing")
        scale_classes = getattr(self, "classes_", LABELS)  # head.json's classes (load_head sets them first)
        with reading(path), np.load(path, allow_pickle=False) as data:
            arrays = [data[name] for name in NPZ_ARRAYS]
            require(all(a.dtype.kind in "biuf" for a in arrays), path, "holds non-numeric arrays")
            self._set(*arrays, bool(state["multinomial"]))
        self._check_shapes(path, scale_classes)
        self.C_ = float(state["C"])
        self.cv_scores_ = {float(k): float(v) for k, v in state["cv_scores"].items()}

    def _check_shapes(self, path: Path, scale_classes=LABELS) -> None:
        d, coef, classes = self.mean_.shape, self.coef_, self.classes_
        require(self.mean_.ndim == 1 and self.scale_.shape == d, path, "mean/scale shapes differ")
        require(coef.ndim == 2 and coef.shape[1] == d[0], path, f"coef shape {coef.shape} does not fit {d[0]} features")
        require(self.intercept_.shape == (coef.shape[0],), path, "intercept and coef disagree")
        require(
            set(classes.tolist()) <= {int(c) for c in scale_classes} and len(set(classes.tolist())) == len(classes),
            path,
            "bad classes",
        )
        require(coef.shape[0] in (len(classes), 1), path, f"{coef.shape[0]} coef rows for {len(classes)} classes")
        finite = all(np.isfinite(a).all() for a in (self.mean_, self.scale_, coef, self.intercept_))
        require(finite and (self.scale_ > 0).all(), path, "holds non-finite values or zero scales")

    def input_width(self) -> int:
        return int(self.mean_.shape[0])


def _fittable(folds: list, y: np.ndarray) -> list:
    """The inner folds whose fitting side holds two scores or more (on a small table some hold one)."""
    kept = [(train, test) for train, test in folds if len(np.unique(y[train])) > 1]
    if not kept:
        raise BadInputError(
            f"the inner cross-validation that chooses C has no fold whose fitting side holds two scores "
            f"({len(y)} rows); set C yourself, e.g. --param C=1"
        )
    return kept


def _nbytes(X) -> int:
    return X.dense_nbytes if hasattr(X, "dense_nbytes") else np.asarray(X).nbytes


SIDE_BLOCK = 256


def in_fixed_blocks(product, rows: np.ndarray, block: int = SIDE_BLOCK) -> np.ndarray:
    """``product`` (a row-wise matrix product) over ``rows`` in blocks of exactly ``block`` rows, the last one
    zero-padded: BLAS picks other kernels (other rounding) for other shapes, so a row's result would depend on
    how many rows came with it, and a streamed predict's output on its chunk size."""
    parts = []
    for lo in range(0, len(rows), block):
        part = rows[lo : lo + block]
        padded = np.concatenate([part, np.zeros((block - len(part), *part.shape[1:]), part.dtype)])
        parts.append(product(padded)[: len(part)])
    return np.concatenate(parts) if parts else product(rows[:0])
