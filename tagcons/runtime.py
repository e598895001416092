"""Where and how computation runs: device, dtype and thread limits.

Ground floor: embed, heads and finetune all use these; torch is imported inside the functions that
need it, so importing this module costs nothing (a threshold or logreg fit never loads torch).
"""

from __future__ import annotations

import contextlib
import os
import sys
from importlib import metadata

from tagcons.errors import BackboneUnavailableError

SMALL_TABLE_ROWS = 50_000
DTYPE_NAMES = ("fp32", "fp16", "bf16")


def resolve_device(requested: str = "auto"):
    """auto: CUDA, then Apple MPS, then CPU."""
    import torch

    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise BackboneUnavailableError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(requested: str, device):
    """auto: bf16 on CUDA that supports it, fp16 on other CUDA, fp32 elsewhere."""
    import torch

    if requested != "auto":
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


TORCH_DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def compute_dtype_name(requested: str, device_request: str = "auto") -> str:
    """The name ("float32", ...) of the dtype `resolve_dtype` picks, without importing torch when it is sure.

    Only "auto" on a device that may be CUDA needs torch to know (bf16 or fp16 there, fp32 elsewhere).
    """
    if requested != "auto" and not device_request.startswith("cuda"):
        return TORCH_DTYPE_NAMES[requested]
    if device_request in ("cpu", "mps") or (device_request == "auto" and not _torch_may_have_cuda()):
        return TORCH_DTYPE_NAMES["fp32"]
    return str(resolve_dtype(requested, resolve_device(device_request))).replace("torch.", "")


def _torch_may_have_cuda() -> bool:
    """False for a CPU-only torch build (its version says "+cpu"); True when unsure (then torch decides)."""
    if "torch" in sys.modules:
        return sys.modules["torch"].cuda.is_available()
    try:
        return not metadata.version("torch").endswith("+cpu")
    except metadata.PackageNotFoundError:
        return True


def default_workers() -> int:
    """DataLoader workers decoding images: leave a core to the model (decoding competes with it), at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def embed_workers(workers: int | None, device_type: str, cores: int | None = None) -> int:
    """`embed`'s decode workers: as asked, else chosen for the device the model runs on.

    On a GPU decoding is the bottleneck: `default_workers()`. On a CPU the decoders take cores from
    the model: a 1080-px JPEG costs about 6 ms of one core (reduced decode + preprocess) against
    about 100 core-ms for a ViT-B/32 forward, so one worker per 8 cores and none below 8, where the
    images are decoded in the main process between forwards. Measured on 2 cores (ViT-B/32, 256
    JPEGs, benchmarks/embed_efficiency.py): 96% of the forward-only rate with no worker, 81% with one.
    """
    if workers is not None:
        return workers
    if device_type != "cpu":
        return default_workers()
    return min(8, (cores or os.cpu_count() or 2) // 8)


def auto_threads(n_rows: int, threads: int | None) -> int | None:
    """Threads for a fit: as asked, else 1 for small tables (None = library default for large ones).

    On a few thousand rows thread synchronisation costs more than it saves, and on a busy machine
    spinning OpenMP/BLAS threads make a 2-thread fit 10x slower than a 1-thread one (measured).
    """
    if threads is not None:
        return threads
    return 1 if n_rows < SMALL_TABLE_ROWS else None


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads inside the block (untouched when torch is not loaded or threads is None)."""
    torch = sys.modules.get("torch")
    if threads is None or torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def limited_threads(threads: int | None):
    """Limit BLAS/OpenMP and torch intra-op threads inside the block; restore them afterwards."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with torch_threads(threads), threadpool_limits(limits=threads):
        yield


def compute_threads(workers: int):
    """Give torch the cores the DataLoader workers leave free, for the duration of a run.

    For fine-tuning, where the workers decode every step: on 2 cores with one worker, a tiny-backbone
    fine-tune took 12.7 s with one torch thread and 19.7 s with two (and 10x longer with two when
    the machine was busy). `embed` does not use it: there the model dominates, and a ViT-B/32 image
    phase took 21 s with two threads beside one worker against 29 s with one.
    """
    import torch

    return torch_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - workers)))
