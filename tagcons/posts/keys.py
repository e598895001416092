"""Cache rows of posts' images and hashtags, looked up a chunk at a time.

The keys are held once as Arrow string arrays (no Python object per key) beside their sorted 64-bit
hashes: a chunk's values are hashed, found by binary search and each hit checked against the key itself,
so a lookup costs the chunk's size, not the cache's (Arrow's `index_in` rebuilt its hash table of every
key on each call: half a second a chunk against a million images), and the index holds 16 bytes a key
besides the keys, whatever the number of posts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

OK = "ok"
HELD_TEXTS_BYTES = 1 << 30  # the hashtags' float32 embeddings are read once and held up to this size
IMAGE_MISSING = "image not in cache"
TEXT_MISSING = "hashtag not in cache"


@dataclass
class RowLookup:
    image: np.ndarray  # cache row of each pair's image (-1: none)
    text: np.ndarray  # cache row of each pair's hashtag (-1: none)
    status: np.ndarray  # "ok" or why the pair cannot be scored

    @property
    def ok(self) -> np.ndarray:
        return self.status == OK


def _hashes(values: np.ndarray) -> np.ndarray:
    return pd.util.hash_array(values, categorize=False)


class KeyIndex:
    """Row of each of a list of distinct keys, or -1; by sorted hashes, each hit checked against the key."""

    def __init__(self, keys: list[str]):
        self.keys = pa.array(keys, pa.string())
        hashes = _hashes(np.asarray(keys, dtype=object))
        self.order = np.argsort(hashes, kind="stable")
        self.sorted = hashes[self.order]
        self.collides = bool(np.any(self.sorted[1:] == self.sorted[:-1]))  # two keys, one hash: Arrow's lookup

    def positions(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=object)
        if self.collides or not len(self.sorted) or not len(values):
            return self._looked_up(values)
        hashes = _hashes(values)
        at = np.minimum(np.searchsorted(self.sorted, hashes), len(self.sorted) - 1)
        rows = np.where(self.sorted[at] == hashes, self.order[at], -1)
        hit = np.flatnonzero(rows >= 0)
        same = pc.equal(self.keys.take(pa.array(rows[hit])), pa.array(values[hit], pa.string()))
        rows[hit[~same.to_numpy(zero_copy_only=False)]] = -1
        return rows.astype(np.int64)

    def _looked_up(self, values: np.ndarray) -> np.ndarray:
        found = pc.index_in(pa.array(values, pa.string()), value_set=self.keys)
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def __len__(self) -> int:
        return len(self.keys)


class CacheKeys:
    def __init__(self, cache):
        self.cache = cache
        self._keys = {group: KeyIndex(cache.keys(group)) for group in ("images", "texts")}
        self._failed = {key: f"image failed: {reason}" for key, reason in cache.failed.items()}
        self._held_texts = None

    def positions(self, group: str, values) -> np.ndarray:
        return self._keys[group].positions(values)

    def image_status(self, images) -> np.ndarray:
        rows = self.positions("images", images)
        status = np.where(rows >= 0, OK, IMAGE_MISSING).astype(object)
        for i in np.flatnonzero(rows < 0):
            status[i] = self._failed.get(images[i], IMAGE_MISSING)
        return status

    def rows(self, images, texts) -> RowLookup:
        image, text = self.positions("images", images), self.positions("texts", texts)
        status = np.where(text >= 0, OK, TEXT_MISSING).astype(object)
        missing_image = image < 0
        status[missing_image] = self.image_status(np.asarray(images, dtype=object)[missing_image])
        return RowLookup(image, text, status)

    def read(self, group: str, rows: np.ndarray) -> np.ndarray:
        """L2-normalised float32 embeddings of `rows` (sorted unique rows read fastest)."""
        return self.cache.read_rows(group, rows, normalise=True)

    def text_side(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, index into them) of the hashtags at cache `rows`: every chunk of posts touches most of
        a vocabulary, so one that fits HELD_TEXTS_BYTES is read once and held; a larger one chunk by chunk."""
        if self._held_texts is None and self._texts_fit():
            self._held_texts = self.cache.text_embeddings(normalise=True)
        if self._held_texts is not None:
            return self._held_texts, rows
        unique, index = np.unique(rows, return_inverse=True)
        return self.read("texts", unique), index

    def _texts_fit(self) -> bool:
        return len(self._keys["texts"]) * self.cache.projection_dim * 4 <= HELD_TEXTS_BYTES
