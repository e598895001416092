"""Backbones (registry + loading) and the batched feature extractor."""

from tagcons.embed.backbones import BACKBONES, Backbone, BackboneSpec, load_backbone, register_backbone
from tagcons.embed.features import image_features, text_features, tokenize

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "load_backbone",
    "register_backbone",
    "image_features",
    "text_features",
    "tokenize",
]
