"""The `tiny` backbone: a small CLIP built offline, the same on every machine.

Weights come from NumPy's PCG64 generator in parameter-name order rather than from torch's
initialisers, so the features do not change with the torch version or the platform. The tokenizer
is byte-level (every UTF-8 byte is a token, no merges): it reads Korean, English and emoji alike
without a vocabulary file to download. Random weights carry no semantics, but a random projection
of pixels keeps colour and layout and a random text encoder keeps token identity, which is enough
for heads to learn from on the demo set and for every test.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

try:  # transformers 5.x: the PIL backend by name (the default one wants torchvision)
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # transformers 4.x
    from transformers import CLIPImageProcessor

TINY_SEED = 20250101
BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"
MAX_TEXT_TOKENS = 64
IMAGE_SIZE = 64


def tiny_config() -> CLIPConfig:
    byte_vocab = 256
    text = dict(
        vocab_size=byte_vocab + 3,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TEXT_TOKENS,
        bos_token_id=byte_vocab,
        eos_token_id=byte_vocab + 1,
        pad_token_id=byte_vocab + 2,
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    byte_tokens = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(sorted(byte_tokens))}
    for special in (BOS, EOS, PAD):
        vocab[special] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=MAX_TEXT_TOKENS,
        padding_side="right",
    )


def build_tiny_image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def build_tiny_model() -> CLIPModel:
    model = CLIPModel(tiny_config())
    rng = np.random.Generator(np.random.PCG64(TINY_SEED))
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            parameter.copy_(torch.from_numpy(_initial_value(name, tuple(parameter.shape), rng)))
    return model.eval()


def _initial_value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name == "logit_scale":
        return np.full(shape, math.log(1 / 0.07), np.float32)
    if "norm" in name:  # LayerNorm: identity, so activations keep their scale
        return (np.ones if name.endswith("weight") else np.zeros)(shape, np.float32)
    if name.endswith("bias"):
        return np.zeros(shape, np.float32)
    fan_in = shape[-1] if len(shape) > 1 else 1
    std = 0.02 if "embedding" in name else 1.0 / math.sqrt(fan_in)
    return rng.normal(0.0, std, size=shape).astype(np.float32)


def build_tiny():
    """(model, image_processor, tokenizer), identical on every call and machine."""
    return build_tiny_model(), build_tiny_image_processor(), build_tiny_tokenizer()
