"""The one join of pairs to cache rows: which pairs have both embeddings, and those embeddings.

Only the cache rows the pairs use are read (in file order, by chunks when most rows are needed),
optionally L2-normalised, and kept once per unique image and text; ``image_index``/``text_index``
give each present pair its rows. Unique embeddings above ``HALF_PRECISION_BYTES`` are held as
float16 to halve memory. Works on any reader with ``index``, ``failed``, ``read_rows``,
``iter_rows``, ``image_keys``/``text_keys`` and ``projection_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tagcons.cache.rows import l2_normalise

HALF_PRECISION_BYTES = 1024**3
READ_BLOCK = 65536


@dataclass
class JoinedRows:
    """Unique embeddings of the present pairs and each present pair's row in them."""

    image_embeds: np.ndarray  # [n_unique_images_used, d]
    text_embeds: np.ndarray  # [n_unique_texts_used, d]
    image_index: np.ndarray  # [n_present]
    text_index: np.ndarray  # [n_present]
    present: np.ndarray  # bool [n_pairs]
    missing_images: list[str] = field(default_factory=list)  # neither embedded nor failed, first-seen order
    missing_texts: list[str] = field(default_factory=list)
    failed_images: dict[str, str] = field(default_factory=dict)  # key -> why it could not be embedded

    @property
    def n_missing(self) -> int:
        return int((~self.present).sum())


def join_rows(cache, images, texts, normalise: bool = True) -> JoinedRows:
    """Pairs (images[i], texts[i]) joined to the cache; a pair with an absent or failed side is not present."""
    failed = dict(cache.failed)
    image_rows, missing_images, failed_hit = _positions(np.asarray(images), cache.index("images"), failed)
    text_rows, missing_texts, _ = _positions(np.asarray(texts), cache.index("texts"), ())
    present = (image_rows >= 0) & (text_rows >= 0)
    used_images, image_index = np.unique(image_rows[present], return_inverse=True)
    used_texts, text_index = np.unique(text_rows[present], return_inverse=True)
    dim = int(cache.projection_dim)
    return JoinedRows(
        load_rows(cache, "images", used_images, dim, normalise),
        load_rows(cache, "texts", used_texts, dim, normalise),
        image_index.reshape(-1),
        text_index.reshape(-1),
        present,
        missing_images,
        missing_texts,
        {k: failed[k] for k in failed_hit},
    )


def _positions(values: np.ndarray, lookup: dict[str, int], excluded) -> tuple[np.ndarray, list, list]:
    """Cache row of each value (-1 if absent or excluded), plus absent and excluded uniques."""
    codes, uniques = pd.factorize(values)
    rows = np.array([-1 if u in excluded else lookup.get(u, -1) for u in uniques], dtype=np.int64)
    absent = [u for u in uniques if u not in lookup and u not in excluded]
    hit_excluded = [u for u in uniques if u in excluded]
    return rows[codes], absent, hit_excluded


def load_rows(cache, group: str, rows: np.ndarray, dim: int, normalise: bool = True) -> np.ndarray:
    """Embeddings of sorted unique cache ``rows`` of ``group``, filled block by block.

    float16 when a float32 matrix would pass HALF_PRECISION_BYTES. Reading most of a group is a
    scan in file order (fast sequential I/O); a few rows are read by index.
    """
    dtype = np.float16 if len(rows) * dim * 4 > HALF_PRECISION_BYTES else np.float32
    finish = (lambda x: l2_normalise(x, dtype)) if normalise else (lambda x: np.asarray(x, dtype=dtype))
    out = np.empty((len(rows), dim), dtype=dtype)
    total = len(cache.image_keys if group == "images" else cache.text_keys)
    if len(rows) <= total // 2:
        for lo in range(0, len(rows), READ_BLOCK):
            out[lo : lo + READ_BLOCK] = finish(cache.read_rows(group, rows[lo : lo + READ_BLOCK]))
        return out
    filled, offset = 0, 0
    for keys, embeds in cache.iter_rows(group, chunk_rows=READ_BLOCK):
        wanted = rows[(rows >= offset) & (rows < offset + len(keys))]
        out[filled : filled + len(wanted)] = finish(embeds[wanted - offset])
        filled, offset = filled + len(wanted), offset + len(keys)
    return out
