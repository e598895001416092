"""LightGBM head, set up for ~2,000 rows of dense embeddings: small trees, strong feature subsampling,
early stopping on an inner validation part carved from the training rows (grouped by image when
groups are given).

``objective="multiclass"`` (default) predicts class probabilities. Rows are weighted by balanced class
weights under both objectives, as in every head (``class_weight=none`` turns it off).
``objective="regression"`` fits the score as a number and rounds it with four cut-points chosen by the
threshold head's exact search (macro-F1) on the *inner validation part's* predictions: predictions on
the boosted rows themselves are over-spread (the trees fit them), so cuts chosen there misplace the
test rows. Its predict_proba is one-hot.
The model is saved as LightGBM's text format, which loads without executing code.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightgbm as lgb
import numpy as np

from tagcons.data.splits import validation_indices
from tagcons.heads.base import (
    HEAD_FILE,
    Head,
    check_finite_sorted,
    class_weighting,
    one_hot,
    reading,
    require,
)
from tagcons.heads.cuts import scores_from_cuts, search_cuts
from tagcons.heads.decode import identity_cuts
from tagcons.heads.params import INT, at_least, between, choice, either, optional, positive
from tagcons.heads.registry import register_head
from tagcons.runtime import auto_threads

log = logging.getLogger(__name__)
MODEL_FILE = "lgbm.txt"


def _trees_complete(text: bytes) -> bool:
    """LightGBM aborts the whole process on a damaged model text, so check its framing first: the trees
    between `Tree=0` and `end of trees` must be exactly as long as the `tree_sizes=` header says."""
    _, found, rest = text.partition(b"\ntree_sizes=")
    start, end = text.find(b"\nTree=0\n") + 1, text.find(b"\nend of trees")
    if not found or start <= 0 or end < start:
        return False
    try:
        sizes = [int(size) for size in rest.split(b"\n", 1)[0].split()]
    except ValueError:
        return False
    return sum(sizes) == end + 1 - start


@register_head("lgbm")
class LGBMHead(Head):
    OBJECTIVES = ("multiclass", "regression")
    PARAM_TYPES = {"objective": choice(*OBJECTIVES), "threads": optional(INT)}
    PARAM_RANGES = {
        "num_leaves": between(2, 131072),  # LightGBM's own limits
        "max_depth": either(-1, at_least(1)),  # -1: no limit
        "learning_rate": positive(),
        "n_estimators": at_least(1),
        "early_stopping_rounds": at_least(1),
        "feature_fraction": between(0, 1, low_open=True),
        "bagging_fraction": between(0, 1, low_open=True),
        "min_data_in_leaf": at_least(0),
        "lambda_l2": at_least(0),
        "val_size": between(0, 1, low_open=True, high_open=True),
    }

    def __init__(
        self,
        objective="multiclass",
        num_leaves=15,
        max_depth=6,
        learning_rate=0.05,
        n_estimators=1000,
        early_stopping_rounds=50,
        feature_fraction=0.2,
        bagging_fraction=0.8,
        min_data_in_leaf=20,
        lambda_l2=1.0,
        val_size=0.1,
        class_weight="balanced",
        threads=None,
        seed=42,
    ):
        self.objective = objective
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.min_data_in_leaf = min_data_in_leaf
        self.lambda_l2 = lambda_l2
        self.val_size = val_size
        self.class_weight = class_weight
        self.threads = threads
        self.seed = seed

    @property
    def probabilistic(self) -> bool:
        return self.objective == "multiclass"  # regression rounds a number: its probabilities are one-hot

    def _params(self, n_rows: int) -> dict:
        params = dict(
            num_leaves=self.num_leaves,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            feature_fraction=self.feature_fraction,
            bagging_fraction=self.bagging_fraction,
            bagging_freq=1,
            min_data_in_leaf=self.min_data_in_leaf,
            lambda_l2=self.lambda_l2,
            num_threads=auto_threads(n_rows, self.threads) or 0,
            seed=self.seed,
            deterministic=True,
            force_col_wise=True,
            verbosity=-1,
        )
        if self.objective == "multiclass":
            return {**params, "objective": "multiclass", "num_class": len(self.classes_), "metric": "multi_logloss"}
        return {**params, "objective": "regression", "metric": "l2"}

    def fit(self, X, y, groups=None):
        X, y = self._fit_input(X, y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        codes = codes.reshape(-1)
        X = np.asarray(X, dtype=np.float32)
        kind = "images" if groups is not None else "pairs"
        fit_idx, val_idx = validation_indices(np.arange(len(y)), y, groups, kind, self.val_size, self.seed)
        target = codes if self.objective == "multiclass" else y.astype(np.float64)
        balanced = class_weighting(self.class_weight, y[fit_idx], self.classes_)
        weight = None if balanced is None else balanced[codes]
        train = lgb.Dataset(X[fit_idx], target[fit_idx], weight=None if weight is None else weight[fit_idx])
        valid = lgb.Dataset(
            X[val_idx], target[val_idx], weight=None if weight is None else weight[val_idx], reference=train
        )
        self.booster_ = lgb.train(
            self._params(len(y)),
            train,
            num_boost_round=self.n_estimators,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        trees = self.booster_.current_iteration()  # fewer than best_iteration when no tree could split any more
        self.best_iteration_ = min(int(self.booster_.best_iteration or trees), trees)
        self.cuts_ = None
        if self.objective == "regression":
            self.cuts_ = self._cuts(X[val_idx], y[val_idx])  # held-out rows only
        return self

    def _cuts(self, X_val: np.ndarray, y_val: np.ndarray) -> np.ndarray:
        """Cut-points on the inner validation part's predictions; halfway between scores when it holds one."""
        if len(np.unique(y_val)) < 2:
            log.warning(
                "lgbm regression: the inner validation part holds only score %s, so the predictions round to "
                "the nearest score; a larger --param val_size (now %s) lets it choose its cut-points",
                int(y_val[0]),
                self.val_size,
            )
            return identity_cuts(self.classes_)
        return search_cuts(self._raw(X_val), y_val, "macro_f1")[0]

    def _raw(self, X) -> np.ndarray:
        threads = auto_threads(len(X), self.threads) or 0
        return self.booster_.predict(
            np.asarray(X, dtype=np.float32), num_iteration=self.best_iteration_, num_threads=threads
        )

    def predict_proba(self, X) -> np.ndarray:
        X = self._predict_input(X)
        raw = self._raw(X)
        if self.objective == "regression":
            return one_hot(scores_from_cuts(raw, self.cuts_, self.classes_), self.classes_)
        return raw.reshape(len(raw), -1)

    def predict(self, X) -> np.ndarray:
        X = self._predict_input(X)
        if self.objective == "regression":
            return scores_from_cuts(self._raw(X), self.cuts_, self.classes_)
        return super().predict(X)

    def _state(self, run_dir: Path) -> dict:
        self.booster_.save_model(str(run_dir / MODEL_FILE), num_iteration=self.best_iteration_)
        cuts = None if self.cuts_ is None else [float(c) for c in self.cuts_]
        return {"best_iteration": self.best_iteration_, "cuts": cuts}

    def _restore(self, run_dir: Path, state: dict) -> None:
        path = run_dir / MODEL_FILE
        require(path.is_file(), path, "is missing")
        with reading(path):
            text = path.read_bytes()
            require(_trees_complete(text), path, "is truncated or edited (its trees do not add up to tree_sizes)")
            self.booster_ = lgb.Booster(model_str=text.decode("utf-8"))
        self.best_iteration_ = int(state["best_iteration"])
        self.cuts_ = None if state["cuts"] is None else np.asarray(state["cuts"], dtype=np.float64)
        self._check_model(path, run_dir / HEAD_FILE)

    def _check_model(self, path: Path, head_file: Path) -> None:
        outputs = len(self.classes_) if self.objective == "multiclass" else 1
        found = self.booster_.num_model_per_iteration()
        require(found == outputs, path, f"predicts {found} values per row; the {self.objective} head needs {outputs}")
        trees = self.booster_.current_iteration()
        require(1 <= self.best_iteration_ <= trees, path, f"holds {trees} boosting rounds of {self.best_iteration_}")
        if self.objective == "regression":
            require(self.cuts_ is not None, head_file, "a regression head needs its cuts")
            check_finite_sorted(self.cuts_, len(self.classes_) - 1, head_file, "cuts")

    def input_width(self) -> int:
        return int(self.booster_.num_feature())
