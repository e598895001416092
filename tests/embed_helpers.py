"""Small image sets and embed runs shared by the embed and sharding tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from tagcons.embed.extractor import EmbedConfig, run_embed

# Features of the same input differ with how it was encoded (batch size, threads, two runs, two shards
# merged) by a few float32 rounding steps: 1.3e-6 measured here (benchmarks/feature_tolerance.py), 2.0e-6
# on another machine. The documented tolerance (README, "Tolerance") for the tiny backbone is 4e-6.
# TAGCONS_DETERMINISTIC_FEATURES=1 compares bit for bit instead (a deterministic setup).
FEATURE_ATOL = 0.0 if os.environ.get("TAGCONS_DETERMINISTIC_FEATURES") == "1" else 4e-6


def assert_features_close(actual, expected, err_msg: str = "") -> None:
    np.testing.assert_allclose(actual, expected, rtol=0, atol=FEATURE_ATOL, err_msg=err_msg)


COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (240, 220, 30), (20, 20, 20), (240, 240, 240)]
TAGS = ["#빨강", "초록", "#파랑 하늘", "노랑", "#밤", "#일상", "ootd", "맞팔"]


def make_image_set(root: Path, n_images: int = 12, tags_per_image: int = 3) -> tuple[Path, Path]:
    """(pairs.csv, images dir): coloured squares with a few hashtags each."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = ["Image Filename,Hashtag,Score"]
    for i in range(n_images):
        name = f"cat_{i:02d}.png"
        image = Image.new("RGB", (48 + i, 40), COLOURS[i % len(COLOURS)])
        image.paste(COLOURS[(i + 2) % len(COLOURS)], (5, 5, 20, 20))
        image.save(images / name)
        for j in range(tags_per_image):
            rows.append(f"{name},{TAGS[(i + j) % len(TAGS)]},{1 + (i + j) % 5}")
    pairs = root / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return pairs, images


def embed(pairs: Path, images: Path, out: Path, **overrides):
    options = dict(data=pairs, images=images, backbone="tiny", out=out, workers=0, batch_size=4)
    options.update(overrides)
    return run_embed(EmbedConfig(**options))


def cache_contents(path: Path) -> dict:
    """{'images': {key: row}, 'texts': {key: row}, 'failed': {key: reason}} of a consolidated cache."""
    import tagcons.cache

    with tagcons.cache.open(path) as cache:
        return {
            "images": dict(zip(cache.image_keys, cache.image_embeddings())),
            "texts": dict(zip(cache.text_keys, cache.text_embeddings())),
            "failed": dict(cache.failed),
        }


def assert_same_contents(a: dict, b: dict) -> None:
    for group in ("images", "texts"):
        assert sorted(a[group]) == sorted(b[group]), group
        for key in a[group]:
            assert_features_close(a[group][key], b[group][key], err_msg=f"{group}/{key}")
    assert a["failed"] == b["failed"]
