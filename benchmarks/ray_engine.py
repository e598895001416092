"""The Ray engine against the local one: `tagcons embed` on the same images, each into a new cache.

Target: Ray's images/s at least 0.9 of the local engine's (its overhead must stay small). Images are
JPEGs of --side pixels; the ratio is of the image pass's rate (rows encoded / seconds of the pass),
and the end-to-end seconds (Ray's start included) are saved too. Without --ray-address a local Ray is
started with this machine's CPUs; with one the run joins that cluster.

    python benchmarks/ray_engine.py                          # 1,000 images, the tiny backbone
    python benchmarks/ray_engine.py --backbone DIR --n-images 1000 --device cuda
    python benchmarks/ray_engine.py --n-images 16            # a quick check that it works

Real figures need a quiet machine: on a shared, loaded one both engines fight for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tagcons.embed.extractor import EmbedConfig, run_embed  # noqa: E402

TARGET_RATIO = 0.9


def make_images(root: Path, n: int, side: int) -> tuple[Path, Path]:
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["Image Filename,Hashtag,Score"]
    for i in range(n):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"img_{i:05d}.jpg", quality=90)
        rows.append(f"img_{i:05d}.jpg,#tag{i % 50},{1 + i % 5}")
    pairs = root / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return pairs, images


def run(engine: str, pairs: Path, images: Path, out: Path, args) -> dict:
    config = EmbedConfig(
        data=pairs,
        images=images,
        backbone=args.backbone,
        out=out,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        engine=engine,
        ray_address=args.ray_address if engine == "ray" else None,
    )
    started = time.perf_counter()
    summary = run_embed(config)
    return {
        "images": summary.images_new,
        "image_seconds": round(summary.image_seconds, 3),
        "images_per_second": round(summary.images_per_second, 2),
        "end_to_end_seconds": round(time.perf_counter() - started, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ray_engine.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pairs, images = make_images(Path(tmp), args.n_images, args.side)
        local = run("local", pairs, images, Path(tmp) / "local.h5", args)
        ray = run("ray", pairs, images, Path(tmp) / "ray.h5", args)
    ratio = ray["images_per_second"] / local["images_per_second"] if local["images_per_second"] else 0.0
    result = {
        "benchmark": "ray_engine",
        "command": "python benchmarks/ray_engine.py " + " ".join(sys.argv[1:]),
        "rows": f"{args.n_images} synthetic {args.side}x{args.side} JPEGs, each engine into a new cache",
        "backbone": args.backbone,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
        "local": local,
        "ray": ray,
        "ratio_images_per_second": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
