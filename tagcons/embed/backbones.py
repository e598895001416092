"""Backbone registry and loading: registry aliases, `hf:ORG/NAME[@REV]`, `local:DIR` or a bare name.

Every backbone is loaded the same way (model + its own image processor + its own tokenizer), so
CLIP and KoCLIP differ only by a registry entry, and what differs between architectures (CLIP,
SigLIP, VisionTextDualEncoder) is its family (`tagcons.embed.families`), chosen from the
checkpoint's config. `trust_remote_code` is never enabled: a checkpoint must be an architecture
transformers ships.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagcons.data.images import files_sha256
from tagcons.embed.families import Family, family_of
from tagcons.errors import BackboneUnavailableError, BadInputError, first_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone: a hub id, or a builder for models made in code."""

    name: str
    model_id: str
    description: str
    builder: Callable[[], tuple] | None = None
    # Languages the text tower was trained on ("multilingual" for many); None: unknown, no warning.
    languages: tuple[str, ...] | None = None


BACKBONES: dict[str, BackboneSpec] = {}
SOURCE_PREFIXES = ("hf:", "local:")


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    BACKBONES[spec.name] = spec
    return spec


register_backbone(
    BackboneSpec("clip", "openai/clip-vit-base-patch32", "OpenAI CLIP ViT-B/32 (the study's CLIP)", languages=("en",))
)
register_backbone(
    BackboneSpec(
        "koclip", "Bingsu/clip-vit-large-patch14-ko", "KoCLIP ViT-L/14 (the study's KoCLIP)", languages=("ko",)
    )
)
register_backbone(
    BackboneSpec(
        "siglip2",
        "google/siglip2-base-patch16-224",
        "SigLIP 2 B/16 at 224 px, multilingual text tower (Gemma tokenizer)",
        languages=("multilingual",),
    )
)
register_backbone(
    BackboneSpec(
        "vit-bert-ko",
        "Bingsu/vitB32_bert_ko_small_clip",
        "ViT-B/32 image tower with a Korean BERT text tower (VisionTextDualEncoder)",
        languages=("ko",),
    )
)


def _build_tiny() -> tuple:
    from tagcons.embed.tiny import build_tiny  # torch and transformers: only when the model is built

    return build_tiny()


register_backbone(
    BackboneSpec("tiny", "tagcons/tiny-clip", "small random CLIP built offline (demo, tests)", _build_tiny)
)
BUILTIN_REVISION = "builtin"


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
    languages: tuple[str, ...] | None = None

    @property
    def family(self) -> Family:
        return family_of(self.model.config)

    @property
    def projection_dim(self) -> int:
        return self.family.feature_width(self.model.config)

    @property
    def max_text_tokens(self) -> int:
        limit = getattr(self.model.config.text_config, "max_position_embeddings", None) or 77
        return int(min(limit, self.tokenizer.model_max_length or limit))

    def tokenize(self, texts: list[str]) -> dict:
        """Token tensors as the family's padding rule asks (input_ids, and attention_mask where used)."""
        from tagcons.embed.features import tokenize  # torch: only when texts are encoded

        return tokenize(self.tokenizer, texts, self.max_text_tokens, self.family.text_padding())

    def save_pretrained(self, directory: str | Path) -> None:
        """Write model, processor and tokenizer so `load_backbone(directory)` gives this backbone back."""
        self.model.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


@dataclass(frozen=True)
class BackboneSource:
    """Where a backbone comes from: a registry alias, a hub id (with revision) or a local folder."""

    kind: str  # "registry" | "hub" | "local"
    reference: str
    revision: str | None = None


def parse_source(text: str, revision: str | None = None) -> BackboneSource:
    """`hf:ORG/NAME[@REV]` and `local:DIR` are explicit; a bare name is an alias, a folder or a hub id."""
    if text.startswith("hf:"):
        return _hub_source(text[len("hf:") :], revision)
    if text.startswith("local:"):
        return _local_source(Path(text[len("local:") :]))
    is_folder = Path(text).is_dir()
    if text in BACKBONES and is_folder:
        raise BadInputError(
            f"--backbone {text} is both the registry alias '{text}' ({BACKBONES[text].model_id}) and a folder here; "
            f"write --backbone hf:{BACKBONES[text].model_id} (or {text} from a folder without that name) for the "
            f"registry's model, or --backbone local:{text} for the folder"
        )
    if text in BACKBONES:
        return BackboneSource("registry", text, revision)
    return BackboneSource("local", text) if is_folder else BackboneSource("hub", text, revision)


def _hub_source(reference: str, revision: str | None) -> BackboneSource:
    model_id, _, pinned = reference.partition("@")
    if not model_id or "/" not in model_id:
        raise BadInputError(f"--backbone hf:{reference}: write hf:ORG/NAME or hf:ORG/NAME@REVISION")
    if pinned and revision and pinned != revision:
        raise BadInputError(
            f"--backbone hf:{reference} pins revision {pinned} but --revision says {revision}; keep one"
        )
    return BackboneSource("hub", model_id, pinned or revision)


def _local_source(directory: Path) -> BackboneSource:
    if not directory.is_dir():
        raise BadInputError(f"--backbone local:{directory}: no such folder; pass a folder written by save_pretrained")
    return BackboneSource("local", str(directory))


def load_backbone(name_or_path: str, revision: str | None = None) -> Backbone:
    """Load a backbone from any source `parse_source` accepts."""
    source = parse_source(name_or_path, revision)
    if source.kind == "local":
        return _finish(_load_local(Path(source.reference)))
    if source.kind == "hub":
        return _finish(_load_hub(source.reference, source.reference, source.revision))
    spec = BACKBONES[source.reference]
    if spec.builder is not None:
        model, image_processor, tokenizer = spec.builder()
        backbone = Backbone(spec.name, spec.model_id, BUILTIN_REVISION, model, image_processor, tokenizer)
    else:
        backbone = _load_hub(spec.name, spec.model_id, source.revision)
    backbone.languages = spec.languages
    return _finish(backbone)


def backbone_identity(name_or_path: str, revision: str | None = None) -> tuple[str, str | None]:
    """(model_id, revision) that `load_backbone` would record, found without loading anything; the
    revision is None where only loading can tell (a hub id without --revision)."""
    source = parse_source(name_or_path, revision)
    if source.kind == "local":
        directory = Path(source.reference)
        return _local_model_id(directory), _weights_digest(directory)
    if source.kind == "hub":
        return source.reference, source.revision
    spec = BACKBONES[source.reference]
    return spec.model_id, (BUILTIN_REVISION if spec.builder is not None else source.revision)


def _load_local(directory: Path) -> Backbone:
    try:
        parts = _from_pretrained(str(directory), revision=None)
    except (OSError, ValueError, KeyError) as e:
        raise BackboneUnavailableError(
            f"{directory}: not a loadable image-text checkpoint ({e}); the folder needs config.json, the weights, "
            "preprocessor_config.json and the tokenizer files, as written by save_pretrained"
        ) from e
    # A folder's content, not its path, identifies the weights: a fine-tuned backbone re-exported
    # to the same place must not reuse the old cache.
    return Backbone(str(directory), _local_model_id(directory), _weights_digest(directory), *parts)


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
    return Backbone(name, model_id, resolved, *parts)


def _from_pretrained(source: str, revision: str | None) -> tuple:
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    options = dict(revision=revision, trust_remote_code=False)
    model = AutoModel.from_pretrained(source, **options)
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ValueError(f"{type(model).__name__} is not a dual image-text encoder like CLIP")
    family_of(model.config)  # refuses architectures tagcons has no family for, naming the supported ones
    image_processor = AutoImageProcessor.from_pretrained(source, **options)
    tokenizer = AutoTokenizer.from_pretrained(source, **options)
    return model.eval(), image_processor, tokenizer


def _finish(backbone: Backbone) -> Backbone:
    backbone.settings = numeric_settings(backbone)
    log.info(
        "backbone %s (%s @ %s, family %s), feature width %d",
        backbone.name,
        backbone.model_id,
        backbone.revision,
        backbone.family.name,
        backbone.projection_dim,
    )
    return backbone


def numeric_settings(backbone: Backbone) -> dict:
    """Everything besides the weights that changes the features: preprocessing and tokenisation."""
    processor = json.loads(backbone.image_processor.to_json_string())
    processor.pop("processor_class", None)
    tokenizer = backbone.tokenizer
    text = {
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "max_tokens": backbone.max_text_tokens,
        "padding_side": tokenizer.padding_side,
        "lowercase": bool(getattr(tokenizer, "do_lower_case", False)),
    }
    family = backbone.family
    if family.name != "clip":  # added for other families only, so existing CLIP caches keep their fingerprint
        text["padding"] = family.text_padding()
    settings = {"image_processor": processor, "tokenizer": text}
    return settings if family.name == "clip" else {**settings, "family": family.name}


def _weights_digest(directory: Path) -> str:
    paths = sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")) + [directory / "config.json"]
    return "sha256:" + files_sha256(path for path in paths if path.is_file())[:20]


def _local_model_id(directory: Path) -> str:
    """The checkpoint's own name if it records one, else the folder name (never a machine path)."""
    config_path = directory / "config.json"
    recorded = json.loads(config_path.read_text()).get("_name_or_path", "") if config_path.is_file() else ""
    return recorded if recorded and not Path(recorded).is_absolute() else f"local:{directory.resolve().name}"
