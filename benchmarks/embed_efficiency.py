"""Pipeline efficiency of `tagcons embed` on the CPU: the whole command against the encoder alone (issue 29).

For each model, in one run, at the same batch size and runtime:
(a) forward only: the image tower over already-preprocessed tensors of the --n images (decoded and
    preprocessed beforehand by embed's own pipeline, so the tensors are the command's), after one
    warm-up batch;
(b) the whole `embed` command on the same --n JPEGs (--side px, default 1080) into a new cache:
    its image phase rate (decode + preprocess + forward + commits) and its end-to-end rate (model
    load, hashing, texts and consolidation included).
Efficiency = (b) / (a). Beside the wall-clock rates, CPU seconds per image (this process and its
finished DataLoader workers): on a loaded machine the CPU figures still say what each image costs
(though spinning OpenMP threads inflate them). Models: full-size random-weight CLIP ViT-B/32 and
ViT-L/14 (benchmarks/embed_throughput.py's `build_checkpoint`); `tiny` checks that the script works.
Timings mean something only on a quiet machine: the JSON records the load average before and after.

    python benchmarks/embed_efficiency.py                              # vit-b-32 and vit-l-14, 256 JPEGs
    python benchmarks/embed_efficiency.py --runtime onnx --workers 1
    nice python benchmarks/embed_efficiency.py --models tiny --n 16 --side 256 --out /tmp/eff.json  # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from embed_throughput import _machine, build_checkpoint  # noqa: E402
from onnx_runtime import photo_like  # noqa: E402

from tagcons.data.image_batches import ImagePipeline  # noqa: E402
from tagcons.embed import onnx_runtime  # noqa: E402
from tagcons.embed.backbones import load_backbone  # noqa: E402
from tagcons.embed.extractor import EmbedConfig, run_embed  # noqa: E402
from tagcons.embed.features import image_features  # noqa: E402
from tagcons.runtime import embed_workers  # noqa: E402

MODELS = ("vit-b-32", "vit-l-14", "tiny")


def write_jpegs(directory: Path, n: int, side: int) -> tuple[Path, Path]:
    """(pairs.csv, images dir): n photo-like JPEGs (quality 90), one hashtag each from a few distinct ones."""
    images = directory / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = ["Image Filename,Hashtag,Score"]
    for i in range(n):
        photo_like(rng, side).save(images / f"img_{i:04d}.jpg", quality=90)
        rows.append(f"img_{i:04d}.jpg,#태그{i % 8},{1 + i % 5}")
    pairs = directory / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return pairs, images


def preprocessed_batches(backbone, images: Path, batch_size: int) -> list[torch.Tensor]:
    """The command's own tensors: embed's pipeline (reduced decode + the backbone's processor), in one process."""
    keys = sorted(p.name for p in images.iterdir())
    loader = ImagePipeline(images, keys, backbone.image_processor).loader(batch_size, 0, pin_memory=False)
    return [pixels for _, pixels, _ in loader]


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have finished (DataLoader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def forward_only(model, batches: list[torch.Tensor]) -> dict:
    with torch.inference_mode():
        image_features(model, batches[0])  # warm-up
        started, cpu = time.perf_counter(), cpu_seconds()
        for pixels in batches:
            image_features(model, pixels)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    n = sum(len(b) for b in batches)
    return dict(images=n, seconds=seconds, images_per_second=n / seconds, cpu_seconds_per_image=cpu / n)


def whole_command(source: str, pairs: Path, images: Path, out: Path, args) -> dict:
    config = EmbedConfig(
        data=pairs,
        images=images,
        backbone=source,
        out=out,
        batch_size=args.batch_size,
        workers=args.workers,
        device="cpu",
        runtime=args.runtime,
    )
    started, cpu = time.perf_counter(), cpu_seconds()
    summary = run_embed(config)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return dict(
        images=summary.images_new,
        image_phase_seconds=summary.image_seconds,
        image_phase_images_per_second=summary.images_per_second,
        text_phase_seconds=summary.text_seconds,
        seconds=seconds,
        images_per_second=summary.images_new / seconds,
        cpu_seconds_per_image=cpu / max(1, summary.images_new),  # the whole command's, texts and model load included
    )


def benchmark_model(name: str, work: Path, pairs: Path, images: Path, args) -> dict:
    source = "tiny" if name == "tiny" else str(build_checkpoint(name, work))
    backbone = load_backbone(source)
    model = backbone.model.eval()
    if onnx_runtime.is_onnx(args.runtime):  # exported here, so the command below loads the files
        model = onnx_runtime.OnnxDualEncoder(onnx_runtime.ensure_exported(backbone, args.runtime), model.config)
    forward = forward_only(model, preprocessed_batches(backbone, images, args.batch_size))
    del model, backbone
    command = whole_command(source, pairs, images, work / f"{name}.h5", args)
    row = dict(
        model=name,
        forward_only=forward,
        embed=command,
        efficiency_image_phase=command["image_phase_images_per_second"] / forward["images_per_second"],
        efficiency_whole_command=command["images_per_second"] / forward["images_per_second"],
    )
    print(
        f"{name} ({args.runtime}, batch {args.batch_size}, workers {args.workers}, {torch.get_num_threads()} threads): "
        f"forward only {forward['images_per_second']:.1f} img/s; embed image phase "
        f"{command['image_phase_images_per_second']:.1f} img/s ({row['efficiency_image_phase']:.0%}), whole command "
        f"{command['images_per_second']:.1f} img/s ({row['efficiency_whole_command']:.0%})"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit-b-32", "vit-l-14"], choices=MODELS)
    parser.add_argument("--n", type=int, default=256, help="JPEGs embedded")
    parser.add_argument("--side", type=int, default=1080, help="side of the square JPEGs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decode workers [embed's own choice]")
    parser.add_argument("--runtime", default="torch", choices=onnx_runtime.RUNTIMES)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "embed_efficiency.json")
    args = parser.parse_args()
    args.workers = embed_workers(args.workers, "cpu")  # what the command chooses, recorded and used by both
    torch.manual_seed(0)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tagcons-bench-eff-") as tmp:
        work = Path(tmp)
        os.environ[onnx_runtime.HOME_ENV] = str(work / "onnx-home")
        pairs, images = write_jpegs(work, args.n, args.side)
        results = [benchmark_model(name, work, pairs, images, args) for name in args.models]
    report = dict(
        benchmark="embed_efficiency",
        machine=_machine() | {"torch_threads": torch.get_num_threads()},
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
        settings=vars(args) | {"out": None},
        results=results,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
