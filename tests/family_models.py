"""Tiny SigLIP and VisionTextDualEncoder checkpoints, built offline and saved with save_pretrained.

Each has its own tokenizer trained here with the `tokenizers` library (a Unigram model for SigLIP,
WordPiece for the BERT text tower) on a few Korean and English hashtags, so `local:DIR` loads
them exactly as it would a downloaded checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
    ViTConfig,
    ViTImageProcessorPil,
)

CORPUS = [
    "#맛집",
    "#여행",
    "#카페",
    "#패션",
    "#데일리룩",
    "#오늘의코디",
    "#서울여행",
    "#먹스타그램",
    "#food",
    "#travel",
    "#coffee",
    "#fashion",
    "#ootd",
    "#daily look",
    "#seoul trip",
    "#cafe tour",
] * 20
SIGLIP_TEXT_TOKENS = 16
IMAGE_SIZE = 32


def _unigram_tokenizer(max_tokens: int) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    backend.train_from_iterator(CORPUS, trainer)
    eos = backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_tokens
    )


def _wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=150, special_tokens=specials))
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=32,
    )


def _small(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, **extra)


def save_tiny_siglip(directory: Path) -> Path:
    torch.manual_seed(0)
    tokenizer = _unigram_tokenizer(SIGLIP_TEXT_TOKENS)
    config = SiglipConfig(
        text_config=_small(
            vocab_size=len(tokenizer),
            max_position_embeddings=SIGLIP_TEXT_TOKENS,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=_small(image_size=IMAGE_SIZE, patch_size=8),
    )
    SiglipModel(config).save_pretrained(directory)
    SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_dual_encoder(directory: Path) -> Path:
    torch.manual_seed(0)
    tokenizer = _wordpiece_tokenizer()
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        ViTConfig(**_small(image_size=IMAGE_SIZE, patch_size=8)),
        BertConfig(**_small(vocab_size=len(tokenizer), max_position_embeddings=32)),
        projection_dim=24,
    )
    VisionTextDualEncoderModel(config).save_pretrained(directory)
    ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
