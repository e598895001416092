"""Consolidation: replay the main file and its parts (oldest first, newer entries win) into one new
file, streamed chunk by chunk, then swap it in with an atomic rename.

Replaying is idempotent for any suffix of the parts (each key's last event decides), so parts are
deleted oldest first after the swap: a crash mid-delete leaves parts that are merged again harmlessly.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count, repeat
from pathlib import Path

import h5py
import numpy as np

from tagcons.cache.diskspace import ensure_free_space, estimate_bytes, writing
from tagcons.cache.parts import TMP_SUFFIX, parts_dir
from tagcons.cache.rows import check_finite, checked_read, read_rows
from tagcons.cache.schema import (
    check_layout,
    checked_strings,
    create_layout,
    digests_of,
    failed_records,
    fsync_path,
    now_iso,
    open_h5,
    read_attrs,
    strings_digest,
    write_attrs,
    write_digests,
)

log = logging.getLogger(__name__)

OUT_CHUNK = 65536
OPEN_SOURCES = 8


@dataclass
class Replay:
    """Final state after replaying sources: key -> (source index, row[, sha256]) in first-seen order."""

    images: dict = field(default_factory=dict)  # key -> (src, row, sha256)
    texts: dict = field(default_factory=dict)  # key -> (src, row)
    failed: dict = field(default_factory=dict)  # key -> (sha256, reason)

    def add_source(self, src: int, f: h5py.File, path: Path) -> None:
        """Replay one file; its keys and hashes are checked against the file's digests on the way."""

        def strings(name: str) -> list[str]:
            return checked_strings(path, f, name)

        for key, sha, reason in failed_records(f, path):
            self.images.pop(key, None)  # the file changed and now fails: its old embedding is stale
            self.failed[key] = (sha, reason)
        keys, shas = strings("images/keys"), strings("images/sha256")
        if self.failed:
            for key in keys:
                self.failed.pop(key, None)
        self.images.update(zip(keys, zip(repeat(src), count(), shas)))  # C-speed loop: 1M keys per part
        self.texts.update(zip(strings("texts/keys"), zip(repeat(src), count())))


def replay(paths: list[Path]) -> Replay:
    state = Replay()
    for src, path in enumerate(paths):
        read_attrs(path)  # a readable tagcons cache of this schema, or BadInputError
        with open_h5(path, "r") as f:
            check_layout(path, f)
            state.add_source(src, f, path)
    return state


@contextmanager
def _removed_on_error(tmp: Path) -> Iterator[None]:
    """A damaged source stops consolidation: leave no half-written temporary file behind."""
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class ConsolidateStats:
    parts: int
    images: int
    texts: int
    failed: int
    seconds: float


class _SourcePool:
    """A few open source files at a time: thousands of parts must not exhaust file descriptors."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.open: OrderedDict[int, h5py.File] = OrderedDict()

    def get(self, src: int) -> h5py.File:
        if src in self.open:
            self.open.move_to_end(src)
        else:
            if len(self.open) >= OPEN_SOURCES:
                self.open.popitem(last=False)[1].close()
            self.open[src] = open_h5(self.paths[src], "r")
        return self.open[src]

    def close(self) -> None:
        for f in self.open.values():
            f.close()
        self.open.clear()


def write_state(
    cache: Path, sources: list[Path], state: Replay, attrs: dict, dim: int, dtype: str, progress: bool = False
) -> dict[str, int]:
    """Write `state` (rows of `sources`) as a new `cache` file: temporary file, fsync, atomic rename.
    Returns the row counts. The caller holds the exclusive cache lock."""
    tmp = cache.with_name(f"{cache.name}.consolidate-{os.getpid()}{TMP_SUFFIX}")
    counts = {"images": len(state.images), "texts": len(state.texts), "failed": len(state.failed)}
    ensure_free_space(cache.parent, estimate_bytes(counts, dim, dtype))
    pool = _SourcePool(sources)
    try:
        with writing(tmp, cache), _removed_on_error(tmp):
            with open_h5(tmp, "w") as out:
                plain = {k: v for k, v in attrs.items() if k != "segments"}  # only an index names segments
                write_attrs(out, {**plain, "updated_at": now_iso()})
                create_layout(out, counts, dim, dtype)
                written = _write_failed(out, state.failed)
                written.update(_copy_group(out, "texts", state.texts, pool, progress))
                written.update(_copy_group(out, "images", state.images, pool, progress))
                write_digests(out, written)
            fsync_path(tmp)
    finally:
        pool.close()
    os.replace(tmp, cache)
    fsync_path(cache.parent)
    return counts


def _write_failed(out: h5py.File, failed: dict) -> dict[str, str]:
    """Write the failed group; returns the digests of the strings written."""
    written = {
        "failed/keys": list(failed),
        "failed/sha256": [v[0] for v in failed.values()],
        "failed/reasons": [v[1] for v in failed.values()],
    }
    if failed:
        for name, values in written.items():
            out[name][:] = np.asarray(values, dtype=object)
    return digests_of(written)


def _copy_group(out: h5py.File, group: str, entries: dict, pool: _SourcePool, progress: bool) -> dict[str, str]:
    """Write keys (+sha256) and gather embedding rows from the sources, OUT_CHUNK rows at a time.
    Returns the digests of the string datasets written."""
    keys = list(entries)
    src = np.fromiter((v[0] for v in entries.values()), dtype=np.int64, count=len(keys))
    row = np.fromiter((v[1] for v in entries.values()), dtype=np.int64, count=len(keys))
    written = {}
    if group == "images":
        shas = [v[2] for v in entries.values()]
        _write_strings(out["images/sha256"], shas)
        written["images/sha256"] = strings_digest(shas)
        del shas
    entries.clear()  # free the dict early: the arrays above hold what is still needed
    _write_strings(out[f"{group}/keys"], keys)
    written[f"{group}/keys"] = strings_digest(keys)
    del keys
    embeds = out[f"{group}/embeds"]
    for lo in _progress(range(0, len(src), OUT_CHUNK), progress, f"consolidate {group}"):
        hi = min(lo + OUT_CHUNK, len(src))
        embeds[lo:hi] = _gather(pool, group, src[lo:hi], row[lo:hi], embeds.dtype)
    return written


def _gather(pool: _SourcePool, group: str, src: np.ndarray, row: np.ndarray, dtype) -> np.ndarray:
    """Rows from the sources, each checked (checksum and finite values) on the way through."""
    first = pool.get(int(src[0]))[f"{group}/embeds"]
    if (src == src[0]).all() and (np.diff(row) == 1).all():  # the usual case: one run of one source
        with checked_read(pool.paths[int(src[0])], first):
            return check_finite(pool.paths[int(src[0])], first, first[int(row[0]) : int(row[-1]) + 1], int(row[0]))
    buf = np.empty((len(src), first.shape[1]), dtype=dtype)
    for s in np.unique(src):
        mask = src == s
        ds = pool.get(int(s))[f"{group}/embeds"]
        with checked_read(pool.paths[int(s)], ds):
            buf[mask] = check_finite(pool.paths[int(s)], ds, read_rows(ds, row[mask]), None)
    return buf


def _write_strings(ds: h5py.Dataset, values: list[str]) -> None:
    for lo in range(0, len(values), OUT_CHUNK):
        ds[lo : lo + OUT_CHUNK] = np.asarray(values[lo : lo + OUT_CHUNK], dtype=object)


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="chunk")


def _delete_merged_parts(cache: Path, sources: list[Path]) -> int:
    """Oldest first (see module docstring); then tidy the parts folder if nothing else is in it."""
    parts = [p for p in sources if p != cache]
    for path in parts:
        path.unlink(missing_ok=True)
    folder = parts_dir(cache)
    if folder.is_dir():
        for name in os.listdir(folder):
            if name.endswith(".lock"):  # only shard tag locks; no shard can hold one now (we hold the cache lock)
                (folder / name).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            log.debug("%s not empty after consolidation; left in place", folder)
    return len(parts)
