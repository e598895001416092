"""Backbone registry and loading: `clip`, `koclip`, `tiny`, or any hub id / local directory.

Every backbone is loaded the same way (model + its own image processor + its own tokenizer), so
CLIP and KoCLIP differ only by a registry entry. `trust_remote_code` is never enabled: a checkpoint
must be an architecture transformers ships (CLIP, or another dual encoder exposing
`get_image_features` / `get_text_features`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagcons.data.images import files_sha256
from tagcons.errors import BackboneUnavailableError, first_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone: a hub id, or a builder for models made in code."""

    name: str
    model_id: str
    description: str
    builder: Callable[[], tuple] | None = None


BACKBONES: dict[str, BackboneSpec] = {}


def _build_tiny() -> tuple:
    from tagcons.embed.tiny import build_tiny  # torch and transformers: only when the model is built

    return build_tiny()


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    BACKBONES[spec.name] = spec
    return spec


register_backbone(BackboneSpec("clip", "openai/clip-vit-base-patch32", "OpenAI CLIP ViT-B/32 (the study's CLIP)"))
register_backbone(BackboneSpec("koclip", "Bingsu/clip-vit-large-patch14-ko", "KoCLIP ViT-L/14 (the study's KoCLIP)"))
register_backbone(
    BackboneSpec("tiny", "tagcons/tiny-clip", "small random CLIP built offline (demo, tests)", _build_tiny)
)


@dataclass
class Backbone:
    """A loaded backbone and the facts about it that the cache and run directories record."""

    name: str
    model_id: str
    revision: str | None
    model: Any
    image_processor: Any
    tokenizer: Any
    settings: dict = field(default_factory=dict)

    @property
    def projection_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def max_text_tokens(self) -> int:
        limit = getattr(self.model.config.text_config, "max_position_embeddings", None) or 77
        return int(min(limit, self.tokenizer.model_max_length or limit))

    def save_pretrained(self, directory: str | Path) -> None:
        """Write model, processor and tokenizer so `load_backbone(directory)` gives this backbone back."""
        self.model.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


def load_backbone(name_or_path: str, revision: str | None = None) -> Backbone:
    """Load a registered name, a local directory or a hub id (in that order of lookup)."""
    spec = BACKBONES.get(name_or_path)
    if spec is not None and spec.builder is not None:
        model, image_processor, tokenizer = spec.builder()
        return _finish(Backbone(spec.name, spec.model_id, "builtin", model, image_processor, tokenizer))
    if spec is None and Path(name_or_path).is_dir():
        return _load_local(Path(name_or_path))
    model_id = spec.model_id if spec else name_or_path
    return _load_hub(spec.name if spec else name_or_path, model_id, revision)


def _load_local(directory: Path) -> Backbone:
    try:
        parts = _from_pretrained(str(directory), revision=None)
    except (OSError, ValueError, KeyError) as e:
        raise BackboneUnavailableError(
            f"{directory}: not a loadable CLIP checkpoint ({e}); the folder needs config.json, the weights, "
            "preprocessor_config.json and the tokenizer files, as written by save_pretrained"
        ) from e
    # A folder's content, not its path, identifies the weights: a fine-tuned backbone re-exported
    # to the same place must not reuse the old cache.
    return _finish(Backbone(str(directory), _local_model_id(directory), _weights_digest(directory), *parts))


def _load_hub(name: str, model_id: str, revision: str | None) -> Backbone:
    try:
        parts = _from_pretrained(model_id, revision=revision)
    except OSError as e:
        raise BackboneUnavailableError(
            f"backbone '{name}' ({model_id}) could not be loaded: the Hugging Face hub is unreachable or the id is "
            f"wrong, and it is not in the local HF cache ({first_line(e)}). Download it on a connected machine "
            f"(`huggingface-cli download {model_id}`) and copy the HF cache (HF_HOME), or save it with "
            "save_pretrained and pass that folder as --backbone"
        ) from e
    resolved = getattr(parts[0].config, "_commit_hash", None) or revision or "main"
    return _finish(Backbone(name, model_id, resolved, *parts))


def _from_pretrained(source: str, revision: str | None) -> tuple:
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    options = dict(revision=revision, trust_remote_code=False)
    model = AutoModel.from_pretrained(source, **options)
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ValueError(f"{type(model).__name__} is not a dual image-text encoder like CLIP")
    image_processor = AutoImageProcessor.from_pretrained(source, **options)
    tokenizer = AutoTokenizer.from_pretrained(source, **options)
    return model.eval(), image_processor, tokenizer


def _finish(backbone: Backbone) -> Backbone:
    backbone.settings = numeric_settings(backbone)
    log.info(
        "backbone %s (%s @ %s), projection dim %d",
        backbone.name,
        backbone.model_id,
        backbone.revision,
        backbone.projection_dim,
    )
    return backbone


def numeric_settings(backbone: Backbone) -> dict:
    """Everything besides the weights that changes the features: preprocessing and tokenisation."""
    processor = json.loads(backbone.image_processor.to_json_string())
    processor.pop("processor_class", None)
    tokenizer = backbone.tokenizer
    return {
        "image_processor": processor,
        "tokenizer": {
            "class": type(tokenizer).__name__,
            "vocab_size": len(tokenizer),
            "max_tokens": backbone.max_text_tokens,
            "padding_side": tokenizer.padding_side,
            "lowercase": bool(getattr(tokenizer, "do_lower_case", False)),
        },
    }


def _weights_digest(directory: Path) -> str:
    paths = sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")) + [directory / "config.json"]
    return "sha256:" + files_sha256(path for path in paths if path.is_file())[:20]


def _local_model_id(directory: Path) -> str:
    """The checkpoint's own name if it records one, else the folder name (never a machine path)."""
    config_path = directory / "config.json"
    recorded = json.loads(config_path.read_text()).get("_name_or_path", "") if config_path.is_file() else ""
    return recorded if recorded and not Path(recorded).is_absolute() else f"local:{directory.resolve().name}"
