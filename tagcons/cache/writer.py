"""Writing a cache: resumable, crash-safe commits (one atomic part file each) and consolidation.

Typical use (the embed stage):

    with CacheWriter(out, meta, shard=None) as w:
        todo = [k for k in images if w.known_images().get(k) != sha[k]]   # resume: skip what is done
        for chunk in batches(todo):
            w.commit(images=(keys, sha256s, embeds), failures=(keys, sha256s, reasons))
        w.consolidate()          # one file again; a shard writer merges only if it finishes last

A plain writer holds `<cache>.lock` exclusively; shard writers share it and each holds its own tag
lock, so shards of one run work side by side. See lock.py, parts.py and merge.py for the rest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagcons.cache.lock import FileLock, read_only_message
from tagcons.cache.merge import ConsolidateStats, replay
from tagcons.cache.parts import Rows, list_parts, next_seq, parts_dir, remove_stale_temps, shard_tag, write_part
from tagcons.cache.schema import CacheMeta, compute_fingerprint, describe_difference, meta_attrs, open_h5, read_attrs
from tagcons.cache.segments import consolidate_files
from tagcons.errors import BadInputError, FingerprintMismatchError

log = logging.getLogger(__name__)


def lock_path(cache: Path) -> Path:
    return cache.with_name(cache.name + ".lock")


class CacheWriter:
    """Adds rows to the cache at `path`; `shard=(k, n)` (0 <= k < n) for one of n parallel writers.

    `meta=None` opens the cache for planning only (lock taken, state loaded, nothing can be committed):
    `embed` does this before loading the model, then calls `bind(meta)` once it knows the settings."""

    def __init__(self, path: str | os.PathLike, meta: CacheMeta | None, shard: tuple[int, int] | None = None):
        self.path = Path(path)
        self.shard = shard
        self.tag = shard_tag(shard)
        self.meta: CacheMeta | None = None
        self._locks: list[FileLock] = []
        self._finished = False
        try:
            self._lock()
            self._parts = list_parts(self.path)
            self._load_state()
            if meta is not None:
                self.bind(meta)
        except BaseException:
            self.close()
            raise

    def bind(self, meta: CacheMeta) -> None:
        """Fix the settings of the rows this writer adds; refuses a cache computed with other settings."""
        if not self.writable:
            raise BadInputError(read_only_message(self.path))
        self.meta = meta
        self.fingerprint = compute_fingerprint(meta)
        self._attrs = meta_attrs(meta)
        self._check_existing()

    @property
    def writable(self) -> bool:
        """False when the folder is read-only (the lock could not be taken for writing)."""
        return all(lock.writable for lock in self._locks)

    def stored_attrs(self) -> dict | None:
        """Root attrs of the consolidated file (None if there is none yet)."""
        return read_attrs(self.path) if self.path.exists() else None

    def has_pending_parts(self) -> bool:
        return bool(self._parts)

    def _lock(self) -> None:
        sharded = self.shard is not None
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._locks.append(FileLock(lock_path(self.path), self.path, shared=sharded).acquire(read_only_ok=True))
        if not self.writable:
            return
        if sharded:
            parts_dir(self.path).mkdir(exist_ok=True)
            self._locks.append(FileLock(parts_dir(self.path) / f"{self.tag}.lock", self.path).acquire())
            remove_stale_temps(parts_dir(self.path), f"{self.tag}-")
        else:  # exclusive: every temp file is a leftover of a killed process
            remove_stale_temps(parts_dir(self.path))
            remove_stale_temps(self.path.parent, f"{self.path.name}.consolidate-")

    def _check_existing(self) -> None:
        self._previous = {}
        if self.path.exists():
            attrs = self._previous = read_attrs(self.path)
            self._check_fingerprint(self.path, attrs["fingerprint"])
        self._parts = list_parts(self.path)
        for part in self._parts:
            self._check_fingerprint(part.path, part.fingerprint)

    def _check_fingerprint(self, where: Path, fingerprint: str) -> None:
        if fingerprint != self.fingerprint:
            stored = read_attrs(where)
            backbones = (stored.get("backbone", "?"), self.meta.backbone)
            backbone = f", backbone {backbones[0]} vs {backbones[1]}" if backbones[0] != backbones[1] else ""
            raise FingerprintMismatchError(
                f"{where} holds features computed with other settings ({describe_difference(stored, self._attrs)}; "
                f"fingerprint {fingerprint} vs {self.fingerprint}{backbone}); write to another --out, "
                f"or delete {self.path} and {parts_dir(self.path)} to start over"
            )

    def _load_state(self) -> None:
        sources = ([self.path] if self.path.exists() else []) + [p.path for p in self._parts]
        state = replay(sources)
        self._images = {k: v[2] for k, v in state.images.items()}
        self._failed = {k: v[0] for k, v in state.failed.items()}
        self._texts = set(state.texts)
        self._seq = next_seq(self._parts, self.tag)

    # -- what is already done (main file + every part, other shards' included) --------------------
    def known_images(self) -> dict[str, str]:
        """Embedded images: key -> sha256 of the file's bytes when it was embedded."""
        return dict(self._images)

    def known_texts(self) -> set[str]:
        return set(self._texts)

    def known_failures(self) -> dict[str, str]:
        """Images that failed: key -> sha256 ('' if the file could not be read at all)."""
        return dict(self._failed)

    def previous_attr(self, name: str, default=None):
        """A root attribute of the cache as it was before this run (default for a new cache)."""
        return self._previous.get(name, default)

    def annotate(self, **attrs) -> None:
        """Set root attributes that describe the content without changing the numbers (no fingerprint
        change), e.g. diagnostics; they are written with the next part and the consolidated file."""
        self._attrs.update(attrs)

    # -- commits ------------------------------------------------------------------------------------
    def commit(
        self, images: tuple | None = None, texts: tuple | None = None, failures: tuple | None = None
    ) -> Path | None:
        """Write one part file atomically. images=(keys, sha256s, embeds [n, d]), texts=(keys, embeds),
        failures=(keys, sha256s, reasons). Returns the part's path (None if everything was empty)."""
        if self.meta is None:
            raise RuntimeError(f"writer of {self.path} opened for planning only; call bind(meta) before committing")
        if self._finished:
            raise RuntimeError(f"shard writer {self.tag} of {self.path} already finished (consolidate was called)")
        rows = self._rows(images, texts, failures)
        if not any(rows.counts().values()):
            return None
        part = write_part(
            self.path, self.tag, self._seq, self._attrs, rows, self.meta.projection_dim, self.meta.store_dtype
        )
        self._seq += 1
        self._update_state(rows)
        return part

    def commit_images(self, keys: Sequence[str], sha256s: Sequence[str], embeds: np.ndarray) -> Path | None:
        return self.commit(images=(keys, sha256s, embeds))

    def commit_texts(self, keys: Sequence[str], embeds: np.ndarray) -> Path | None:
        return self.commit(texts=(keys, embeds))

    def commit_failures(self, keys: Sequence[str], sha256s: Sequence[str], reasons: Sequence[str]) -> Path | None:
        return self.commit(failures=(keys, sha256s, reasons))

    def _rows(self, images, texts, failures) -> Rows:
        rows = Rows()
        if images is not None:
            rows.image_keys, rows.image_sha256, rows.image_embeds = _checked(images, 3, self.meta.projection_dim)
        if texts is not None:
            rows.text_keys, rows.text_embeds = _checked(texts, 2, self.meta.projection_dim)
        if failures is not None:
            rows.failed_keys, rows.failed_sha256, rows.failed_reasons = _checked(failures, 3, None)
        return rows

    def _update_state(self, rows: Rows) -> None:
        """Same rules as merge.Replay: failures first, then successes; the last event per key wins."""
        for key in rows.failed_keys:
            self._images.pop(key, None)
        self._failed.update(zip(rows.failed_keys, rows.failed_sha256))
        if self._failed:
            for key in rows.image_keys:
                self._failed.pop(key, None)
        self._images.update(zip(rows.image_keys, rows.image_sha256))
        self._texts.update(rows.text_keys)

    # -- consolidation ------------------------------------------------------------------------------
    def consolidate(self, progress: bool = False) -> ConsolidateStats | None:
        """Merge the main file and all parts into `path` (atomic replace). A plain writer may call this
        any number of times. For a shard writer it is the last call: it merges only if no other shard
        is still writing (the last to finish merges) and returns None otherwise."""
        if self.shard is not None:
            self._finished = True
            if not self._locks[0].try_exclusive():
                log.info(
                    "shard %s of %s done; other shards still writing, the last one merges "
                    "(or run `tagcons cache merge %s`)",
                    self.tag,
                    self.path,
                    self.path,
                )
                return None
        if self.meta is None:
            raise RuntimeError(f"writer of {self.path} opened for planning only; call bind(meta) before consolidating")
        self._check_existing()  # other shards may have added parts since we started
        return _consolidate_locked(self.path, self._attrs, self.meta.projection_dim, self.meta.store_dtype, progress)

    def close(self) -> None:
        for lock in reversed(self._locks):
            lock.release()
        self._locks.clear()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _checked(group: tuple, width: int, dim: int | None) -> tuple:
    """Columns of one commit group, same length; the last of an embedding group is an [n, dim] matrix."""
    if len(group) != width:
        raise ValueError(f"expected a tuple of {width} columns, got {len(group)}")
    cols = [[str(v) for v in c] for c in group[:-1]]
    cols.append(group[-1] if dim else [str(v) for v in group[-1]])
    n = len(cols[0])
    if any(len(c) != n for c in cols):
        raise ValueError(f"commit columns differ in length: {[len(c) for c in cols]}")
    if dim is not None:
        cols[-1] = np.asarray(cols[-1])
        if cols[-1].shape != (n, dim):
            raise ValueError(f"embeddings have shape {cols[-1].shape}, expected ({n}, {dim})")
    return tuple(cols)


def _consolidate_locked(path: Path, attrs: dict, dim: int, dtype: str, progress: bool) -> ConsolidateStats:
    """Caller holds the exclusive cache lock."""
    remove_stale_temps(path.parent, f"{path.name}.consolidate-")
    parts = [p.path for p in list_parts(path)]
    if path.exists() and not parts:
        return _stats_of(path)
    sources = ([path] if path.exists() else []) + parts
    return consolidate_files(path, sources, attrs, dim, dtype, progress)


def _stats_of(path: Path) -> ConsolidateStats:
    with open_h5(path, "r") as f:
        return ConsolidateStats(0, f["images/keys"].shape[0], f["texts/keys"].shape[0], f["failed/keys"].shape[0], 0.0)


def merge_parts(path: str | os.PathLike, progress: bool = False) -> ConsolidateStats:
    """`tagcons cache merge`: consolidate the part files of `path` (e.g. after a sharded embed)."""
    path = Path(path)
    if not path.exists() and not parts_dir(path).is_dir():
        raise BadInputError(f"{path}: no cache and no part files ({parts_dir(path)}) to merge; check the path")
    lock = FileLock(lock_path(path), path).acquire()
    try:
        remove_stale_temps(parts_dir(path))
        attrs = _agreed_attrs(path)
        return _consolidate_locked(path, attrs, int(attrs["projection_dim"]), str(attrs["store_dtype"]), progress)
    finally:
        lock.release()


def _agreed_attrs(path: Path) -> dict:
    """Attrs of the newest file, after checking that the main file and all parts share one fingerprint."""
    files = ([path] if path.exists() else []) + [p.path for p in list_parts(path)]
    if not files:
        raise BadInputError(f"{path}: the parts folder {parts_dir(path)} holds no part files; nothing to merge")
    attrs = [read_attrs(f) for f in files]
    for f, a in zip(files[1:], attrs[1:]):
        if a["fingerprint"] != attrs[0]["fingerprint"]:
            raise FingerprintMismatchError(
                f"cannot merge {f} (fingerprint {a['fingerprint']}, backbone {a.get('backbone')}) into {files[0]} "
                f"(fingerprint {attrs[0]['fingerprint']}, backbone {attrs[0].get('backbone')}): they were computed "
                f"with other settings; delete the parts of the unwanted run from {parts_dir(path)}"
            )
    return {k: v for k, v in attrs[-1].items() if k not in ("committed_ns", "tag", "seq")}
