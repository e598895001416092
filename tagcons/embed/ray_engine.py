"""`tagcons embed --engine ray`: the same embed run as Ray Data operators, on one machine or a cluster.

Stages: hashing (CPU tasks over the keys) -> reduced decode + preprocess (CPU tasks running the shared
`tagcons.data.image_batches` pipeline, so the pixels are the local engine's) -> the image and text
encoders in actors (one per GPU; CPU actors on a cluster without GPUs) -> the driver, which streams the
results into `PendingImages` and the `CacheWriter` it holds the lock of. The cache, its fingerprint,
its failure records and resume are therefore exactly the local engine's: only where rows are computed
changes. The cache folder must be on the driver's disk; images must be readable at `--images` on every
node (a shared file system). Ray retries a task or restarts an actor whose worker dies.

Without `--ray-address` a small local Ray is started (and stopped); with one the driver joins.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tagcons.errors import BadInputError

log = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'tagcons[ray]'"
LOCAL_OBJECT_STORE_BYTES = 200 * 1024**2  # a local Ray stays small: batches stream, nothing is kept
CONNECT_SECONDS = 5.0
HASH_BATCH = 256
DECODE_MEMORY_BYTES = 128 * 1024**2  # what one decode task may hold: a batch of reduced images
CPUS_PER_CPU_ACTOR = 4  # without GPUs: one encoder actor per this many cluster CPUs (at least one)
DEFAULT_PORTS = {"ray://": 10001, "": 6379}


def require_ray():
    """The ray module, or BadInputError naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise BadInputError(f"--engine ray needs Ray (Ray Data), which is not installed: {RAY_EXTRA}") from e
    return ray


def check_address(address: str | None) -> None:
    """An unreachable `--ray-address` stops at once (Ray itself would wait a minute, then trace back)."""
    if address is None or address == "auto":
        return
    host, port = split_address(address)
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as e:
        raise BadInputError(
            f"--ray-address {address}: no Ray cluster answers at {host}:{port} ({e.strerror or e}); start one "
            "with `ray start --head` or pass the address it printed"
        ) from e


def split_address(address: str) -> tuple[str, int]:
    scheme = "ray://" if address.startswith("ray://") else ""
    rest = address.removeprefix(scheme)
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    try:
        return host or "127.0.0.1", int(port) if port else DEFAULT_PORTS[scheme]
    except ValueError:
        raise BadInputError(f"--ray-address {address}: expected HOST:PORT (e.g. 10.0.0.1:6379)") from None


@contextmanager
def ray_session(address: str | None, progress: bool = False) -> Iterator[None]:
    """Join the cluster at `address`, or start a small local Ray; disconnect (and stop it) afterwards."""
    ray = require_ray()
    check_address(address)
    quiet = dict(ignore_reinit_error=True, log_to_driver=False, logging_level=logging.WARNING)
    if address is None:
        ray.init(
            num_cpus=os.cpu_count() or 1,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            **quiet,
        )
    else:
        ray.init(address=address, **quiet)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    try:
        yield
    finally:
        ray.shutdown()


class RayEngine:
    """The hooks `extractor.py` calls: hash the files, then encode what the plan says is new."""

    def __init__(self, config):
        self.config = config

    def hash_files(self, root: Path, keys: list[str], _workers: int) -> list[str]:
        """sha256 per key ('' for a missing file), in the order given, hashed in Ray tasks."""
        if not keys:
            return []

        ds = indexed(keys, "key")
        root = _absolute(root)
        hashed = ds.map_batches(_hash_batch, batch_size=HASH_BATCH, batch_format="numpy", fn_kwargs={"root": root})
        out = [""] * len(keys)
        for batch in hashed.iter_batches(batch_size=None, batch_format="numpy"):
            for i, digest in zip(batch["i"].tolist(), batch["sha256"].tolist()):
                out[i] = str(digest)
        return out

    def encode(self, job, images, texts: list[str], summary) -> None:
        embed_images_ray(job, images, summary)
        embed_texts_ray(job, texts, summary)


# --- stages (run in Ray workers; module-level so they pickle by reference) ---------------------------


def _hash_batch(batch: dict, root: str) -> dict:
    from tagcons.data.images import sha256_or_missing

    shas = [sha256_or_missing(Path(root), str(k)) for k in batch["key"]]
    return {"i": batch["i"], "sha256": np.asarray(shas, dtype=object)}


def _decode_batch(batch: dict, root: str, image_processor, pixel_shape: tuple) -> dict:
    """Reduced decode + preprocess with the local engine's pipeline; failed rows carry their reason."""
    from tagcons.data.image_batches import ImagePipeline

    keys = [str(k) for k in batch["key"]]
    indices, pixels, failed = ImagePipeline(root, keys, image_processor)(range(len(keys)))
    out = np.zeros((len(keys), *pixel_shape), dtype=np.float32)
    reasons = np.full(len(keys), "", dtype=object)
    if pixels is not None:
        out[indices] = pixels.numpy()
    for index, reason in failed:
        reasons[index] = reason
    return {"i": batch["i"], "reason": reasons, "pixels": out}


class _Encoder:
    """One backbone on this actor's device (its GPU if Ray gave it one), in the driver's compute dtype."""

    def __init__(self, backbone: str, revision: str | None, dtype: str):
        import ray
        import torch

        from tagcons.embed.backbones import load_backbone

        self.backbone = load_backbone(backbone, revision)
        self.device = torch.device("cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")
        self.dtype = getattr(torch, dtype)
        self.backbone.model.to(device=self.device, dtype=self.dtype)


class ImageEncoder(_Encoder):
    def __call__(self, batch: dict) -> dict:
        import torch

        from tagcons.embed.features import image_features

        ok = np.asarray([r == "" for r in batch["reason"]], dtype=bool)
        embeds = np.zeros((len(ok), self.backbone.projection_dim), dtype=np.float32)
        if ok.any():
            pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))
            with torch.inference_mode():
                features = image_features(self.backbone.model, pixels.to(self.device, self.dtype))
            embeds[ok] = features.float().cpu().numpy()
        return {"i": batch["i"], "reason": batch["reason"], "embeds": embeds}


class TextEncoder(_Encoder):
    def __init__(self, backbone: str, revision: str | None, dtype: str, templates: tuple, batch_size: int):
        super().__init__(backbone, revision, dtype)
        self.templates, self.batch_size = templates, batch_size

    def __call__(self, batch: dict) -> dict:
        import torch

        from tagcons.embed.text_encoding import encode_texts

        texts = [str(t) for t in batch["text"]]
        with torch.inference_mode():
            embeds = encode_texts(self.backbone, texts, self.templates, self.batch_size, self.device)
        return {"i": batch["i"], "embeds": embeds}


# --- the driver side ---------------------------------------------------------------------------------


def encoder_actors() -> dict:
    """map_batches arguments for the encoder actors: one per GPU, else CPU actors by cluster size."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return dict(compute=ray.data.ActorPoolStrategy(size=gpus), num_gpus=1)
    size = max(1, int(resources.get("CPU", 1)) // CPUS_PER_CPU_ACTOR)
    return dict(compute=ray.data.ActorPoolStrategy(size=size), num_cpus=1)


def indexed(values: list[str], name: str):
    """A dataset of rows (i, `name`): one Arrow table, not a Python dict per row (tens of millions of keys)."""
    import pyarrow as pa
    import ray

    return ray.data.from_arrow(pa.table({"i": np.arange(len(values), dtype=np.int64), name: values}))


def _absolute(folder) -> str:
    """Workers run in other folders (and on other nodes): they get the images folder as an absolute path."""
    return str(Path(folder).resolve())


def _dtype_name(job) -> str:
    return str(job.dtype).replace("torch.", "")


def pixel_shape(image_processor) -> tuple:
    """The shape of one preprocessed image (the processor resizes and crops to a fixed size)."""
    from PIL import Image

    from tagcons.data.image_batches import BatchPreprocessor

    _, pixels, _ = BatchPreprocessor(image_processor)([(0, Image.new("RGB", (64, 64)), None)])
    return tuple(pixels.shape[1:])


def image_dataset(job, todo: list[str]):
    """keys -> decoded pixels (CPU tasks) -> features (actors): rows i, reason ('' if encoded), embeds."""

    config, processor = job.config, job.backbone.image_processor
    ds = indexed(todo, "key")
    decoded = ds.map_batches(
        _decode_batch,
        batch_size=config.batch_size,
        batch_format="numpy",
        fn_kwargs=dict(root=_absolute(config.images), image_processor=processor, pixel_shape=pixel_shape(processor)),
        num_cpus=1,
        memory=DECODE_MEMORY_BYTES,  # a reservation the actors lack: keeps decoding its own CPU-task operator
    )
    return decoded.map_batches(
        ImageEncoder,
        batch_size=config.batch_size,
        batch_format="numpy",
        fn_constructor_kwargs=dict(backbone=config.backbone, revision=config.revision, dtype=_dtype_name(job)),
        **encoder_actors(),
    )


def embed_images_ray(job, plan, summary) -> None:
    """The image pass of the local engine (`image_encoding.embed_images`), its rows computed by Ray."""
    from tagcons.embed.image_encoding import PendingImages

    summary.images_cached = plan.cached
    summary.record_failed_before(plan.failed_before)
    if not plan.todo:
        return
    started = time.perf_counter()
    config = job.config
    pending = PendingImages(job.writer, plan.todo, plan.hashes, config.commit_rows, config.commit_seconds)
    for batch in image_dataset(job, plan.todo).iter_batches(batch_size=None, batch_format="numpy"):
        ok = np.asarray([r == "" for r in batch["reason"]], dtype=bool)
        if ok.any():
            pending.add_features(batch["i"][ok].tolist(), batch["embeds"][ok])
        pending.add_failures([(int(i), str(r)) for i, r in zip(batch["i"][~ok], batch["reason"][~ok])])
    pending.flush()
    summary.images_new = pending.n_encoded
    summary.images_failed += len(pending.failures)
    summary.failures.update(pending.failures)
    summary.image_seconds = time.perf_counter() - started


def embed_texts_ray(job, texts: list[str], summary) -> None:
    """The text pass of the local engine (`text_encoding.embed_texts`), its rows computed by Ray."""

    from tagcons.embed.text_encoding import count_truncated

    config, known = job.config, job.writer.known_texts()
    todo = sorted((t for t in texts if t not in known), key=lambda t: (len(t.encode("utf-8")), t))
    summary.texts_cached = len(texts) - len(todo)
    if not todo:
        return
    started = time.perf_counter()
    ds = indexed(todo, "text")
    encoded = ds.map_batches(
        TextEncoder,
        batch_size=config.batch_size,
        batch_format="numpy",
        fn_constructor_kwargs=dict(
            backbone=config.backbone,
            revision=config.revision,
            dtype=_dtype_name(job),
            templates=tuple(config.text_templates),
            batch_size=config.batch_size,
        ),
        **encoder_actors(),
    )
    _commit_texts(job, todo, encoded.iter_batches(batch_size=None, batch_format="numpy"))
    summary.texts_new = len(todo)
    summary.text_seconds = time.perf_counter() - started
    count_truncated(job.backbone, todo, config.text_templates, summary)


def _commit_texts(job, todo: list[str], batches) -> None:
    """Commit every `commit_rows` rows or `commit_seconds`, as the local text pass does."""
    config = job.config
    keys, arrays, last_commit = [], [], time.monotonic()
    for batch in batches:
        keys.extend(todo[i] for i in batch["i"].tolist())
        arrays.append(np.asarray(batch["embeds"], dtype=np.float32))
        if len(keys) >= config.commit_rows or time.monotonic() - last_commit >= config.commit_seconds:
            job.writer.commit_texts(keys, np.concatenate(arrays))
            keys, arrays, last_commit = [], [], time.monotonic()
    if keys:
        job.writer.commit_texts(keys, np.concatenate(arrays))
