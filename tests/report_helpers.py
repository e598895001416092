"""A small study for the report tests: images in two categories, hostile hashtags and file names,
real fit-head runs on a tiny cache, and hand-written runs that carry every metrics.json contract key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tagcons.evaluate.provenance import keys_hash, pair_keys

HOSTILE_TAGS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
HOSTILE_IMAGE = 'fashion_"><img src=y onerror=alert(2)>.png'
CATEGORY_REGEX = "^([a-z]+)_"
COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (240, 220, 30), (20, 20, 20), (240, 240, 240)]
TAGS = ["#빨강", "초록", "#파랑 하늘", "노랑", "#밤", "#일상", "ootd", "NA"]
N_IMAGES = 20
CONTRACT_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "mae", "qwk", "spearman")


def image_names(n_images: int = N_IMAGES) -> list[str]:
    names = [f"{'fashion' if i % 2 else 'food'}_{i:02d}.png" for i in range(n_images - 1)]
    return names + [HOSTILE_IMAGE]


def make_study(root: Path, n_images: int = N_IMAGES, tags_per_image: int = 6) -> tuple[Path, Path]:
    """(pairs.csv with a `Category` column, images folder); every image has one hostile hashtag."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, name in enumerate(image_names(n_images)):
        picture = Image.new("RGB", (120 + 4 * i, 90), COLOURS[i % len(COLOURS)])
        picture.paste(COLOURS[(i + 2) % len(COLOURS)], (10, 10, 60, 60))
        picture.save(images / name)
        tags = [TAGS[(i + j) % len(TAGS)] for j in range(tags_per_image - 1)] + [HOSTILE_TAGS[i % 2]]
        rows += [(name, tag, 1 + (i + j) % 5, name.split("_")[0].upper()) for j, tag in enumerate(tags)]
    pairs = root / "pairs.csv"
    pd.DataFrame(rows, columns=["Image Filename", "Hashtag", "Score", "Category"]).to_csv(pairs, index=False)
    return pairs, images


def fit_runs(root: Path, heads=("logreg", "mlp")) -> tuple[list[Path], Path, Path]:
    """Real runs: the study embedded with the tiny backbone, one fit-head run per head."""
    from embed_helpers import embed

    from tagcons.heads import FitHeadConfig, fit_head

    pairs, images = make_study(root)
    embed(pairs, images, root / "cache.h5")
    runs = [
        fit_head(FitHeadConfig(cache=root / "cache.h5", data=pairs, head=head, out=root / "runs" / head)).run_dir
        for head in heads
    ]
    return runs, pairs, images


def _predictions(seed: int) -> pd.DataFrame:
    """Hand-made predictions: hostile rows always wrong by 4, the rest noisy around the truth."""
    rng = np.random.default_rng(0)  # the same rows and truths for every run: their test rows match
    rows = [(name, tag, int(rng.integers(1, 6))) for name in image_names() for tag in ("#a", "#b")]
    rows += [(HOSTILE_IMAGE, HOSTILE_TAGS[0], 1), (image_names()[0], HOSTILE_TAGS[1], 1)]
    frame = pd.DataFrame(rows, columns=["image", "text", "true"])
    noise = np.random.default_rng(seed).integers(-1, 2, len(frame))
    frame["pred"] = np.clip(frame["true"] + noise, 1, 5)
    frame.loc[frame["text"].isin(HOSTILE_TAGS), "pred"] = 5
    proba = np.full((len(frame), 5), 0.05)
    proba[np.arange(len(frame)), frame["pred"] - 1] = 0.8
    frame["expected"] = proba @ np.arange(1, 6)
    for k in range(5):
        frame[f"p{k + 1}"] = proba[:, k]
    return frame


def _headline(value: float) -> dict:
    return {name: value for name in CONTRACT_METRICS}


def contract_metrics(value: float, test_hash: str, n_test: int) -> dict:
    """metrics.json with every key of the shared contract (values made up, shapes as specified)."""
    return {
        **_headline(value),
        "n_train": 100,
        "n_test": n_test,
        "n_test_images": N_IMAGES,
        "per_class": {},
        "baseline": _headline(0.1),
        "ci95": {name: [value - 0.1, value + 0.1] for name in CONTRACT_METRICS},
        "bootstrap": {"resamples": 1000, "seed": 7, "unit": "image"},
        "test_rows_hash": test_hash,
        "baselines": {"majority": _headline(0.1), "text_only": _headline(0.2), "image_prior": _headline(0.3)},
        "calibration": {
            "temperature": 1.7,
            "rows": "test",
            "before": {"log_loss": 1.4, "brier": 0.7, "ece": 0.21},
            "after": {"log_loss": 1.2, "brier": 0.6, "ece": 0.05},
        },
        "decode": "expected",
        "decodings": {"argmax": _headline(value - 0.05), "expected": _headline(value)},
        "history": {"train_loss": [1.5, 1.2, 1.0], "val_loss": [1.6, 1.4, 1.35], "val_qwk": [0.1, 0.2, 0.25]},
        "n_dropped_fit": 0,
        "n_dropped_test": 0,
        "n_duplicates_removed": 0,
    }


def contract_run(root: Path, name: str, value: float, seed: int, **overrides) -> Path:
    """A run directory written by hand following the metrics.json contract, with a reliability.png."""
    run = root / name
    run.mkdir(parents=True)
    predictions = _predictions(seed)
    predictions.to_csv(run / "predictions.csv", index=False)
    test_hash = keys_hash(pair_keys(predictions["image"], predictions["text"]))
    (run / "metrics.json").write_text(
        json.dumps({**contract_metrics(value, test_hash, len(predictions)), **overrides}), encoding="utf-8"
    )
    (run / "config.json").write_text(json.dumps({"head": name, "backbone": "tiny", "split": "images"}))
    Image.new("RGB", (200, 150), (250, 250, 250)).save(run / "reliability.png")
    return run
