"""SVM head, the study's published setting: standardised features, scikit-learn's SVC with an RBF kernel,
C 1.0, gamma "scale", balanced class weights, seed 42.

Probabilities follow the project's calibration path rather than libsvm's internal Platt cross-validation:
the one-vs-one decision values become scikit-learn's one-vs-rest scores (votes plus a bounded confidence),
their softmax is the raw probability, and fit-head fits its temperature on the validation part like every
other head's. The argmax is SVC's own vote, ties broken by confidence (scikit-learn's ``break_ties=True``).
The fitted machine is saved as arrays (support vectors, dual coefficients, intercepts, per-class support
counts, gamma, the scaler) in one npz read without pickle; predictions are computed from them in numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from tagcons.heads.base import Head, chunked, class_weight_map, reading, require
from tagcons.heads.params import FLOAT, INT, ParamType, at_least, either, optional, positive
from tagcons.heads.registry import register_head
from tagcons.runtime import auto_threads, limited_threads

NPZ_FILE = "svm.npz"
NPZ_ARRAYS = ("mean", "scale", "support_vectors", "dual_coef", "intercept", "n_support", "gamma")
KERNEL_CHUNK = 2048  # test rows per kernel block: 2,048 x 10,000 support vectors in float64 = 160 MB


def _gamma_setting(text: str):
    if text == "scale":
        return text
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


@register_head("svm")
class SVMHead(Head):
    PARAM_TYPES = {
        "C": FLOAT,
        "gamma": ParamType("scale or a number above 0", _gamma_setting),
        "max_iter": INT,
        "threads": optional(INT),
    }
    PARAM_RANGES = {"C": positive(), "max_iter": either(-1, at_least(1))}

    def __init__(self, C=1.0, gamma="scale", class_weight="balanced", max_iter=-1, threads=None, seed=42):
        self.C = C
        self.gamma = gamma  # "scale": scikit-learn's 1 / (n_features * variance of the standardised X)
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.threads = threads
        self.seed = seed

    def fit(self, X, y, groups=None):
        X, y = self._fit_input(X, y)
        X = np.asarray(X, dtype=np.float64)
        scaler = StandardScaler().fit(X)
        self.mean_, self.scale_ = scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)
        Z = (X - self.mean_) / self.scale_
        self.gamma_ = _scale_gamma(Z) if self.gamma == "scale" else float(_gamma_setting(str(self.gamma)))
        model = SVC(
            C=self.C,
            kernel="rbf",
            gamma=self.gamma_,
            class_weight=class_weight_map(self.class_weight, y),
            max_iter=self.max_iter,
            decision_function_shape="ovo",
            random_state=self.seed,
        )
        with limited_threads(auto_threads(len(y), self.threads)):
            model.fit(Z, y)
        self._set(model)
        self.n_iter_ = np.asarray(model.n_iter_)  # solver iterations per one-vs-one pair
        return self

    def _set(self, model: SVC) -> None:
        """Keep libsvm's sign convention (scikit-learn flips it for two classes): pair (i, j) > 0 means i."""
        flip = -1.0 if len(model.classes_) == 2 else 1.0
        self.classes_ = np.asarray(model.classes_).astype(int)
        self.support_vectors_ = np.asarray(model.support_vectors_, dtype=np.float64)
        self.dual_coef_ = flip * np.asarray(model.dual_coef_, dtype=np.float64)
        self.intercept_ = flip * np.asarray(model.intercept_, dtype=np.float64)
        self.n_support_ = np.asarray(model.n_support_, dtype=np.int64)

    def decision_ovo(self, Z: np.ndarray) -> np.ndarray:
        """[rows, K(K-1)/2] one-vs-one decision values of standardised rows, pairs (0,1), (0,2), ..., (K-2,K-1)."""
        kernel = _rbf(Z, self.support_vectors_, self.gamma_)
        starts = np.concatenate([[0], np.cumsum(self.n_support_)])
        k, values = len(self.classes_), []
        for i in range(k):
            for j in range(i + 1, k):
                si, sj = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
                value = kernel[:, si] @ self.dual_coef_[j - 1, si] + kernel[:, sj] @ self.dual_coef_[i, sj]
                values.append(value + self.intercept_[len(values)])
        return np.column_stack(values)

    def predict_proba(self, X) -> np.ndarray:
        X = self._predict_input(X)
        return chunked(self._proba_block, X, KERNEL_CHUNK)

    def _proba_block(self, block: np.ndarray) -> np.ndarray:
        Z = (np.asarray(block, dtype=np.float64) - self.mean_) / self.scale_
        return softmax(_ovr_scores(self.decision_ovo(Z), len(self.classes_)), axis=1)

    def _state(self, run_dir: Path) -> dict:
        arrays = dict(
            mean=self.mean_,
            scale=self.scale_,
            support_vectors=self.support_vectors_,
            dual_coef=self.dual_coef_,
            intercept=self.intercept_,
            n_support=self.n_support_,
            gamma=np.asarray([self.gamma_]),
        )
        np.savez(run_dir / NPZ_FILE, **arrays)
        return {"n_support_vectors": int(len(self.support_vectors_))}

    def _restore(self, run_dir: Path, state: dict) -> None:
        path = run_dir / NPZ_FILE
        require(path.is_file(), path, "is missing")
        with reading(path), np.load(path, allow_pickle=False) as saved:
            require(set(NPZ_ARRAYS) <= set(saved.files), path, f"lacks one of {', '.join(NPZ_ARRAYS)}")
            arrays = {name: np.asarray(saved[name]) for name in NPZ_ARRAYS}
        self._check(arrays, path)
        self.mean_, self.scale_ = arrays["mean"].astype(np.float64), arrays["scale"].astype(np.float64)
        self.support_vectors_ = arrays["support_vectors"].astype(np.float64)
        self.dual_coef_, self.intercept_ = (
            arrays["dual_coef"].astype(np.float64),
            arrays["intercept"].astype(np.float64),
        )
        self.n_support_, self.gamma_ = arrays["n_support"].astype(np.int64), float(arrays["gamma"][0])
        self.n_features_in_ = int(len(self.mean_))

    def _check(self, arrays: dict, path: Path) -> None:
        k, (n_sv, width) = len(self.classes_), arrays["support_vectors"].shape
        require(arrays["mean"].shape == arrays["scale"].shape == (width,), path, "scaler and support vectors differ")
        require(arrays["dual_coef"].shape == (k - 1, n_sv), path, f"dual_coef is not {k - 1} x {n_sv}")
        require(arrays["intercept"].shape == (k * (k - 1) // 2,), path, "intercept does not match the classes")
        require(arrays["n_support"].shape == (k,) and arrays["n_support"].sum() == n_sv, path, "n_support is wrong")
        finite = all(np.isfinite(arrays[name]).all() for name in NPZ_ARRAYS)
        require(finite and arrays["gamma"][0] > 0, path, "holds non-finite values or a gamma that is not positive")

    def input_width(self) -> int:
        return int(len(self.mean_))


def _scale_gamma(Z: np.ndarray) -> float:
    """scikit-learn's gamma="scale": 1 / (n_features * X.var()), 1.0 for constant X."""
    variance = float(Z.var())
    return 1.0 / (Z.shape[1] * variance) if variance > 0 else 1.0


def _rbf(A: np.ndarray, B: np.ndarray, gamma: float) -> np.ndarray:
    squared = (A * A).sum(axis=1)[:, None] + (B * B).sum(axis=1)[None, :] - 2.0 * A @ B.T
    return np.exp(-gamma * np.maximum(squared, 0.0))


def _ovr_scores(ovo: np.ndarray, k: int) -> np.ndarray:
    """scikit-learn's one-vs-rest scores from one-vs-one decisions: votes plus confidences squashed into (-1/3, 1/3)."""
    votes, confidence = np.zeros((len(ovo), k)), np.zeros((len(ovo), k))
    pair = 0
    for i in range(k):
        for j in range(i + 1, k):
            votes[:, i] += ovo[:, pair] >= 0
            votes[:, j] += ovo[:, pair] < 0
            confidence[:, i] += ovo[:, pair]
            confidence[:, j] -= ovo[:, pair]
            pair += 1
    return votes + confidence / (3 * (np.abs(confidence) + 1))
