"""The image pass of `tagcons embed`: batches from the shared pipeline -> the image tower -> cache parts.

Batches come from `tagcons.data.image_batches` (decoded and preprocessed in DataLoader workers) or,
with `--decode gpu`, from `tagcons.embed.gpu_decode`; either way each is `(indices, pixels, failed)`.
`PendingImages` buffers rows and failures and commits a part every `commit_rows` rows or
`commit_seconds`, so a crash loses at most the chunk in flight.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm.auto import tqdm

from tagcons.data.image_batches import ImagePipeline
from tagcons.embed.job import EmbedSummary, EncodeJob, ImagePlan
from tagcons.runtime import embed_workers

log = logging.getLogger(__name__)


def embed_images(job: EncodeJob, plan: ImagePlan, summary: EmbedSummary) -> None:
    config, backbone, device = job.config, job.backbone, job.device
    summary.images_cached = plan.cached
    summary.record_failed_before(plan.failed_before)
    todo = plan.todo
    if not todo:
        return
    import torch  # with the model: a run with nothing new never imports it

    from tagcons.embed.features import image_features

    started = time.perf_counter()
    batches = image_batches(job, todo)
    encode = torch.compile(image_features) if config.compile else image_features
    pending = PendingImages(job.writer, todo, plan.hashes, config.commit_rows, config.commit_seconds)
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


def image_batches(job: EncodeJob, todo: list[str]):
    """(indices, pixel_values, failed) per batch: decoded in DataLoader workers, or on the GPU."""
    config = job.config
    workers = embed_workers(config.workers, job.device.type)
    log.info("decoding in %s", f"{workers} DataLoader worker(s)" if workers else "the main process (no workers)")
    pipeline = ImagePipeline(config.images, todo, job.backbone.image_processor)
    if config.decode == "gpu":
        from tagcons.embed import gpu_decode

        return gpu_decode.DeviceBatches(
            config.images,
            todo,
            gpu_decode.load_batch_decoder(job.device),
            gpu_decode.DevicePreprocess.from_processor(job.backbone.image_processor, job.device),
            pipeline.preprocess,
            pipeline.files.min_side,
            job.device,
            job.dtype,
            config.batch_size,
            workers,
        )
    return pipeline.loader(config.batch_size, workers, pin_memory=job.device.type == "cuda")


class PendingImages:
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
