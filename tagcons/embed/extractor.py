"""`tagcons embed`: encode each unique image and text once into the HDF5 cache.

Reader / compute / writer are separate: `ImageFiles` + `BatchPreprocessor` decode and preprocess in
DataLoader workers (the encoder never sees a path), `encode_*` run the model, and the cache's
`CacheWriter` owns the file layout and commits each chunk atomically, so a crash loses at most the
chunk in flight and a rerun encodes only what is missing.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from tagcons import distributed
from tagcons.cache import CacheMeta, CacheWriter, merge_parts, shard_of
from tagcons.cache.lock import read_only_message
from tagcons.cache.rows import l2_normalise
from tagcons.configs import EmbedConfig
from tagcons.data.images import (
    ImageLoadError,
    check_image_keys,
    file_sha256,
    open_image,
    reduced_side,
    resolve_image_path,
)
from tagcons.data.pairs import load_pairs
from tagcons.embed.backbones import BACKBONES, Backbone, backbone_identity, load_backbone, parse_source
from tagcons.embed.scripts import warn_if_unread_script
from tagcons.embed.templates import check_templates, template_attr
from tagcons.errors import BadInputError, StrictFailure
from tagcons.evaluate.provenance import TRAINED_KEYS_SETTING, backbone_trained_keys
from tagcons.runtime import compute_dtype_name, resolve_device, resolve_dtype

if TYPE_CHECKING:  # torch loads with the model: a rerun with nothing new never imports it
    import torch

log = logging.getLogger(__name__)
MISSING_FILE = ""  # sha256 recorded for a file that does not exist
DECODE_MODES = ("cpu", "gpu")
FAILED_BEFORE = "failed in an earlier run; the file has not changed since"


@dataclass
class EmbedSummary:
    cache: Path
    images_new: int = 0
    images_cached: int = 0
    images_failed: int = 0
    texts_new: int = 0
    texts_cached: int = 0
    texts_truncated: int = 0  # of the new texts, how many the tokenizer's limit cut
    truncated_example: str | None = None
    image_seconds: float = 0.0
    text_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    shard: tuple[int, int] | None = None
    rank: int = 0  # under torchrun the counts are totals over all ranks; only rank 0 reports them

    COUNTS = ("images_new", "images_cached", "images_failed", "texts_new", "texts_cached")

    @property
    def images_per_second(self) -> float:
        return self.images_new / self.image_seconds if self.image_seconds else 0.0

    @property
    def texts_per_second(self) -> float:
        return self.texts_new / self.text_seconds if self.text_seconds else 0.0


def run_embed(config: EmbedConfig) -> EmbedSummary:
    """Embed what the cache lacks; raise StrictFailure (after saving) when --strict and images failed."""
    started = time.perf_counter()
    _check_config(config)
    table = load_pairs(config.data, config.columns, strip_hash=config.strip_hash, require_labels=False)
    check_image_keys(config.images, table.unique_images())
    context = distributed.setup(config.device, resolve=False)  # the device is resolved when a model loads
    try:
        summary = _embed_with_context(config, table, context)
    finally:
        context.close()
    summary.elapsed_seconds = time.perf_counter() - started
    if summary.rank == 0:
        _log_summary(summary)
    if config.strict and summary.images_failed:
        example = next(iter(summary.failures.items()), None)  # under torchrun this rank may have none
        raise StrictFailure(
            f"{summary.images_failed} image(s) could not be embedded (--strict); see the cache's "
            f"failed group" + (f", e.g. {example}" if example else "")
        )
    return summary


@dataclass
class _Job:
    """What one process needs to encode its share."""

    config: EmbedConfig
    backbone: Backbone
    writer: CacheWriter
    shard: tuple[int, int] | None
    device: torch.device
    dtype: torch.dtype


def _embed_with_context(config: EmbedConfig, table, context: distributed.DistContext) -> EmbedSummary:
    shard = context.shard or config.shard
    summary = EmbedSummary(Path(config.out), shard=shard)
    # The lock comes first (a second writer is refused at once, not after the model loads), then the
    # plan from the file hashes: a rerun with nothing new never imports transformers nor loads a model.
    with CacheWriter(config.out, None, shard=shard) as writer:
        images = plan_images(writer, config.images, _in_shard(table.unique_images(), shard), config.workers)
        texts = _in_shard(table.unique_texts(), shard)
        if context.world_size == 1 and _nothing_new(config, writer, images, texts):
            _record_cached(summary, images, texts)
            log.info("%s: everything is cached already; the model was not loaded", config.out)
            return summary
        job = _start_job(config, writer, shard, context)
        warn_if_unread_script(job.backbone, table.unique_texts())
        _embed_images(job, images, summary)
        _embed_texts(job, texts, summary)
        writer.annotate(texts_truncated=writer.previous_attr("texts_truncated", 0) + summary.texts_truncated)
        if shard is None:
            writer.consolidate(progress=config.progress)
    if context.world_size > 1:
        _merge_after_all_ranks(context, config)
        totals = context.sum_counts([getattr(summary, name) for name in EmbedSummary.COUNTS])
        for name, total in zip(EmbedSummary.COUNTS, totals):
            setattr(summary, name, total)
        summary.rank = context.rank
    return summary


def _start_job(config: EmbedConfig, writer: CacheWriter, shard, context: distributed.DistContext) -> _Job:
    """Load the model and bind the writer to its settings (refusing a cache computed another way)."""
    if not writer.writable:
        raise BadInputError(read_only_message(writer.path))
    backbone = load_backbone(config.backbone, config.revision)
    device = context.device or resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    backbone.model.to(device=device, dtype=dtype)
    writer.bind(cache_meta(backbone, config, dtype))
    return _Job(config, backbone, writer, shard, device, dtype)


def _nothing_new(config: EmbedConfig, writer: CacheWriter, images: ImagePlan, texts: list[str]) -> bool:
    """Every image and text of this run is in the consolidated cache, computed with the settings asked
    for as far as they are known without loading the model (anything unsure takes the full path)."""
    if images.todo or writer.has_pending_parts() or not writer.known_texts().issuperset(texts):
        return False
    stored = writer.stored_attrs()
    return stored is not None and _same_known_settings(config, stored)


def _same_known_settings(config: EmbedConfig, stored: dict) -> bool:
    model_id, revision = backbone_identity(config.backbone, config.revision)
    settings = json.loads(stored.get("settings") or "{}")
    compute_dtype = compute_dtype_name(config.dtype, config.device)
    expected = {
        "model_id": model_id,
        "text_template": template_attr(config.text_templates),
        "store_dtype": config.store_dtype,
        "strip_hash": config.strip_hash,
        "compute_dtype": compute_dtype,
    }
    found = {**settings, **{k: stored.get(k) for k in ("model_id", "text_template", "store_dtype")}}
    same_revision = revision is None or revision == (stored.get("revision") or None)
    return same_revision and all(found.get(k) == v for k, v in expected.items())


def _record_cached(summary: EmbedSummary, images: ImagePlan, texts: list[str]) -> None:
    summary.images_cached, summary.texts_cached = images.cached, len(texts)
    summary.images_failed = len(images.failed_before)
    summary.failures = {key: FAILED_BEFORE for key in images.failed_before}


def _check_config(config: EmbedConfig) -> None:
    check_templates(config.text_templates)
    parse_source(config.backbone, config.revision)  # an ambiguous or malformed --backbone stops before any work
    if config.batch_size < 1 or config.workers < 0:
        raise BadInputError("--batch-size must be at least 1 and --workers at least 0")
    if config.decode not in DECODE_MODES:
        raise BadInputError(f"--decode {config.decode}: choose one of {', '.join(DECODE_MODES)}")
    if config.decode == "gpu":  # before the model loads: no CUDA or no torchvision is exit 2 at once
        from tagcons.embed.gpu_decode import load_batch_decoder

        load_batch_decoder(resolve_device(config.device))
    if config.device.startswith("cuda"):  # an absent GPU is exit 2 at once, not after the plan
        resolve_device(config.device)
    if config.shard is not None and not 0 <= config.shard[0] < config.shard[1]:
        raise BadInputError(f"--shard {config.shard[0]}/{config.shard[1]}: K must be in 0..N-1")


def cache_meta(backbone: Backbone, config: EmbedConfig, dtype: torch.dtype) -> CacheMeta:
    settings = dict(backbone.settings, compute_dtype=str(dtype).replace("torch.", ""), strip_hash=config.strip_hash)
    source = parse_source(config.backbone, config.revision)
    trained = backbone_trained_keys(source.reference) if source.kind == "local" else None
    if trained is not None:  # a fine-tuned backbone: fit-head refuses test parts that overlap these rows
        settings[TRAINED_KEYS_SETTING] = trained
    return CacheMeta(
        backbone=backbone.name if backbone.name in BACKBONES else backbone.model_id,
        model_id=backbone.model_id,
        revision=backbone.revision,
        projection_dim=backbone.projection_dim,
        text_template=template_attr(config.text_templates),
        store_dtype=config.store_dtype,
        settings=settings,
    )


def _in_shard(keys: list[str], shard: tuple[int, int] | None) -> list[str]:
    return keys if shard is None else [k for k in keys if shard_of(k, shard[1]) == shard[0]]


# --- images -----------------------------------------------------------------------------------------


@dataclass
class ImagePlan:
    """Which images of this run's share to encode, and which are settled already."""

    todo: list[str]
    hashes: list[str]
    cached: int
    failed_before: list[str]  # failed in an earlier run and unchanged since: not retried


def plan_images(writer: CacheWriter, root: Path, keys: list[str], workers: int) -> ImagePlan:
    known, known_failed = writer.known_images(), writer.known_failures()
    with ThreadPoolExecutor(max_workers=max(2, workers)) as pool:  # hashing releases the GIL
        hashes = list(pool.map(lambda key: _sha256_or_missing(root, key), keys))
    plan = ImagePlan([], [], 0, [])
    for key, digest in zip(keys, hashes):
        if known.get(key) == digest:
            plan.cached += 1
        elif digest != MISSING_FILE and known_failed.get(key) == digest:
            plan.failed_before.append(key)
        else:
            plan.todo.append(key)
            plan.hashes.append(digest)
    return plan


def _sha256_or_missing(root: Path, key: str) -> str:
    try:
        return file_sha256(resolve_image_path(root, key))
    except (FileNotFoundError, IsADirectoryError, PermissionError, ImageLoadError):
        return MISSING_FILE


class ImageFiles:
    """Decoded RGB images by key; a file that cannot be decoded yields its reason instead.

    With `min_side`, large images are decoded reduced (`tagcons.data.images.decode_reduced`).
    """

    def __init__(self, root: Path, keys: list[str], min_side: int | None = None):
        self.root, self.keys, self.min_side = Path(root), keys, min_side

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int):
        key = self.keys[index]
        try:
            return index, open_image(self.root, key, self.min_side), None
        except ImageLoadError as e:
            return index, None, e.reason


class BatchPreprocessor:
    """collate_fn: one processor call per batch, in the worker; failures travel beside the tensor."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, batch):
        failed = [(index, reason) for index, image, reason in batch if image is None]
        loaded = [(index, image) for index, image, _ in batch if image is not None]
        try:
            pixels = self._pixels([image for _, image in loaded]) if loaded else None
        except (ValueError, OSError) as e:  # one odd image (e.g. 1x1) breaks the batch: isolate it
            return self._one_by_one(loaded, failed, e)
        return [index for index, _ in loaded], pixels, failed

    def _pixels(self, images) -> torch.Tensor:
        import torch

        return torch.as_tensor(np.asarray(self.image_processor(images=images, return_tensors="np")["pixel_values"]))

    def _one_by_one(self, loaded, failed, batch_error):
        import torch

        indices, tensors = [], []
        for index, image in loaded:
            try:
                tensors.append(self._pixels([image]))
                indices.append(index)
            except (ValueError, OSError) as e:
                failed.append((index, f"preprocessing failed ({type(e).__name__}: {e})"))
        log.debug("batch preprocessing failed (%s); retried image by image", batch_error)
        return indices, (torch.cat(tensors) if tensors else None), failed


def _embed_images(job: _Job, plan: ImagePlan, summary: EmbedSummary) -> None:
    config, backbone, device = job.config, job.backbone, job.device
    summary.images_cached = plan.cached
    summary.failures = {key: FAILED_BEFORE for key in plan.failed_before}
    summary.images_failed = len(plan.failed_before)
    todo = plan.todo
    if not todo:
        return
    import torch

    from tagcons.embed.features import image_features

    started = time.perf_counter()
    batches = _image_batches(job, todo)
    encode = torch.compile(image_features) if config.compile else image_features
    pending = _PendingImages(job.writer, todo, plan.hashes, config.commit_rows, config.commit_seconds)
    bar = tqdm(total=len(todo), desc="images", unit="img", disable=not config.progress, dynamic_ncols=True)
    with torch.inference_mode(), bar:
        for indices, pixels, failed in batches:
            if pixels is not None:
                features = encode(backbone.model, pixels.to(device, job.dtype, non_blocking=True))
                pending.add_features(indices, features.float().cpu().numpy())
            pending.add_failures(failed)
            bar.update(len(indices) + len(failed))
    pending.flush()
    summary.images_new = pending.n_encoded
    summary.images_failed += len(pending.failures)
    summary.failures.update(pending.failures)
    summary.image_seconds = time.perf_counter() - started


def _image_batches(job: _Job, todo: list[str]):
    """(indices, pixel_values, failed) per batch: decoded in DataLoader workers, or on the GPU."""
    config, processor = job.config, job.backbone.image_processor
    if config.decode == "gpu":
        from tagcons.embed import gpu_decode

        return gpu_decode.DeviceBatches(
            config.images,
            todo,
            gpu_decode.load_batch_decoder(job.device),
            gpu_decode.DevicePreprocess.from_processor(processor, job.device),
            BatchPreprocessor(processor),
            reduced_side(processor),
            job.device,
            job.dtype,
            config.batch_size,
            config.workers,
        )
    from torch.utils.data import DataLoader

    return DataLoader(
        ImageFiles(config.images, todo, reduced_side(processor)),
        batch_size=config.batch_size,
        num_workers=config.workers,
        collate_fn=BatchPreprocessor(processor),
        pin_memory=job.device.type == "cuda",
        persistent_workers=False,
    )


class _PendingImages:
    """Buffers encoded rows and failures; commits a part every `commit_rows` rows or `commit_seconds`."""

    def __init__(self, writer, keys, hashes, commit_rows, commit_seconds):
        self.writer, self.keys, self.hashes = writer, keys, hashes
        self.commit_rows, self.commit_seconds = commit_rows, commit_seconds
        self.indices, self.arrays, self.failed = [], [], []
        self.n_encoded, self.failures = 0, {}
        self.last_commit = time.monotonic()

    def add_features(self, indices, features: np.ndarray) -> None:
        self.indices.extend(indices)
        self.arrays.append(features)
        if len(self.indices) >= self.commit_rows or time.monotonic() - self.last_commit >= self.commit_seconds:
            self.flush()

    def add_failures(self, failed) -> None:
        self.failed.extend(failed)
        for index, reason in failed:
            self.failures[self.keys[index]] = reason
            log.warning("image %s failed: %s", self.keys[index], reason)

    def flush(self) -> None:
        if self.indices:
            self.writer.commit_images(
                [self.keys[i] for i in self.indices],
                [self.hashes[i] for i in self.indices],
                np.concatenate(self.arrays),
            )
            self.n_encoded += len(self.indices)
        if self.failed:
            self.writer.commit_failures(
                [self.keys[i] for i, _ in self.failed],
                [self.hashes[i] for i, _ in self.failed],
                [r for _, r in self.failed],
            )
        self.indices, self.arrays, self.failed = [], [], []
        self.last_commit = time.monotonic()


# --- texts ------------------------------------------------------------------------------------------


def _embed_texts(job: _Job, texts: list[str], summary: EmbedSummary) -> None:
    config = job.config
    known = job.writer.known_texts()
    todo = [t for t in texts if t not in known]
    summary.texts_cached = len(texts) - len(todo)
    if not todo:
        return
    import torch

    started = time.perf_counter()
    # Length-sorted batches pad least; padding never changes a text's features (tested), only cost.
    todo.sort(key=lambda t: (len(t.encode("utf-8")), t))
    bar = tqdm(total=len(todo), desc="texts", unit="txt", disable=not config.progress, dynamic_ncols=True)
    keys, arrays, last_commit = [], [], time.monotonic()
    with torch.inference_mode(), bar:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start : start + config.batch_size]
            keys.extend(batch)
            arrays.append(encode_texts(job.backbone, batch, config.text_templates, config.batch_size, job.device))
            bar.update(len(batch))
            if len(keys) >= config.commit_rows or time.monotonic() - last_commit >= config.commit_seconds:
                job.writer.commit_texts(keys, np.concatenate(arrays))
                keys, arrays, last_commit = [], [], time.monotonic()
    if keys:
        job.writer.commit_texts(keys, np.concatenate(arrays))
    summary.texts_new = len(todo)
    summary.text_seconds = time.perf_counter() - started
    _count_truncated(job.backbone, todo, config.text_templates, summary)


def _count_truncated(backbone: Backbone, texts: list[str], templates, summary: EmbedSummary) -> None:
    """Texts the tokenizer's limit cuts (under any template): counted, warned about with an example."""
    from tagcons.embed.features import token_counts

    limit = backbone.max_text_tokens
    cut = set()
    for template in templates:
        counts = token_counts(backbone.tokenizer, [template.format(t) for t in texts])
        cut.update(t for t, n in zip(texts, counts) if n > limit)
    summary.texts_truncated = len(cut)
    if cut:
        summary.truncated_example = min(cut, key=lambda t: (-len(t), t))
        log.warning(
            "%d of %d hashtags are longer than the text tower's %d tokens and were cut (e.g. %r); "
            "their features see only the first %d tokens",
            len(cut),
            len(texts),
            limit,
            summary.truncated_example,
            limit,
        )


def encode_texts(backbone: Backbone, texts: list[str], templates, batch_size: int, device) -> np.ndarray:
    """Text features, float32 [len(texts), d], in the order given.

    One template: the projected features as the model gives them. Several (a prompt ensemble, as in
    CLIP's zero-shot practice): the mean over templates of the L2-normalised features.
    """
    if isinstance(templates, str):
        templates = (templates,)
    if len(templates) == 1:
        return _encode_template(backbone, texts, templates[0], batch_size, device)
    per_template = [_encode_template(backbone, texts, t, batch_size, device) for t in templates]
    return np.mean([l2_normalise(f) for f in per_template], axis=0).astype(np.float32)


def _encode_template(backbone: Backbone, texts: list[str], template: str, batch_size: int, device) -> np.ndarray:
    from tagcons.embed.features import text_features

    out = []
    for start in range(0, len(texts), batch_size):
        tokens = backbone.tokenize([template.format(t) for t in texts[start : start + batch_size]])
        tokens = {name: tensor.to(device) for name, tensor in tokens.items()}
        out.append(text_features(backbone.model, **tokens).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, backbone.projection_dim), np.float32)


def _merge_after_all_ranks(context, config: EmbedConfig) -> None:
    context.barrier()
    if context.rank == 0:
        merge_parts(config.out, progress=config.progress)
    context.barrier()


def _log_summary(s: EmbedSummary) -> None:
    log.info(
        "images: %d new, %d cached, %d failed (%.1f img/s); texts: %d new, %d cached, %d cut at the token limit "
        "(%.1f txt/s); %.1f s",
        s.images_new,
        s.images_cached,
        s.images_failed,
        s.images_per_second,
        s.texts_new,
        s.texts_cached,
        s.texts_truncated,
        s.texts_per_second,
        s.elapsed_seconds,
    )
