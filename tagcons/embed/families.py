"""Backbone families: what differs between dual image-text encoders, held as data.

A family is chosen from the checkpoint's own config (`model_type`), never from its name, and holds
the few facts the rest of tagcons needs: how wide the features are, how texts must be padded, and
how the parameters of each tower are named (for fine-tuning's freezing and layer-wise decay). The
extractor, the cache fingerprint and `finetune` all go through it, one code path per operation.

- ``clip``: CLIP and CLIP-architecture checkpoints (KoCLIP). Texts are padded to the longest in the
  batch: CLIP pools the end-of-text token, so padding never changes a text's features.
- ``siglip``: SigLIP and SigLIP 2 fixed-resolution checkpoints. The text tower pools the *last*
  position, so texts must be padded to the model's fixed length exactly as in training
  (``padding="max_length"``); with ``padding="longest"`` the features change and retrieval
  collapses. The length comes from the tokenizer's config (``model_max_length``), lowercasing
  from the tokenizer itself (``do_lower_case``).
- ``dual-encoder``: transformers' ``VisionTextDualEncoderModel`` (a ViT and a BERT-like text
  tower joined by two projections), e.g. Bingsu/vitB32_bert_ko_small_clip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tagcons.errors import BackboneUnavailableError


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    pad_to_max_length: bool
    # A block's parameters in either tower: group 1 the tower, group 2 the block index.
    layer_pattern: str
    # Each tower's parameters above its last block (final norm, pooling head, projection).
    tower_tops: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def feature_width(self, config) -> int:
        """Width of the features `get_image_features` / `get_text_features` return."""
        width = getattr(config, "projection_dim", None)
        if width is None:  # SigLIP: no joint projection, the text head's output size
            text = config.text_config
            width = getattr(text, "projection_size", None) or text.hidden_size
        return int(width)

    def text_padding(self) -> str:
        return "max_length" if self.pad_to_max_length else "longest"

    def layer_regex(self) -> re.Pattern:
        return re.compile(self.layer_pattern)


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


register_family(
    Family(
        "clip",
        ("clip",),
        pad_to_max_length=False,
        layer_pattern=r"^(vision_model|text_model)\.encoder\.layers\.(\d+)\.",
        tower_tops={
            "vision_model": ("vision_model.post_layernorm", "visual_projection"),
            "text_model": ("text_model.final_layer_norm", "text_projection"),
        },
    )
)
register_family(
    Family(
        "siglip",
        ("siglip",),
        pad_to_max_length=True,
        layer_pattern=r"^(vision_model|text_model)\.encoder\.layers\.(\d+)\.",
        tower_tops={
            "vision_model": ("vision_model.post_layernorm", "vision_model.head"),
            "text_model": ("text_model.final_layer_norm", "text_model.head"),
        },
    )
)
register_family(
    Family(
        "dual-encoder",
        ("vision-text-dual-encoder",),
        pad_to_max_length=False,
        layer_pattern=r"^(vision_model|text_model)\.encoder\.layers?\.(\d+)\.",
        tower_tops={
            "vision_model": ("vision_model.layernorm", "vision_model.pooler", "visual_projection"),
            "text_model": ("text_model.pooler", "text_projection"),
        },
    )
)

# Architectures transformers ships that tagcons cannot treat as fixed-size dual encoders yet.
UNSUPPORTED = {
    "siglip2": "SigLIP 2 NaFlex checkpoints (variable resolution, model_type 'siglip2') are not supported; "
    "use a fixed-resolution SigLIP 2 checkpoint such as google/siglip2-base-patch16-224",
}


def family_names() -> list[str]:
    return sorted(FAMILIES)


def family_of(config) -> Family:
    """The family of a loaded checkpoint, from its config's model_type."""
    model_type = getattr(config, "model_type", None)
    if model_type in UNSUPPORTED:
        raise BackboneUnavailableError(UNSUPPORTED[model_type])
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    supported = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise BackboneUnavailableError(
        f"model_type '{model_type}' is not a supported image-text dual encoder; supported: {supported}"
    )
