"""XGBoost head, the study's published setting: at most 500 trees of depth 6, learning rate 0.05, row and
column subsampling 0.8, early stopping after 20 rounds without a better log loss on an inner validation
part of 10% of the training rows (grouped by image, i.e. by post, when groups are given), balanced sample
weights on both parts.

It trains with xgboost's own `xgb.train` (``multi:softprob`` over the scores seen), so a validation
split that leaves a rare score out of the fit rows still trains; the model is saved in xgboost's JSON
format, which loads without executing code. xgboost is imported only when the head fits or loads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagcons.data.splits import validation_indices
from tagcons.heads.base import Head, chunked, class_weighting, reading, require
from tagcons.heads.params import INT, at_least, between, optional, positive
from tagcons.heads.registry import register_head
from tagcons.runtime import auto_threads

MODEL_FILE = "xgb.json"
SHARE = between(0.0, 1.0, low_open=True)


@register_head("xgb")
class XGBHead(Head):
    PARAM_TYPES = {"threads": optional(INT)}
    PARAM_RANGES = {
        "n_estimators": at_least(1),
        "max_depth": at_least(1),
        "learning_rate": positive(),
        "subsample": SHARE,
        "colsample_bytree": SHARE,
        "early_stopping_rounds": at_least(1),
        "val_size": between(0.0, 0.5, low_open=True),
    }

    def __init__(
        self,
        n_estimators=500,
        max_depth=6,
        learning_rate=0.05,
        subsample=0.8,
        colsample_bytree=0.8,
        early_stopping_rounds=20,
        val_size=0.1,
        class_weight="balanced",
        threads=None,
        seed=42,
    ):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.early_stopping_rounds = early_stopping_rounds
        self.val_size = val_size
        self.class_weight = class_weight
        self.threads = threads
        self.seed = seed

    def _params(self, n_rows: int) -> dict:
        return {
            "objective": "multi:softprob",
            "num_class": len(self.classes_),
            "eval_metric": "mlogloss",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "tree_method": "hist",
            "nthread": auto_threads(n_rows, self.threads) or 0,
            "seed": self.seed,
            "verbosity": 0,
        }

    def fit(self, X, y, groups=None):
        import xgboost as xgb

        X, y = self._fit_input(X, y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        X, codes = np.asarray(X, dtype=np.float32), codes.reshape(-1)
        kind = "images" if groups is not None else "pairs"
        fit_idx, val_idx = validation_indices(np.arange(len(y)), y, groups, kind, self.val_size, self.seed)
        balanced = class_weighting(self.class_weight, y[fit_idx], self.classes_)
        weight = np.ones(len(y)) if balanced is None else balanced[codes]
        train = xgb.DMatrix(X[fit_idx], label=codes[fit_idx], weight=weight[fit_idx])
        valid = xgb.DMatrix(X[val_idx], label=codes[val_idx], weight=weight[val_idx])
        self.booster_ = xgb.train(
            self._params(len(y)),
            train,
            num_boost_round=self.n_estimators,
            evals=[(valid, "validation")],
            early_stopping_rounds=self.early_stopping_rounds,
            verbose_eval=False,
        )
        self.best_iteration_ = int(self.booster_.best_iteration) + 1  # rounds kept
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = self._predict_input(X)
        return chunked(self._proba_block, X)

    def _proba_block(self, block: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        matrix = xgb.DMatrix(np.asarray(block, dtype=np.float32))
        proba = self.booster_.predict(matrix, iteration_range=(0, self.best_iteration_))
        return np.asarray(proba, dtype=np.float64).reshape(len(block), len(self.classes_))

    def _state(self, run_dir: Path) -> dict:
        self.booster_.save_model(str(run_dir / MODEL_FILE))
        return {"best_iteration": self.best_iteration_, "n_features": self.n_features_in_}

    def _restore(self, run_dir: Path, state: dict) -> None:
        import xgboost as xgb

        path = run_dir / MODEL_FILE
        require(path.is_file(), path, "is missing")
        with reading(path):
            booster = xgb.Booster()
            booster.load_model(str(path))
        self.booster_, self.best_iteration_ = booster, int(state["best_iteration"])
        self.n_features_in_ = int(booster.num_features())
        rounds = booster.num_boosted_rounds()
        require(1 <= self.best_iteration_ <= rounds, path, f"holds {rounds} boosting rounds of {self.best_iteration_}")
        outputs = int(booster.attr("num_class") or _num_class(booster))
        require(
            outputs == len(self.classes_), path, f"predicts {outputs} classes; head.json names {len(self.classes_)}"
        )

    def input_width(self) -> int:
        return int(self.booster_.num_features())


def _num_class(booster) -> int:
    """Classes of a softprob booster, from its saved configuration."""
    import json

    return int(json.loads(booster.save_config())["learner"]["learner_model_param"]["num_class"])
