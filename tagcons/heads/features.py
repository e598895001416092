"""Pair features from image and text embeddings (L2-normalised, as the study used).

- ``concat``: [image, text] (the study's head input), 2d columns.
- ``rich``:   [image, text, |image - text|, image * text, cosine], 4d + 1 columns.

`PairFeatures` keeps the unique image and text embeddings plus one index per pair and builds
feature rows on demand (``X[idx]``), so a table of a million pairs never exists as a dense
[n_pairs, 2d] matrix: heads read it by mini-batches. ``np.asarray(X)`` builds it whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagcons.cache.rows import l2_normalise
from tagcons.errors import BadInputError

FEATURE_KINDS = ("concat", "rich")
GATHER_CHUNK = 65536


def check_kind(kind: str) -> None:
    if kind not in FEATURE_KINDS:
        raise BadInputError(f"unknown features '{kind}'; choose one of {', '.join(FEATURE_KINDS)}")


def feature_dim(d: int, kind: str) -> int:
    check_kind(kind)
    return 2 * d if kind == "concat" else 4 * d + 1


def combine(img: np.ndarray, txt: np.ndarray, kind: str) -> np.ndarray:
    """Feature rows from already-normalised float32 embeddings of equal shape [n, d]."""
    if kind == "concat":
        return np.concatenate([img, txt], axis=1)
    cosine = np.einsum("ij,ij->i", img, txt)[:, None]
    return np.concatenate([img, txt, np.abs(img - txt), img * txt, cosine], axis=1)


def pair_features(img: np.ndarray, txt: np.ndarray, kind: str = "concat") -> np.ndarray:
    """Dense features of aligned image/text embeddings (one row per pair); normalises first."""
    check_kind(kind)
    return combine(l2_normalise(img), l2_normalise(txt), kind)


@dataclass
class PairFeatures:
    """Array-like feature table: ``len(X)``, ``X.shape``, ``X[idx]`` -> float32 rows, ``X.subset(idx)``."""

    image_embeds: np.ndarray  # [n_img, d] normalised (float32, or float16 to halve memory)
    text_embeds: np.ndarray  # [n_txt, d] normalised
    image_index: np.ndarray  # [n_pairs] row of each pair's image
    text_index: np.ndarray  # [n_pairs]
    kind: str = "concat"

    def __post_init__(self):
        check_kind(self.kind)

    def __len__(self) -> int:
        return len(self.image_index)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), feature_dim(self.image_embeds.shape[1], self.kind))

    @property
    def dense_nbytes(self) -> int:
        """Bytes a dense float32 copy would take."""
        return int(self.shape[0]) * int(self.shape[1]) * 4

    def __getitem__(self, idx) -> np.ndarray:
        img = self.image_embeds[self.image_index[idx]].astype(np.float32, copy=False)
        txt = self.text_embeds[self.text_index[idx]].astype(np.float32, copy=False)
        if img.ndim == 1:
            return combine(img[None], txt[None], self.kind)[0]
        return combine(img, txt, self.kind)

    def subset(self, idx) -> PairFeatures:
        return PairFeatures(self.image_embeds, self.text_embeds, self.image_index[idx], self.text_index[idx], self.kind)

    def cosine(self) -> np.ndarray:
        out = np.empty(len(self), dtype=np.float32)
        for start in range(0, len(self), GATHER_CHUNK):
            sl = slice(start, start + GATHER_CHUNK)
            img = self.image_embeds[self.image_index[sl]].astype(np.float32, copy=False)
            txt = self.text_embeds[self.text_index[sl]].astype(np.float32, copy=False)
            out[sl] = np.einsum("ij,ij->i", img, txt)
        return out

    def __array__(self, dtype=None, copy=None):
        dense = np.empty(self.shape, dtype=np.float32)
        for start in range(0, len(self), GATHER_CHUNK):
            dense[start : start + GATHER_CHUNK] = self[slice(start, start + GATHER_CHUNK)]
        return dense if dtype is None else dense.astype(dtype)


def cosine_of(X) -> np.ndarray:
    """Image-text cosine of each row: PairFeatures knows it; a dense array is read as its layout.

    One column = the cosine itself; an odd width = ``rich`` (cosine last); an even width = ``concat``
    halves [image, text] (normalised here, so raw embeddings work too).
    """
    if isinstance(X, PairFeatures):
        return X.cosine()
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1 or X.shape[1] == 1:
        return X.reshape(-1)
    if X.shape[1] % 2 == 1:
        return X[:, -1]
    half = X.shape[1] // 2
    return np.einsum("ij,ij->i", l2_normalise(X[:, :half]), l2_normalise(X[:, half:]))
