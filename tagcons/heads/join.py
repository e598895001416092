"""Join a pairs table to a cache: which pairs have both embeddings, and their features.

Only the cache rows the table uses are read (in file order, by chunks when most rows are needed),
L2-normalised, and kept once per unique image and text; `PairFeatures` indexes them per pair.
Unique embeddings above ``HALF_PRECISION_BYTES`` are held as float16 to halve memory (rows are
cast back to float32 when batches are built).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tagcons.data.pairs import PairTable
from tagcons.heads.features import PairFeatures, l2_normalise

log = logging.getLogger(__name__)

HALF_PRECISION_BYTES = 1024**3
SHOWN = 3
READ_BLOCK = 65536


def open_cache(path):
    """Open a cache for reading (a seam: tests may substitute an in-memory reader)."""
    import tagcons.cache

    return tagcons.cache.open(path)


def cache_strip_hash(cache) -> bool:
    """Whether the cache's text keys were embedded with --strip-hash (pairs must be normalised alike)."""
    return bool(getattr(cache, "settings", {}).get("strip_hash", False))


@dataclass
class JoinedPairs:
    features: PairFeatures  # one row per present pair, in table order
    present: np.ndarray  # bool [n_rows of the table]
    missing_images: list[str] = field(default_factory=list)
    missing_texts: list[str] = field(default_factory=list)
    failed_images: dict[str, str] = field(default_factory=dict)

    @property
    def n_missing(self) -> int:
        return int((~self.present).sum())


def _positions(values: np.ndarray, lookup: dict[str, int], excluded) -> tuple[np.ndarray, list, list]:
    """Cache row of each table value (-1 if absent or excluded), plus absent and excluded uniques."""
    codes, uniques = pd.factorize(values)
    rows = np.array([-1 if u in excluded else lookup.get(u, -1) for u in uniques], dtype=np.int64)
    absent = [u for u in uniques if u not in lookup and u not in excluded]
    hit_excluded = [u for u in uniques if u in excluded]
    return rows[codes], absent, hit_excluded


def load_normalised(cache, group: str, rows: np.ndarray, dim: int) -> np.ndarray:
    """L2-normalised embeddings of sorted unique cache ``rows`` of ``group``, filled block by block.

    float16 when a float32 matrix would pass HALF_PRECISION_BYTES. Reading most of a group is a
    scan in file order (fast sequential I/O); a few rows are read by index.
    """
    dtype = np.float16 if len(rows) * dim * 4 > HALF_PRECISION_BYTES else np.float32
    out = np.empty((len(rows), dim), dtype=dtype)
    total = len(cache.image_keys if group == "images" else cache.text_keys)
    if len(rows) <= total // 2:
        for lo in range(0, len(rows), READ_BLOCK):
            out[lo : lo + READ_BLOCK] = l2_normalise(cache.read_rows(group, rows[lo : lo + READ_BLOCK]), dtype)
        return out
    filled, offset = 0, 0
    for keys, embeds in cache.iter_rows(group, chunk_rows=READ_BLOCK):
        wanted = rows[(rows >= offset) & (rows < offset + len(keys))]
        out[filled : filled + len(wanted)] = l2_normalise(embeds[wanted - offset], dtype)
        filled, offset = filled + len(wanted), offset + len(keys)
    return out


def join_pairs(cache, table: PairTable, kind: str = "concat") -> JoinedPairs:
    failed = dict(cache.failed)
    image_rows, missing_images, failed_hit = _positions(table.images, cache.index("images"), failed)
    text_rows, missing_texts, _ = _positions(table.texts, cache.index("texts"), ())
    present = (image_rows >= 0) & (text_rows >= 0)
    used_images, image_index = np.unique(image_rows[present], return_inverse=True)
    used_texts, text_index = np.unique(text_rows[present], return_inverse=True)
    dim = int(cache.projection_dim)
    features = PairFeatures(
        load_normalised(cache, "images", used_images, dim),
        load_normalised(cache, "texts", used_texts, dim),
        image_index.reshape(-1),
        text_index.reshape(-1),
        kind,
    )
    return JoinedPairs(features, present, missing_images, missing_texts, {k: failed[k] for k in failed_hit})


def describe_missing(joined: JoinedPairs, n_rows: int) -> str:
    """One line: how many pairs are left out and why, with the first few keys of each kind."""
    parts = []
    if joined.missing_images:
        parts.append(f"{len(joined.missing_images)} images not in the cache (e.g. {_first(joined.missing_images)})")
    if joined.failed_images:
        shown = ", ".join(f"'{k}': {v}" for k, v in list(joined.failed_images.items())[:SHOWN])
        parts.append(f"{len(joined.failed_images)} images that failed to embed ({shown})")
    if joined.missing_texts:
        parts.append(f"{len(joined.missing_texts)} hashtags not in the cache (e.g. {_first(joined.missing_texts)})")
    return f"{joined.n_missing} of {n_rows} pairs have no embedding and are left out: " + "; ".join(parts)


def _first(keys: list[str]) -> str:
    return ", ".join(f"'{k}'" for k in keys[:SHOWN]) + (" ..." if len(keys) > SHOWN else "")


def report_missing(joined: JoinedPairs, table: PairTable, hint: str = "") -> None:
    if joined.n_missing:
        log.warning("%s: %s%s", table.source, describe_missing(joined, len(table)), hint)
