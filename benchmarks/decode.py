"""Decode + preprocess throughput per core for 1080-pixel JPEGs: full decode against reduced decodes.

Each path turns a JPEG file into the processor's pixel_values for a full-size ViT-B/32 CLIP
(random weights, built and loaded the way users load theirs):

    full           the whole 1080x1080 image decoded, then the processor (the reference)
    reduced        tagcons' default, `load_rgb(min_side=reduced_side(processor))`: PIL's DCT-scaled
                   decode at the smallest scale covering the model's input (1/4: 270 pixels), then
                   the processor
    reduced-2x     the same covering twice the input side (1/2: 540 pixels)
    simplejpeg-1x  simplejpeg's scaled decode (libjpeg-turbo) at the smallest scale covering the input

One process, one thread: per-core figures from the process's CPU time (the machine is shared), best
of --repeats with the paths taking turns. The feature
difference of each path against `full` is measured on the same images: max |pixel_values| difference
and the cosine between projected image features (per image; the minimum is reported).

    python benchmarks/decode.py                 # 24 images, 3 repeats, writes results/decode.json
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
import torch
from PIL import Image, ImageDraw
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from embed_throughput import build_checkpoint  # noqa: E402

from tagcons.data.images import REDUCE_FACTOR, load_rgb, reduced_side  # noqa: E402
from tagcons.embed.backbones import load_backbone  # noqa: E402
from tagcons.embed.features import image_features  # noqa: E402


def write_fixture(directory: Path, n_images: int) -> list[Path]:
    """1080x1080 photo-like JPEGs (quality 90, 4:2:0, ~0.2-0.4 MB as phones and Instagram save them)."""
    rng = np.random.default_rng(0)
    paths = [directory / f"photo_{i:03d}.jpg" for i in range(n_images)]
    for path in paths:
        photo_like(rng).save(path, quality=90)
    return paths


def photo_like(rng, side: int = 1080) -> Image.Image:
    """Structure at several scales (smooth fields, hard-edged shapes) plus sensor noise.

    Gaussian noise alone makes a JPEG of pure entropy (~1 MB at 1080 pixels) whose Huffman decoding,
    which DCT scaling cannot skip, dominates; photos spend their bytes on edges and texture.
    """
    field = np.zeros((side, side, 3))
    for cells, weight in ((4, 90.0), (16, 40.0), (64, 20.0), (256, 8.0)):
        small = Image.fromarray(rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8))
        field += weight / 158.0 * np.asarray(small.resize((side, side), Image.Resampling.BICUBIC), dtype=float)
    image = Image.fromarray(np.clip(field + rng.normal(0, 3, field.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, side, 2)
        w, h = rng.integers(40, side // 3, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + w, y + h], fill=colour)
    return image


def decoders(processor) -> dict:
    """Path name -> function(file path) -> RGB PIL image."""
    min_side = reduced_side(processor)
    input_side = min_side // REDUCE_FACTOR
    paths = {
        "full": lambda path: load_rgb(path),
        "reduced": lambda path: load_rgb(path, min_side=min_side),
        "reduced-2x": lambda path: load_rgb(path, min_side=2 * min_side),
    }
    try:
        import simplejpeg
    except ImportError:
        return paths
    paths["simplejpeg-1x"] = lambda path: Image.fromarray(
        simplejpeg.decode_jpeg(path.read_bytes(), colorspace="RGB", min_height=input_side, min_width=input_side)
    )
    return paths


def pixel_values(processor, image) -> np.ndarray:
    return np.asarray(processor(images=[image], return_tensors="np")["pixel_values"])[0]


def time_paths(paths_by_name: dict, processor, paths: list[Path], repeats: int) -> dict:
    """Best of `repeats` passes per path, the paths taking turns so that load swings hit them alike.

    Times are the process's CPU seconds (one thread: CPU time per core, little moved by the other
    processes sharing the cores) and wall seconds, for decode alone and decode + preprocess.
    """
    times = {name: {"cpu": [], "wall": [], "decode_cpu": []} for name in paths_by_name}
    for _ in range(repeats):
        for name, decode in paths_by_name.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for path in paths:
                pixel_values(processor, decode(path))
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
            cpu = time.process_time()
            for path in paths:
                decode(path)
            times[name]["decode_cpu"].append(time.process_time() - cpu)
    return {name: _rates(entry, len(paths)) for name, entry in times.items()}


def _rates(entry: dict, n_images: int) -> dict:
    return dict(
        images_per_second_per_core=n_images / min(entry["cpu"]),
        images_per_second_wall=n_images / min(entry["wall"]),
        ms_per_image=1000 * min(entry["cpu"]) / n_images,
        decode_ms_per_image=1000 * min(entry["decode_cpu"]) / n_images,
        cpu_seconds=entry["cpu"],
        wall_seconds=entry["wall"],
    )


def encode(model, processor, decode, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """pixel_values and projected image features (float64) of every image through one decode path."""
    pixels = np.stack([pixel_values(processor, decode(path)) for path in paths])
    with torch.inference_mode():
        features = image_features(model, torch.from_numpy(pixels)).double().numpy()
    return pixels, features


def feature_difference(encoded, reference) -> dict:
    (pixels, features), (ref_pixels, ref_features) = encoded, reference
    cosine = np.sum(features * ref_features, axis=1) / (
        np.linalg.norm(features, axis=1) * np.linalg.norm(ref_features, axis=1)
    )
    return dict(
        max_abs_pixel_values_difference=float(np.abs(pixels - ref_pixels).max()),
        mean_abs_pixel_values_difference=float(np.abs(pixels - ref_pixels).mean()),
        min_cosine=float(cosine.min()),
        max_cosine_distance=float(1 - cosine.min()),
        mean_cosine_distance=float(np.mean(1 - cosine)),
    )


def run(args) -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        torch.set_num_threads(1)
        work = Path(tmp)
        backbone = load_backbone(str(build_checkpoint("vit-b-32", work)))
        processor = backbone.image_processor
        paths = write_fixture(work, args.images)
        sizes = [path.stat().st_size for path in paths]
        paths_by_name = decoders(processor)
        reference = encode(backbone.model, processor, paths_by_name["full"], paths)
        results = time_paths(paths_by_name, processor, paths, args.repeats)
        for name, decode in paths_by_name.items():
            entry = results[name]
            entry["decoded_size"] = list(decode(paths[0]).size)
            entry.update(feature_difference(encode(backbone.model, processor, decode, paths), reference))
            print(
                f"{name:14s} {entry['images_per_second_per_core']:7.1f} img/s/core  "
                f"decode {entry['decode_ms_per_image']:6.2f} ms  cosine distance {entry['max_cosine_distance']:.2e}  "
                f"max |dpx| {entry['max_abs_pixel_values_difference']:.3f}",
                flush=True,
            )
    full = results["full"]["images_per_second_per_core"]
    for entry in results.values():
        entry["speedup_vs_full"] = entry["images_per_second_per_core"] / full
    return dict(
        benchmark="decode + preprocess per core, 1080x1080 JPEG (quality 90) -> ViT-B/32 pixel_values",
        images=args.images,
        mean_jpeg_bytes=int(np.mean(sizes)),
        repeats=args.repeats,
        model="CLIP ViT-B/32, random weights (seed 0), full size",
        processor=type(processor).__name__,
        paths=results,
        loadavg=list(os.getloadavg()),
        cpu_count=os.cpu_count(),
        machine=platform.processor() or platform.machine(),
        python=platform.python_version(),
        pillow=Image.__version__,
        simplejpeg=library_version("simplejpeg"),
    )


def library_version(module: str) -> str | None:
    """The module's __version__, None when it is not installed or has none."""
    try:
        return getattr(__import__(module), "__version__", None)
    except ImportError:
        return None


def save_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "decode.json")
    args = parser.parse_args()
    save_report(run(args), args.out)


if __name__ == "__main__":
    main()
