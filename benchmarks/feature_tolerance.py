"""How far apart the features of the same input land when it is encoded another way: the bound the
README's tolerance states and the tests compare with (tests/embed_helpers.py: FEATURE_ATOL).

One reference cache (one run, --batch-size 4) is compared with caches of the same images and texts
built otherwise: other batch sizes, other torch thread counts, in two runs (half, then the rest), and
as two shards merged. Reported per way: the largest absolute difference of any feature value, the
largest difference relative to the row's largest value, and the largest 1 - cosine similarity
(computed in float64).

    python benchmarks/feature_tolerance.py                  # tiny backbone, 96 images, ~1 minute
    python benchmarks/feature_tolerance.py --images 200 --backbone tiny

Writes benchmarks/results/feature_tolerance.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tagcons.cache import merge_parts  # noqa: E402
from tagcons.configs import EmbedConfig  # noqa: E402
from tagcons.embed.extractor import run_embed  # noqa: E402
from tagcons.runtime import limited_threads  # noqa: E402

TAGS = ["#바다", "#sunset", "맞팔", "#아주 긴 해시태그 문장입니다 정말로", "ootd", "#일상", "#food", "#밤하늘"]


def make_set(root: Path, n_images: int) -> tuple[Path, Path]:
    """Photo-like images of many sizes (the processor resizes each), three hashtags each."""
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    rows = ["Image Filename,Hashtag,Score"]
    for i in range(n_images):
        w, h = int(rng.integers(24, 160)), int(rng.integers(24, 160))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"img_{i:04d}.png")
        rows += [f"img_{i:04d}.png,{TAGS[(i + j) % len(TAGS)]}{i % 7},{1 + (i + j) % 5}" for j in range(3)]
    pairs = root / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return pairs, images


def embed(pairs: Path, images: Path, out: Path, backbone: str, threads: int = 1, **overrides) -> Path:
    options = dict(data=pairs, images=images, backbone=backbone, out=out, workers=0, batch_size=4, progress=False)
    with limited_threads(threads):
        run_embed(EmbedConfig(**{**options, **overrides}))
    return out


def half_pairs(pairs: Path, out: Path) -> Path:
    lines = pairs.read_text(encoding="utf-8").splitlines()
    out.write_text("\n".join(lines[: 1 + (len(lines) - 1) // 2]) + "\n", encoding="utf-8")
    return out


def features(path: Path) -> dict:
    import tagcons.cache

    with tagcons.cache.open(path) as cache:
        return {
            "images": dict(zip(cache.image_keys, cache.image_embeddings())),
            "texts": dict(zip(cache.text_keys, cache.text_embeddings())),
        }


def difference(a: dict, b: dict) -> dict:
    worst = {"max_abs": 0.0, "max_rel": 0.0, "max_one_minus_cosine": 0.0, "max_value": 0.0}
    for group in ("images", "texts"):
        assert sorted(a[group]) == sorted(b[group]), group
        for key, x in a[group].items():
            y = b[group][key]
            scale = float(np.abs(x).max())
            diff = float(np.abs(x - y).max())
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            cosine = float(x64 @ y64 / (np.linalg.norm(x64) * np.linalg.norm(y64)))
            worst["max_abs"] = max(worst["max_abs"], diff)
            worst["max_rel"] = max(worst["max_rel"], diff / scale)
            worst["max_one_minus_cosine"] = max(worst["max_one_minus_cosine"], 1.0 - cosine)
            worst["max_value"] = max(worst["max_value"], scale)
    return worst


def ways(root: Path, pairs: Path, images: Path, backbone: str) -> dict[str, Path]:
    built = {}
    for batch in (1, 3, 7, 16, 64):
        built[f"batch size {batch}"] = embed(pairs, images, root / f"b{batch}.h5", backbone, batch_size=batch)
    built["2 torch threads"] = embed(pairs, images, root / "t2.h5", backbone, threads=2)
    built["batch size 16, 2 threads"] = embed(pairs, images, root / "b16t2.h5", backbone, threads=2, batch_size=16)
    two_runs = root / "two_runs.h5"
    embed(half_pairs(pairs, root / "half.csv"), images, two_runs, backbone)
    built["two runs (half, then the rest)"] = embed(pairs, images, two_runs, backbone)
    shards = root / "shards.h5"
    for k in range(2):
        embed(pairs, images, shards, backbone, shard=(k, 2))
    if not shards.exists():
        merge_parts(shards)
    built["two shards merged"] = shards
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--backbone", default="tiny")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pairs, images = make_set(root, options.images)
        reference = features(embed(pairs, images, root / "reference.h5", options.backbone))
        results = {
            name: difference(reference, features(path))
            for name, path in ways(root, pairs, images, options.backbone).items()
        }
    overall = {
        "max_abs": max(r["max_abs"] for r in results.values()),
        "max_rel": max(r["max_rel"] for r in results.values()),
        "max_one_minus_cosine": max(r["max_one_minus_cosine"] for r in results.values()),
        "max_value": max(r["max_value"] for r in results.values()),
    }
    report = {
        "backbone": options.backbone,
        "images": options.images,
        "reference": "one run, --batch-size 4, 1 torch thread",
        "ways": results,
        "overall": overall,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }
    for name, r in {**results, "overall": overall}.items():
        print(f"{name:32s} max abs {r['max_abs']:.3g}  max rel {r['max_rel']:.3g}", end="  ")
        print(f"1 - cosine {r['max_one_minus_cosine']:.2g}  max |value| {r['max_value']:.2f}")
    out = HERE / "results" / "feature_tolerance.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
