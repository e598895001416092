"""Part files: each commit is one small cache file in `<cache>.parts/`, written under a temporary
name, fsynced, then renamed into place (atomic), so a crash at any moment leaves only whole parts.

Name: `<tag>-<seq>.h5` with tag `main` (plain writer) or `shard-KK-of-NN`; seq counts per tag.
Root attr `committed_ns` orders parts across tags (newer entries win when consolidating).
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from tagcons.cache.diskspace import ensure_free_space, estimate_bytes, writing
from tagcons.cache.schema import create_layout, digests_of, fsync_path, read_attrs, write_attrs, write_digests
from tagcons.errors import BadInputError

PART_RE = re.compile(r"^(?P<tag>[A-Za-z0-9_.-]+?)-(?P<seq>\d{6})\.h5$")
TMP_SUFFIX = ".tmp"
PART_ATTRS = ("schema", "fingerprint", "backbone", "committed_ns")


@dataclass(frozen=True)
class Part:
    path: Path
    tag: str
    seq: int
    committed_ns: int
    fingerprint: str
    backbone: str


@dataclass
class Rows:
    """One commit's rows; any group may be empty. Within a part, failures are applied before
    images, so an image both failed and embedded in the same commit counts as embedded."""

    image_keys: Sequence[str] = ()
    image_sha256: Sequence[str] = ()
    image_embeds: np.ndarray | None = None
    text_keys: Sequence[str] = ()
    text_embeds: np.ndarray | None = None
    failed_keys: Sequence[str] = ()
    failed_sha256: Sequence[str] = ()
    failed_reasons: Sequence[str] = ()

    def counts(self) -> dict[str, int]:
        return {"images": len(self.image_keys), "texts": len(self.text_keys), "failed": len(self.failed_keys)}


def parts_dir(cache: Path) -> Path:
    return cache.with_name(cache.name + ".parts")


def shard_tag(shard: tuple[int, int] | None) -> str:
    if shard is None:
        return "main"
    k, n = shard
    if not (isinstance(k, int) and isinstance(n, int) and 0 <= k < n):
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard!r}")
    width = len(str(n))
    return f"shard-{k:0{width}d}-of-{n:0{width}d}"


def list_parts(cache: Path) -> list[Part]:
    """Finished part files of `cache`, oldest first (temporary files are ignored)."""
    folder = parts_dir(cache)
    if not folder.is_dir():
        return []
    parts = [_read_part(folder / name, m) for name in os.listdir(folder) if (m := PART_RE.match(name))]
    parts = [p for p in parts if p is not None]
    return sorted(parts, key=lambda p: (p.committed_ns, p.tag, p.seq))


def _read_part(path: Path, match: re.Match) -> Part | None:
    try:
        attrs = read_attrs(path, PART_ATTRS)
    except BadInputError:
        if not path.exists():  # merged and deleted by a consolidation while we listed
            return None
        raise
    return Part(
        path,
        match["tag"],
        int(match["seq"]),
        int(attrs["committed_ns"]),
        str(attrs["fingerprint"]),
        str(attrs["backbone"]),
    )


def pending_parts(cache: str | os.PathLike) -> list[Path]:
    """Part files not yet consolidated into `cache` (after a crash, or shards not merged yet)."""
    return [p.path for p in list_parts(Path(cache))]


def next_seq(parts: list[Part], tag: str) -> int:
    return max((p.seq for p in parts if p.tag == tag), default=-1) + 1


def write_part(cache: Path, tag: str, seq: int, attrs: dict, rows: Rows, dim: int, dtype: str) -> Path:
    """Write `rows` as part `<tag>-<seq>.h5` atomically: temp file, fsync, rename, fsync the folder."""
    folder = parts_dir(cache)
    folder.mkdir(exist_ok=True)
    final = folder / f"{tag}-{seq:06d}.h5"
    tmp = final.with_name(final.name + TMP_SUFFIX)
    ensure_free_space(folder, estimate_bytes(rows.counts(), dim, dtype))
    image = io.BytesIO()  # built in memory: a full disk then fails a plain write, never HDF5 mid-file
    with h5py.File(image, "w") as f:
        write_attrs(f, {**attrs, "committed_ns": time.time_ns(), "tag": tag, "seq": seq})
        create_layout(f, rows.counts(), dim, dtype)
        _fill(f, rows, dtype)
        write_digests(f, digests_of(_strings_of(rows)))
    with writing(tmp, final), open(tmp, "wb") as out:
        out.write(image.getbuffer())
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, final)
    fsync_path(folder)
    return final


def _fill(f, rows: Rows, dtype: str) -> None:
    if len(rows.image_keys):
        f["images/keys"][:] = np.asarray(rows.image_keys, dtype=object)
        f["images/sha256"][:] = np.asarray(rows.image_sha256, dtype=object)
        f["images/embeds"][:] = np.asarray(rows.image_embeds).astype(dtype, copy=False)
    if len(rows.text_keys):
        f["texts/keys"][:] = np.asarray(rows.text_keys, dtype=object)
        f["texts/embeds"][:] = np.asarray(rows.text_embeds).astype(dtype, copy=False)
    if len(rows.failed_keys):
        f["failed/keys"][:] = np.asarray(rows.failed_keys, dtype=object)
        f["failed/sha256"][:] = np.asarray(rows.failed_sha256, dtype=object)
        f["failed/reasons"][:] = np.asarray(rows.failed_reasons, dtype=object)


def _strings_of(rows: Rows) -> dict:
    return {
        "images/keys": rows.image_keys,
        "images/sha256": rows.image_sha256,
        "texts/keys": rows.text_keys,
        "failed/keys": rows.failed_keys,
        "failed/sha256": rows.failed_sha256,
        "failed/reasons": rows.failed_reasons,
    }


def remove_stale_temps(folder: Path, prefix: str = "") -> None:
    """Temp files left by a killed writer; call only while holding the lock that owns them."""
    if folder.is_dir():
        for name in os.listdir(folder):
            if name.endswith(TMP_SUFFIX) and name.startswith(prefix):
                (folder / name).unlink(missing_ok=True)
