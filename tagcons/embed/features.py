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


def tokenize(tokenizer, texts: list[str], max_tokens: int) -> dict:
    """Pad to the longest text of the batch (not to max length), truncating what is too long."""
    return tokenizer(texts, padding="longest", truncation=True, max_length=max_tokens, return_tensors="pt")
