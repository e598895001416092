"""Heads on cached features: registry, pair features, threshold/logreg/mlp/lgbm, fit and predict.

Library entry points (the CLI wraps them): `fit_head(FitHeadConfig)`, `predict(PredictConfig)`.
Head modules load on first use (`get_head_class`), so importing this package stays light.
"""

from tagcons.heads.base import Head, load_head
from tagcons.heads.features import FEATURE_KINDS, PairFeatures, pair_features
from tagcons.heads.fit import FitHeadConfig, FitResult, fit_head
from tagcons.heads.predict import PredictConfig, PredictResult, predict
from tagcons.heads.registry import HEADS, get_head_class, head_names, make_head, register_head

__all__ = [
    "FitHeadConfig",
    "FitResult",
    "PredictConfig",
    "PredictResult",
    "fit_head",
    "predict",
    "FEATURE_KINDS",
    "HEADS",
    "Head",
    "PairFeatures",
    "get_head_class",
    "head_names",
    "load_head",
    "make_head",
    "pair_features",
    "register_head",
]
