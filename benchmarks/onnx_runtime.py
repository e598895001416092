"""ONNX Runtime against torch eager: speed of each tower and feature drift, per model (docs/onnx.md).

Models are full-size random-weight CLIP ViT-B/32 and ViT-L/14 (benchmarks/embed_throughput.py's
`build_checkpoint`, loaded through `--backbone DIR` as users load theirs); `tiny` is the offline test
backbone, for checking that the script works; any other name is a `--backbone` source (`clip`,
`koclip`, `local:DIR`, `hf:ORG/NAME`), for the drift of real weights. Inputs: --n photo-like images
(gradients plus noise, through the model's own processor) and --n hashtags, the same for every runtime.

For each runtime (torch eager fp32, onnx, onnx-int8) and tower: rows per second over all inputs in
batches of --batch-size after one warm-up batch, with the intra-op thread count torch uses (ONNX
Runtime is given the same). Drift: per row cosine distance (1 - cos) to torch fp32 features, max and
mean over the --n rows, and the largest absolute difference. Time the towers on a quiet machine:
the JSON records the load average before and after.

    python benchmarks/onnx_runtime.py                          # vit-b-32 and vit-l-14, 200 images and texts
    nice python benchmarks/onnx_runtime.py --models tiny --n 16 --out /tmp/onnx.json   # a smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from embed_throughput import ARCHITECTURES, _machine, build_checkpoint  # noqa: E402

from tagcons.embed import onnx_runtime  # noqa: E402
from tagcons.embed.backbones import load_backbone  # noqa: E402
from tagcons.embed.features import image_features, text_features  # noqa: E402

MODELS = ("vit-b-32", "vit-l-14", "tiny")
RUNTIMES = ("torch", "onnx", "onnx-int8")


def photo_like(rng, side: int) -> Image.Image:
    y, x = np.mgrid[0:side, 0:side] / side
    base = np.stack([x, y, (x + y) / 2], axis=-1) * rng.uniform(100, 255, size=3)
    noise = rng.normal(0, 12, size=(side, side, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def build_inputs(backbone, n: int, side: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    rng = np.random.default_rng(seed)
    images = [photo_like(rng, side) for _ in range(n)]
    pixels = backbone.image_processor(images=images, return_tensors="pt")["pixel_values"]
    words = ["일상", "ootd", "맞팔", "하늘", "sunset", "coffee", "여행", "food", "daily", "강아지"]
    texts = [f"#{words[i % len(words)]}{i} {words[(i * 7) % len(words)]}" for i in range(n)]
    return pixels, texts


def encode(model, backbone, pixels: torch.Tensor, texts: list[str], batch_size: int) -> dict:
    """{'images'|'texts': (features [n, d], seconds)} for one runtime, after a warm-up batch of each."""
    out = {}
    with torch.inference_mode():
        image_features(model, pixels[:batch_size])
        started, rows = time.perf_counter(), []
        for start in range(0, len(pixels), batch_size):
            rows.append(image_features(model, pixels[start : start + batch_size]).float().numpy())
        out["images"] = (np.concatenate(rows), time.perf_counter() - started)
        text_features(model, **backbone.tokenize(texts[:batch_size]))
        started, rows = time.perf_counter(), []
        for start in range(0, len(texts), batch_size):
            tokens = backbone.tokenize(texts[start : start + batch_size])
            rows.append(text_features(model, **tokens).float().numpy())
        out["texts"] = (np.concatenate(rows), time.perf_counter() - started)
    return out


def drift(reference: np.ndarray, other: np.ndarray) -> dict:
    reference, other = reference.astype(np.float64), other.astype(np.float64)  # no float32 rounding below 0
    cos = (reference * other).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1))
    distance = 1 - cos
    return dict(
        max_cosine_distance=float(distance.max()),
        mean_cosine_distance=float(distance.mean()),
        max_abs_difference=float(np.abs(reference - other).max()),
    )


def benchmark_model(name: str, work: Path, args) -> dict:
    source = str(build_checkpoint(name, work)) if name in ARCHITECTURES else name
    backbone = load_backbone(source)
    torch_model = backbone.model.eval()
    pixels, texts = build_inputs(backbone, args.n, args.image_side)
    results = {"torch": encode(torch_model, backbone, pixels, texts, args.batch_size)}
    export_seconds = {}
    for runtime in RUNTIMES[1:]:
        started = time.perf_counter()
        files = onnx_runtime.ensure_exported(backbone, runtime)
        export_seconds[runtime] = time.perf_counter() - started
        model = onnx_runtime.OnnxDualEncoder(files, torch_model.config)
        results[runtime] = encode(model, backbone, pixels, texts, args.batch_size)
    row = dict(model=name, export_seconds=export_seconds, towers={})
    for tower in ("images", "texts"):
        base_features, base_seconds = results["torch"][tower]
        row["towers"][tower] = {
            runtime: dict(
                rows_per_second=len(features) / seconds,
                speedup_over_torch=base_seconds / seconds,
                **({} if runtime == "torch" else drift(base_features, features)),
            )
            for runtime, (features, seconds) in ((r, results[r][tower]) for r in results)
        }
    print_row(row)
    return row


def print_row(row: dict) -> None:
    for tower, by_runtime in row["towers"].items():
        parts = [
            f"{runtime} {r['rows_per_second']:.1f}/s (x{r['speedup_over_torch']:.2f}"
            + (
                f", cos dist max {r['max_cosine_distance']:.2e} mean {r['mean_cosine_distance']:.2e})"
                if runtime != "torch"
                else ")"
            )
            for runtime, r in by_runtime.items()
        ]
        print(f"{row['model']} {tower}: " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", default=["vit-b-32", "vit-l-14"], help=f"{', '.join(MODELS)} or a --backbone source"
    )
    parser.add_argument("--n", type=int, default=200, help="images and texts encoded by every runtime")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-side", type=int, default=256, help="side of the generated images before the processor")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "onnx_runtime.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tagcons-bench-onnx-") as tmp:
        os.environ[onnx_runtime.HOME_ENV] = str(Path(tmp) / "onnx-home")  # fresh exports, timed
        results = [benchmark_model(name, Path(tmp), args) for name in args.models]
    report = dict(
        benchmark="onnx_runtime",
        machine=_machine() | {"onnxruntime": _version("onnxruntime"), "torch_threads": torch.get_num_threads()},
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
        settings=vars(args) | {"out": None},
        architectures={name: ARCHITECTURES[name] for name in args.models if name in ARCHITECTURES},
        results=results,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"saved {args.out}")


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
