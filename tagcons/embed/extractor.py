"""`tagcons embed`: encode each unique image and text once into the HDF5 cache.

Reader / compute / writer are separate: the shared image pipeline (`tagcons.data.image_batches`)
decodes and preprocesses in DataLoader workers (the encoder never sees a path), the image and text
passes (`image_encoding.py`, `text_encoding.py`) run the model, and the cache's `CacheWriter` owns
the file layout and commits each chunk atomically, so a crash loses at most the chunk in flight and
a rerun encodes only what is missing. This module checks the config, plans from the file hashes and
starts the job (`job.py`) only when something is new.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tagcons import distributed
from tagcons.cache import CacheMeta, CacheWriter, merge_parts, shard_of
from tagcons.cache.lock import read_only_message
from tagcons.cache.verify import check_checksums
from tagcons.configs import ENGINES, EmbedConfig
from tagcons.data.image_batches import BatchPreprocessor as BatchPreprocessor  # re-exported for gpu_decode's tests
from tagcons.data.images import (
    MISSING_FILE,
    check_image_keys,
    sha256_or_missing,
)
from tagcons.data.pairs import check_image_paths, load_pairs
from tagcons.embed import onnx_runtime
from tagcons.embed.backbones import BACKBONES, Backbone, backbone_identity, load_backbone, parse_source
from tagcons.embed.image_encoding import embed_images
from tagcons.embed.job import EmbedSummary, EncodeJob, ImagePlan
from tagcons.embed.scripts import warn_if_unread_script
from tagcons.embed.templates import check_templates, template_attr
from tagcons.embed.text_encoding import embed_texts
from tagcons.errors import BadInputError, StrictFailure
from tagcons.evaluate.provenance import TRAINED_KEYS_SETTING, backbone_trained_keys
from tagcons.runtime import compute_dtype_name, resolve_device, resolve_dtype

if TYPE_CHECKING:  # torch loads with the model: a rerun with nothing new never imports it
    import torch


log = logging.getLogger(__name__)
DECODE_MODES = ("cpu", "gpu")


def run_embed(config: EmbedConfig) -> EmbedSummary:
    """Embed what the cache lacks; raise StrictFailure (after saving) when --strict and images failed."""
    started = time.perf_counter()
    _check_config(config)
    config, table = _keys_to_embed(config)
    _check_image_paths(config, table)
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


def _keys_to_embed(config: EmbedConfig):
    """(config, the table whose unique images and texts to embed): a pairs file, or a posts file's
    images and hashtags; posts' hashtags are keyed without '#', so the cache records --strip-hash."""
    if config.posts is None:
        if config.data is None:
            raise BadInputError("embed needs a pairs file (--data) or a posts file (--posts)")
        return config, load_pairs(config.data, config.columns, strip_hash=config.strip_hash, require_labels=False)
    if config.data is not None:
        raise BadInputError(f"give --data {config.data} or --posts {config.posts}, not both")
    from tagcons.data.posts import read_post_keys

    return config, read_post_keys(config.posts, config.post_columns, strip_hash=config.strip_hash)


def _check_image_paths(config: EmbedConfig, table) -> None:
    """Every image key names a file inside --images: a pairs table names its lines, a posts file its keys."""
    if config.posts is None:
        check_image_paths(table, config.images)
    else:
        check_image_keys(config.images, table.unique_images())


def _embed_with_context(config: EmbedConfig, table, context: distributed.DistContext) -> EmbedSummary:
    if context.world_size > 1 and config.engine == "ray":
        raise BadInputError("--engine ray places its own workers: run it once, not under torchrun")
    shard = context.shard or config.shard
    summary = EmbedSummary(Path(config.out), shard=shard)
    # The lock comes first (a second writer is refused at once, not after the model loads), then the
    # plan from the file hashes: a rerun with nothing new never imports transformers nor loads a model.
    with CacheWriter(config.out, None, shard=shard) as writer, open_engine(config) as engine:
        keys = _in_shard(table.unique_images(), shard)
        images = plan_images(writer, config.images, keys, config.workers or 0, engine)
        texts = _in_shard(table.unique_texts(), shard)
        if context.world_size == 1 and _nothing_new(config, writer, images, texts):
            check_checksums(Path(config.out))  # the keys were checked against their digests while planning
            _record_cached(summary, images, texts)
            log.info("%s: everything is cached already (checksums checked); the model was not loaded", config.out)
            return summary
        job = _start_job(config, writer, shard, context)
        warn_if_unread_script(job.backbone, table.unique_texts())
        engine.encode(job, images, texts, summary)
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


class LocalEngine:
    """This process: hashing in threads, decoding in DataLoader workers, the model on `--device`."""

    def hash_files(self, root: Path, keys: list[str], workers: int) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(2, workers)) as pool:  # hashing releases the GIL
            return list(pool.map(lambda key: sha256_or_missing(root, key), keys))

    def encode(self, job: EncodeJob, images: ImagePlan, texts: list[str], summary: EmbedSummary) -> None:
        embed_images(job, images, summary)
        embed_texts(job, texts, summary)


@contextmanager
def open_engine(config: EmbedConfig):
    """The engine of `--engine`: local, or a Ray session (started or joined) for the run."""
    if config.engine != "ray":
        yield LocalEngine()
        return
    from tagcons.embed.ray_engine import RayEngine, ray_session

    with ray_session(config.ray_address, config.progress):
        yield RayEngine(config)


def _start_job(config: EmbedConfig, writer: CacheWriter, shard, context: distributed.DistContext) -> EncodeJob:
    """Load the model and bind the writer to its settings (refusing a cache computed another way)."""
    if not writer.writable:
        raise BadInputError(read_only_message(writer.path))
    backbone = load_backbone(config.backbone, config.revision)
    device = context.device or resolve_device(onnx_runtime.device_name(config.runtime, config.device))
    dtype = resolve_dtype(config.dtype, device)
    backbone.model.to(device=device, dtype=dtype)
    onnx_runtime.attach(backbone, config.runtime)  # --runtime onnx*: the towers run by ONNX Runtime
    writer.bind(cache_meta(backbone, config, dtype))
    return EncodeJob(config, backbone, writer, shard, device, dtype)


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
        "runtime": onnx_runtime.runtime_settings(config.runtime).get("runtime"),
    }
    found = {**settings, **{k: stored.get(k) for k in ("model_id", "text_template", "store_dtype")}}
    same_revision = revision is None or revision == (stored.get("revision") or None)
    return same_revision and all(found.get(k) == v for k, v in expected.items())


def _record_cached(summary: EmbedSummary, images: ImagePlan, texts: list[str]) -> None:
    summary.images_cached, summary.texts_cached = images.cached, len(texts)
    summary.record_failed_before(images.failed_before)


def _check_config(config: EmbedConfig) -> None:
    check_templates(config.text_templates)
    onnx_runtime.check_runtime(config.runtime, config.device, config.dtype, config.compile)
    parse_source(config.backbone, config.revision)  # an ambiguous or malformed --backbone stops before any work
    if config.batch_size < 1 or (config.workers or 0) < 0:
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
    _check_engine(config)


def _check_engine(config: EmbedConfig) -> None:
    if config.engine not in ENGINES:
        raise BadInputError(f"--engine {config.engine}: choose one of {', '.join(ENGINES)}")
    if config.ray_address is not None and config.engine != "ray":
        raise BadInputError(f"--ray-address {config.ray_address} is for the Ray engine; add --engine ray")
    if config.engine == "ray" and (config.decode != "cpu" or config.compile):
        raise BadInputError("--engine ray decodes in CPU tasks and does not compile: drop --decode gpu / --compile")
    if config.engine == "ray":  # before any work: Ray missing or an unreachable cluster is exit 2 at once
        from tagcons.embed.ray_engine import check_address, require_ray

        require_ray()
        check_address(config.ray_address)


def cache_meta(backbone: Backbone, config: EmbedConfig, dtype: torch.dtype) -> CacheMeta:
    settings = dict(backbone.settings, compute_dtype=str(dtype).replace("torch.", ""), strip_hash=config.strip_hash)
    settings.update(onnx_runtime.runtime_settings(config.runtime))  # the runtime changes the features' last digits
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


# --- image plan --------------------------------------------------------------------------------------


def plan_images(writer: CacheWriter, root: Path, keys: list[str], workers: int, engine=None) -> ImagePlan:
    known, known_failed = writer.known_images(), writer.known_failures()
    hashes = (engine or LocalEngine()).hash_files(root, keys, workers)
    plan = ImagePlan([], [], 0, [])
    for key, digest in zip(keys, hashes):
        if known.get(key) == digest:
            plan.cached += 1
        elif key in known_failed and (known_failed[key] == digest or digest == MISSING_FILE):
            plan.failed_before.append(key)  # unchanged, or still missing: nothing to encode, no model to load
        else:
            plan.todo.append(key)
            plan.hashes.append(digest)
    return plan


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
