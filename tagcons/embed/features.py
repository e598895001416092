"""Projected image and text features from a loaded model, for transformers 4.x and 5.x alike.

4.x returned the projected tensor from `get_image_features`; 5.x returns an output object whose
`pooler_output` holds it. Everything in tagcons goes through these two functions.
"""

from __future__ import annotations

import torch


def _projected(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"unexpected feature output {type(output).__name__}: no pooler_output")
    return pooled


def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return _projected(model.get_image_features(pixel_values=pixel_values))


def text_features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    return _projected(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


TEXT_INPUTS = ("input_ids", "attention_mask")  # token_type_ids and the like stay at the model's defaults


def tokenize(tokenizer, texts: list[str], max_tokens: int, padding: str = "longest") -> dict:
    """Token tensors, truncated at ``max_tokens``; ``padding`` is the backbone family's rule.

    "longest" pads to the longest text of the batch (CLIP: padding never changes a text's
    features); "max_length" pads every text to ``max_tokens`` (SigLIP pools the last position).
    Only input_ids and, where the tokenizer makes one, attention_mask are returned.
    """
    tokens = tokenizer(texts, padding=padding, truncation=True, max_length=max_tokens, return_tensors="pt")
    return {name: tokens[name] for name in TEXT_INPUTS if name in tokens}


def token_counts(tokenizer, texts: list[str]) -> list[int]:
    """Tokens of each text before truncation (special tokens included), to count what gets cut."""
    return [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
