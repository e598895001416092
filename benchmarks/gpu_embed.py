"""GPU embedding throughput: `tagcons embed` from JPEG files on disk to committed cache rows.

On a machine with a CUDA GPU this builds a fixture of 1080x1080 photo-like JPEGs (--images, 3,000 by
default), then runs full-size ViT-B/32 and ViT-L/14 CLIPs (random weights; speed does not depend on
the values) through `tagcons embed` once per decode mode:

    cpu           JPEGs decoded (DCT-scaled) and preprocessed in DataLoader workers
    gpu           workers read bytes; nvJPEG decode + resize/normalise on the GPU (needs torchvision)
    gpu-compile   the same with --compile (torch.compile of the image encoder)
    ray           --engine ray: a local Ray, decode in CPU tasks, the encoder in one GPU actor

For each run it reports the image phase's img/s (as `embed` prints it), the command's wall time,
GPU utilisation (nvidia-smi sampled every 200 ms, else torch.cuda.utilization) and the host's share
(CPU seconds of the command and its workers / (wall x cores)), and for the gpu modes the cosine
between their features and the cpu mode's (same images): the evidence for dropping `--decode gpu`
from the cache fingerprint. It saves benchmarks/results/gpu_embed.json with the card's name. It
installs nothing and stops starting new runs after --budget seconds (default 7 minutes), so the whole
script stays inside 8 minutes. Without a GPU it says so and exits 0.

    python benchmarks/gpu_embed.py                  # ~6 minutes on one H100
    python benchmarks/gpu_embed.py --images 1000 --models vit-b-32
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

MODES = {"cpu": [], "gpu": ["--decode", "gpu"], "gpu-compile": ["--decode", "gpu", "--compile"]}
if importlib.util.find_spec("ray") is not None:  # the Ray engine (a local Ray, one GPU actor), when installed
    MODES["ray"] = ["--engine", "ray"]
IMG_PER_S = re.compile(r"\(([\d.]+) img/s")


def _write_one(args) -> None:
    from decode import photo_like

    path, seed = args
    photo_like(np.random.default_rng(seed)).save(path, quality=90)


def build_fixture(directory: Path, n_images: int) -> tuple[Path, Path]:
    """n 1080x1080 photo-like JPEGs (written on all cores) and a pairs table with 2 hashtags each."""
    images = directory / "images"
    images.mkdir()
    names = [f"photo_{i:05d}.jpg" for i in range(n_images)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_write_one, [(images / name, i) for i, name in enumerate(names)], chunksize=32))
    rows = [f"{name},#태그{(i + j) % 64},{1 + (i + j) % 5}" for i, name in enumerate(names) for j in range(2)]
    pairs = directory / "pairs.csv"
    pairs.write_text("Image Filename,Hashtag,Score\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return pairs, images


class GpuSampler:
    """GPU utilisation samples (%) while a command runs."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.source = "nvidia-smi" if shutil.which("nvidia-smi") else "torch.cuda.utilization"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            value = self._sample()
            if value is not None:
                self.samples.append(value)

    def _sample(self) -> float | None:
        try:
            if self.source == "nvidia-smi":
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                return float(out.strip().splitlines()[0])
            import torch

            return float(torch.cuda.utilization(0))
        except Exception:  # a sampler that cannot read the GPU must not break the benchmark
            return None


def run_embed_command(checkpoint: Path, pairs: Path, images: Path, out: Path, mode: str, args) -> dict:
    command = [sys.executable, "-m", "tagcons", "embed", "--data", str(pairs), "--images", str(images)]
    command += ["--backbone", str(checkpoint), "--out", str(out), "--batch-size", str(args.batch_size)]
    command += MODES[mode] + (["--workers", str(args.workers)] if args.workers is not None else [])
    command += ["--device", "cpu"] if args.smoke_cpu else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])))
    before = os.times()
    started = time.perf_counter()
    with GpuSampler() as sampler:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=args.run_timeout, env=env)
        except subprocess.TimeoutExpired:
            result = subprocess.CompletedProcess(command, 124, "", f"timed out after {args.run_timeout} s")
    wall = time.perf_counter() - started
    after = os.times()
    cpu_seconds = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    match = IMG_PER_S.search(result.stdout)
    busy = [s for s in sampler.samples if s > 0]
    return dict(
        mode=mode,
        exit_code=result.returncode,
        error=None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["?"])[-1],
        images_per_second=float(match.group(1)) if match else None,
        wall_seconds=wall,
        gpu_utilisation_mean=float(np.mean(sampler.samples)) if sampler.samples else None,
        gpu_utilisation_while_busy=float(np.mean(busy)) if busy else None,
        gpu_utilisation_source=sampler.source,
        host_cpu_seconds=cpu_seconds,
        host_share=cpu_seconds / (wall * (os.cpu_count() or 1)),
        stdout=result.stdout.strip().splitlines()[-1:] if result.stdout else [],
    )


def feature_agreement(reference: Path, other: Path) -> dict:
    """Cosine between two caches' features of the same images (min and mean over images)."""
    import tagcons.cache

    with tagcons.cache.open(reference) as a, tagcons.cache.open(other) as b:
        ref = dict(zip(a.image_keys, a.image_embeddings()))
        got = dict(zip(b.image_keys, b.image_embeddings()))
    keys = sorted(set(ref) & set(got))
    x = np.stack([ref[k] for k in keys]).astype(np.float64)
    y = np.stack([got[k] for k in keys]).astype(np.float64)
    cosine = np.sum(x * y, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return dict(images=len(keys), min_cosine=float(cosine.min()), mean_cosine_distance=float(np.mean(1 - cosine)))


def benchmark_model(name: str, work: Path, fixture, args, deadline: float) -> list[dict]:
    from embed_throughput import build_checkpoint

    checkpoint = build_checkpoint(name, work)
    runs = []
    for mode in args.modes:
        if time.monotonic() > deadline:
            runs.append(dict(model=name, mode=mode, skipped=f"time budget of {args.budget} s spent"))
            continue
        out = work / f"{name}-{mode}.h5"
        run = dict(model=name, **run_embed_command(checkpoint, *fixture, out, mode, args))
        if mode != "cpu" and run["exit_code"] == 0 and (work / f"{name}-cpu.h5").is_file():
            run["features_vs_cpu"] = feature_agreement(work / f"{name}-cpu.h5", out)
        print(json.dumps({k: v for k, v in run.items() if k != "stdout"}), flush=True)
        runs.append(run)
    shutil.rmtree(checkpoint, ignore_errors=True)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--models", nargs="+", default=["vit-b-32", "vit-l-14"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers [embed's default]")
    parser.add_argument("--budget", type=float, default=420.0, help="no new run starts after this many seconds")
    parser.add_argument("--run-timeout", type=float, default=240.0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu_embed.json")
    parser.add_argument("--smoke-cpu", action="store_true", help="check the script itself on a CPU (--device cpu)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.smoke_cpu:
        print("gpu_embed: no CUDA GPU on this machine; nothing measured (run it on a GPU machine)")
        return 0
    deadline = time.monotonic() + args.budget
    with tempfile.TemporaryDirectory(prefix="tagcons-gpu-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        fixture = build_fixture(work, args.images)
        print(f"fixture: {args.images} JPEGs in {time.perf_counter() - started:.1f} s", flush=True)
        runs = [run for name in args.models for run in benchmark_model(name, work, fixture, args, deadline)]
    report = dict(
        benchmark="tagcons embed, 1080x1080 photo-like JPEG files -> committed cache rows",
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (--smoke-cpu)",
        cpu_cores=os.cpu_count(),
        torch=torch.__version__,
        images=args.images,
        batch_size=args.batch_size,
        runs=runs,
        loadavg=list(os.getloadavg()),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
