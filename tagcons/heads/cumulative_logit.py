"""The cumulative logit (proportional-odds) model, fitted by maximum likelihood.

P(score <= k | x) = sigmoid(b_k - w.x) for the K - 1 boundaries between the K scores seen, with
b_1 < ... < b_{K-1}: one weight vector and ordered thresholds (McCullagh, 1980; statsmodels'
``OrderedModel(distr="logit")``, R's ``MASS::polr``). The fit maximises the (class-weighted)
log-likelihood sum_i s_i log P(y_i | x_i) minus the ridge penalty |w|^2 / (2C), the penalty scale of
scikit-learn's LogisticRegression; thresholds are not penalised. L-BFGS runs on an unconstrained
parametrisation (b_1, then log-gaps) with the exact gradient.

``predict`` is the model's latent-interval rule: the score whose interval (b_{k-1}, b_k] holds w.x,
which is the median of the predicted distribution (the smallest score with P(score <= k) >= 1/2).
Argmax can skip a score whose interval is narrow: the median never does.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit


def thresholds_of(params: np.ndarray) -> np.ndarray:
    """Ordered thresholds from the unconstrained parameters: b_1 = t_1, b_k = b_{k-1} + exp(t_k)."""
    return np.cumsum(np.concatenate([params[:1], np.exp(params[1:])]))


def _params_of(thresholds: np.ndarray) -> np.ndarray:
    return np.concatenate([thresholds[:1], np.log(np.diff(thresholds))])


def cumulative_proba(latent: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """P(score <= k) [n, K-1] for the latent scores w.x."""
    return expit(thresholds[None, :] - latent[:, None])


def class_proba(latent: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """P(score = k) [n, K]: differences of the cumulative probabilities."""
    cumulative = cumulative_proba(latent, thresholds)
    n = len(latent)
    return np.diff(np.hstack([np.zeros((n, 1)), cumulative, np.ones((n, 1))]), axis=1)


def median_class(latent: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Index of the score whose latent interval holds each w.x (the median of its distribution)."""
    return np.searchsorted(thresholds, latent, side="left")


def _row_terms(latent: np.ndarray, thresholds: np.ndarray, codes: np.ndarray):
    """Per row: log P(y | x), and its derivatives with respect to the upper (u = b_y - f) and lower
    (l = b_{y-1} - f) arguments (0 where the boundary is infinite), computed stably."""
    k = len(thresholds) + 1
    has_upper, has_lower = codes < k - 1, codes > 0
    upper = np.where(has_upper, thresholds[np.minimum(codes, k - 2)] - latent, np.inf)
    lower = np.where(has_lower, thresholds[np.maximum(codes - 1, 0)] - latent, -np.inf)
    gap = upper - lower  # > 0; inf at either edge
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        # sigmoid(u) - sigmoid(l) = sigmoid(u) * sigmoid(-l) * (1 - exp(-(u - l)))
        log_p = log_expit(upper) + log_expit(-lower) + np.log(-np.expm1(-gap))
        inner = np.where(np.isfinite(gap), 1.0 / np.expm1(gap), 0.0)
    d_upper = np.where(has_upper, expit(-upper) + inner, 0.0)
    d_lower = np.where(has_lower, -expit(lower) - inner, 0.0)
    return log_p, d_upper, d_lower


def negative_log_likelihood(X, codes, coef, thresholds, sample_weight=None) -> float:
    """-sum_i s_i log P(y_i | x_i) (codes: 0-based score index of each row)."""
    weight = np.ones(len(codes)) if sample_weight is None else sample_weight
    return float(-(weight * _row_terms(X @ coef, thresholds, codes)[0]).sum())


def _objective(packed, X, codes, weight, penalty, scale):
    d = X.shape[1]
    coef, params = packed[:d], packed[d:]
    thresholds = thresholds_of(params)
    log_p, d_upper, d_lower = _row_terms(X @ coef, thresholds, codes)
    loss = -(weight * log_p).sum() + 0.5 * penalty * coef @ coef
    grad_coef = X.T @ (weight * (d_upper + d_lower)) + penalty * coef
    k = len(thresholds) + 1  # d_upper (d_lower) is 0 on rows without an upper (lower) boundary
    grad_b = -np.bincount(np.minimum(codes, k - 2), weights=weight * d_upper, minlength=k - 1)
    grad_b -= np.bincount(np.maximum(codes - 1, 0), weights=weight * d_lower, minlength=k - 1)
    tail = np.cumsum(grad_b[::-1])[::-1]  # d loss / d t: b_k depends on t_1 and on every gap up to k
    grad_params = np.concatenate([tail[:1], tail[1:] * np.exp(params[1:])])
    return loss / scale, np.concatenate([grad_coef, grad_params]) / scale


def fit_cumulative_logit(X, codes, n_classes: int, C: float | None, sample_weight=None, max_iter: int = 500):
    """(coef, thresholds, n_iter) maximising the penalised weighted log-likelihood; C None: no penalty."""
    X = np.asarray(X, dtype=np.float64)
    weight = np.ones(len(codes)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    share = np.array([weight[codes == c].sum() for c in range(n_classes)]) / weight.sum()
    start = np.log(np.cumsum(share)[:-1]) - np.log1p(-np.cumsum(share)[:-1])  # the ML thresholds at w = 0
    penalty = 0.0 if C is None else 1.0 / C
    packed = np.concatenate([np.zeros(X.shape[1]), _params_of(start)])
    result = minimize(
        _objective,
        packed,
        args=(X, codes, weight, penalty, weight.sum()),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": 1e-8, "ftol": 1e-12},
    )
    d = X.shape[1]
    return result.x[:d], thresholds_of(result.x[d:]), int(result.nit)


class CumulativeLogit:
    """The model as a small estimator: fit(X, y), predict (latent interval), predict_proba, learned
    ``coef_``, ``thresholds_`` and ``classes_``."""

    def __init__(self, C: float | None = 1.0, max_iter: int = 500, class_weight: dict | None = None):
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight

    def fit(self, X, y):
        y = np.asarray(y).astype(int)
        self.classes_ = np.unique(y)
        codes = np.searchsorted(self.classes_, y)
        weight = None if self.class_weight is None else np.array([self.class_weight[int(c)] for c in y], float)
        self.coef_, self.thresholds_, self.n_iter_ = fit_cumulative_logit(
            X, codes, len(self.classes_), self.C, weight, self.max_iter
        )
        return self

    def latent(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef_

    def predict_proba(self, X) -> np.ndarray:
        return class_proba(self.latent(X), self.thresholds_)

    def predict(self, X) -> np.ndarray:
        return self.classes_[median_class(self.latent(X), self.thresholds_)]
