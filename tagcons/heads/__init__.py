"""Heads on cached features: registry, pair features, threshold/logreg/mlp/lgbm, fit and predict.

Library entry points (the CLI wraps them): `fit_head(FitHeadConfig)`, `predict(PredictConfig)`.
Names load on first use (PEP 562) and head modules only when a head is asked for
(`get_head_class`), so `import tagcons.heads.registry` and a threshold fit stay light.
"""

from tagcons.lazy import lazy_exports

_EXPORTS = {
    "FitHeadConfig": "tagcons.configs",
    "FitResult": "tagcons.heads.fit",
    "fit_head": "tagcons.heads.fit",
    "fit_heads": "tagcons.heads.fit",
    "PredictConfig": "tagcons.configs",
    "PredictResult": "tagcons.heads.scoring",
    "predict": "tagcons.heads.scoring",
    "Head": "tagcons.heads.base",
    "load_head": "tagcons.heads.base",
    "FEATURE_KINDS": "tagcons.heads.features",
    "PairFeatures": "tagcons.heads.features",
    "pair_features": "tagcons.heads.features",
    "HEADS": "tagcons.heads.registry",
    "get_head_class": "tagcons.heads.registry",
    "head_names": "tagcons.heads.registry",
    "make_head": "tagcons.heads.registry",
    "register_head": "tagcons.heads.registry",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
