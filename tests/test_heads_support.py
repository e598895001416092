"""Synthetic data for the head tests (no test functions here): planted signal, pairs files, caches.

The planted score shows up twice: linearly (a score-dependent shift of the text embedding along a
fixed direction, which logreg/mlp/lgbm can read from concatenated features) and as image-text
cosine (the text leans towards its image more for higher scores, which the threshold head reads).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

LABEL_SHARES = (0.06, 0.12, 0.18, 0.28, 0.36)


@dataclass
class Synthetic:
    images: np.ndarray  # key per pair
    texts: np.ndarray
    labels: np.ndarray
    image_embeds: dict  # key -> vector
    text_embeds: dict


def planted(n_images: int = 40, per_image: int = 12, dim: int = 16, strength: float = 1.0, seed: int = 0) -> Synthetic:
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    image_vecs = {f"cat_{i:03d}.png": rng.normal(size=dim) for i in range(n_images)}
    images, texts, labels, text_vecs = [], [], [], {}
    for key, vec in image_vecs.items():
        for j in range(per_image):
            score = int(rng.choice(5, p=LABEL_SHARES)) + 1
            text = f"#tag_{key[4:7]}_{j}"
            unit = vec / np.linalg.norm(vec)
            text_vecs[text] = rng.normal(size=dim) * 0.5 + strength * ((score - 3) * direction + (score - 1) * unit)
            images.append(key), texts.append(text), labels.append(score)
    return Synthetic(np.array(images), np.array(texts), np.array(labels), image_vecs, text_vecs)


def write_pairs(data: Synthetic, path, labels: bool = True):
    frame = pd.DataFrame({"Image Filename": data.images, "Hashtag": data.texts})
    if labels:
        frame["Score"] = data.labels
    frame.to_csv(path, index=False)
    return path


def write_cache(
    data: Synthetic, path, backbone: str = "tiny", skip_images=(), failed_images=(), settings=None, text_template="{}"
):
    """A real tagcons cache holding the synthetic embeddings (minus skipped, plus failed images)."""
    from tagcons.cache import CacheMeta, CacheWriter

    dim = len(next(iter(data.image_embeds.values())))
    meta = CacheMeta(
        backbone=backbone,
        model_id=f"test/{backbone}",
        revision=None,
        projection_dim=dim,
        text_template=text_template,
        settings=settings or {},
    )
    keys = [k for k in data.image_embeds if k not in skip_images and k not in failed_images]
    with CacheWriter(path, meta) as writer:
        writer.commit(
            images=(
                keys,
                [hashlib.sha256(k.encode()).hexdigest() for k in keys],
                np.stack([data.image_embeds[k] for k in keys]).astype(np.float32),
            ),
            texts=(list(data.text_embeds), np.stack(list(data.text_embeds.values())).astype(np.float32)),
        )
        if failed_images:
            writer.commit_failures(
                list(failed_images), [""] * len(failed_images), ["cannot identify image"] * len(failed_images)
            )
        writer.consolidate()
    return path


def dense(data: Synthetic, kind: str = "concat"):
    from tagcons.heads.features import pair_features

    img = np.stack([data.image_embeds[k] for k in data.images])
    txt = np.stack([data.text_embeds[t] for t in data.texts])
    return pair_features(img, txt, kind)


def planted_split():
    """(X_train, y_train, images_train, X_test, y_test): 40 planted images, the first 32 for training."""
    data = planted(n_images=40, per_image=12, dim=16)
    X = dense(data)
    train = np.isin(data.images, list(data.image_embeds)[:32])
    return X[train], data.labels[train], data.images[train], X[~train], data.labels[~train]
