"""Reading a consolidated cache: keys, whole matrices, chosen rows, chunked scans and pair lookups.

Only the consolidated file is read. Pending part files (a crashed or unmerged run) are reported in a
warning, never read: they may belong to a run still in progress.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from tagcons.cache.join import join_rows
from tagcons.cache.parts import parts_dir, pending_parts
from tagcons.cache.rows import check_finite, checked_read, l2_normalise, read_range, read_rows
from tagcons.cache.schema import (
    check_layout,
    check_required_attrs,
    check_schema,
    checked_strings,
    failed_records,
    open_h5,
    plain_attr,
)
from tagcons.errors import BadInputError

log = logging.getLogger(__name__)

GROUPS = ("images", "texts")


@dataclass
class PairLookup:
    """Features of the pairs whose image and text are both in the cache (rows where `present`)."""

    image_embeds: np.ndarray  # float32 [n_present, d]
    text_embeds: np.ndarray  # float32 [n_present, d]
    present: np.ndarray  # bool [n_rows]
    missing_images: list[str]  # neither embedded nor failed; unique, in order of first appearance
    missing_texts: list[str]
    failed_images: list[str]  # recorded as failed at embed time; unique, in order


class CacheReader:
    """An open cache file; use as a context manager (or call close())."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._check_exists()
        try:
            self._file = open_h5(self.path, "r")
        except OSError as e:
            raise BadInputError(
                f"{self.path}: not a readable HDF5 file ({e}); pass a cache written by tagcons embed"
            ) from e
        self.attrs = {k: plain_attr(v) for k, v in self._file.attrs.items()}
        try:
            check_schema(self.path, self.attrs)
            check_required_attrs(self.path, self.attrs)
            check_layout(self.path, self._file)
        except BadInputError:
            self.close()
            raise
        self._warn_pending()
        self._keys: dict[str, list[str]] = {}
        self._index: dict[str, dict[str, int]] = {}
        self._failed: dict[str, str] | None = None

    def _check_exists(self) -> None:
        if self.path.is_file():
            return
        if parts_dir(self.path).is_dir():
            raise BadInputError(
                f"{self.path}: cache not consolidated yet (part files in {parts_dir(self.path)}); "
                f"run `tagcons cache merge {self.path}` or rerun tagcons embed"
            )
        raise BadInputError(f"{self.path}: cache file not found; create it with `tagcons embed ... --out {self.path}`")

    def _warn_pending(self) -> None:
        if parts_dir(self.path).is_dir() and (pending := pending_parts(self.path)):
            log.warning(
                "%s has %d part file(s) not merged yet (an interrupted or sharded embed); reading only the "
                "consolidated file. Run `tagcons cache merge %s` (or rerun tagcons embed) to include them.",
                self.path,
                len(pending),
                self.path,
            )

    # -- metadata -------------------------------------------------------------------------------------
    fingerprint = property(lambda self: str(self.attrs["fingerprint"]))
    backbone = property(lambda self: str(self.attrs["backbone"]))
    model_id = property(lambda self: str(self.attrs["model_id"]))
    projection_dim = property(lambda self: int(self.attrs["projection_dim"]))
    revision = property(lambda self: self.attrs.get("revision") or None)

    @property
    def settings(self) -> dict:
        return json.loads(self.attrs.get("settings", "{}"))

    # -- keys -----------------------------------------------------------------------------------------
    def keys(self, group: str) -> list[str]:
        if group not in self._keys:
            self._keys[group] = self._strings(self._dataset(group, "keys").name)
        return self._keys[group]

    image_keys = property(lambda self: self.keys("images"))
    text_keys = property(lambda self: self.keys("texts"))

    def index(self, group: str) -> dict[str, int]:
        """key -> row of `group`."""
        if group not in self._index:
            self._index[group] = {k: i for i, k in enumerate(self.keys(group))}
        return self._index[group]

    @property
    def image_sha256(self) -> dict[str, str]:
        return dict(zip(self.image_keys, self._strings("images/sha256")))

    @property
    def failed(self) -> dict[str, str]:
        """image key -> why it could not be embedded."""
        if self._failed is None:
            self._failed = {key: reason for key, _, reason in failed_records(self._file, self.path)}
        return self._failed

    # -- embeddings -----------------------------------------------------------------------------------
    def image_embeddings(self, normalise: bool = False) -> np.ndarray:
        return self._all("images", normalise)

    def text_embeddings(self, normalise: bool = False) -> np.ndarray:
        return self._all("texts", normalise)

    def _all(self, group: str, normalise: bool) -> np.ndarray:
        embeds = self._dataset(group, "embeds")
        with checked_read(self.path, embeds):
            return _finish(self._finite(embeds, read_range(embeds, 0, embeds.shape[0]), 0), normalise)

    def read_rows(self, group: str, indices, normalise: bool = False) -> np.ndarray:
        """float32 rows at `indices` (any order, repeats allowed) without loading the whole matrix."""
        embeds = self._dataset(group, "embeds")
        with checked_read(self.path, embeds):
            return _finish(self._finite(embeds, read_rows(embeds, indices), indices), normalise)

    def _finite(self, embeds: h5py.Dataset, block: np.ndarray, rows) -> np.ndarray:
        """Damaged rows stop every reader (exit 2 naming the dataset) instead of giving wrong numbers."""
        return check_finite(self.path, embeds, block, rows)

    def iter_rows(
        self, group: str, chunk_rows: int = 65536, normalise: bool = False, dtype=np.float32
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """(keys, embeds) in file order, `chunk_rows` at a time; embeds are float32, or as stored
        (float16 halves memory and skips a slow conversion) with dtype=None and normalise=False."""
        keys, embeds = self.keys(group), self._dataset(group, "embeds")
        for lo in range(0, embeds.shape[0], chunk_rows):
            hi = min(lo + chunk_rows, embeds.shape[0])
            with checked_read(self.path, embeds):
                rows = self._finite(embeds, read_range(embeds, lo, hi, np.float32 if normalise else dtype), lo)
            yield keys[lo:hi], l2_normalise(rows, inplace=True) if normalise else rows

    def lookup(self, images: Sequence[str], texts: Sequence[str], normalise: bool = True) -> PairLookup:
        """Features for pairs (images[i], texts[i]); pairs with an absent or failed side are left out."""
        if len(images) != len(texts):
            raise ValueError(f"lookup needs as many images as texts, got {len(images)} and {len(texts)}")
        joined = join_rows(self, images, texts, normalise)
        return PairLookup(
            image_embeds=np.asarray(joined.image_embeds[joined.image_index], dtype=np.float32),
            text_embeds=np.asarray(joined.text_embeds[joined.text_index], dtype=np.float32),
            present=joined.present,
            missing_images=joined.missing_images,
            missing_texts=joined.missing_texts,
            failed_images=list(joined.failed_images),
        )

    def _strings(self, name: str) -> list[str]:
        """A string dataset's values, checked against the cache's key digests (BadInputError if damaged)."""
        return checked_strings(self.path, self._file, name.lstrip("/"))

    def _dataset(self, group: str, name: str) -> h5py.Dataset:
        if group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
        return self._file[f"{group}/{name}"]

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open(path: str | os.PathLike) -> CacheReader:
    """Open a consolidated cache for reading; BadInputError if missing or not a tagcons cache."""
    return CacheReader(path)


def _finish(x: np.ndarray, normalise: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return l2_normalise(x, inplace=True) if normalise else x
