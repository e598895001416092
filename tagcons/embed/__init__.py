"""Backbones (registry + loading) and the batched feature extractor.

Names load on first use (PEP 562): `features` imports torch, which a no-op embed rerun never needs.
"""

from tagcons.lazy import lazy_exports

_EXPORTS = {
    "BACKBONES": "tagcons.embed.backbones",
    "Backbone": "tagcons.embed.backbones",
    "BackboneSpec": "tagcons.embed.backbones",
    "load_backbone": "tagcons.embed.backbones",
    "register_backbone": "tagcons.embed.backbones",
    "image_features": "tagcons.embed.features",
    "text_features": "tagcons.embed.features",
    "tokenize": "tagcons.embed.features",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
