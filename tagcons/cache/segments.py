"""Zero-copy consolidation: past SEGMENT_MIN_ROWS rows the cache file is an index of HDF5 virtual
datasets over immutable segment files, so consolidating new parts writes only the new rows.

    <cache>                        root attrs as always, plus `segments` (JSON list of segment names);
                                   images/{keys,sha256,embeds}, texts/{keys,embeds}: virtual datasets;
                                   failed/*: plain (small); _segments/<group>_runs [n, 4] int64:
                                   (first row, segment, first segment row, rows) per mapped run
    <cache>.segments/seg-*.h5      segments: files of the standard layout, never modified

Consolidating into a segmented (or large plain) cache: the plain file, the first time, becomes the
base segment by a hard link (no bytes copied); the parts' rows are written as one new segment (temp
file, fsync, rename); then a new index is written beside the cache and renamed over it (atomic). A
crash before that rename leaves the last good cache plus an unreferenced segment, which the next
consolidation deletes. A segment leaves the folder only once two indexes in a row no longer name it
(a reader that opened the previous index keeps its rows). Rows superseded by newer parts stay in
their segment as dead space until they pass MAX_DEAD_FRACTION (or the runs pass MAX_RUNS): then that
consolidation rewrites one plain file as before.

Virtual sources are named relative to the cache's folder: the cache moves with its `.segments`
folder; a missing segment reads as NaN (the fill value), which every reader refuses loudly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np

from tagcons.cache.diskspace import writing
from tagcons.cache.merge import (  # segments build on the plain consolidation
    ConsolidateStats,
    Replay,
    _delete_merged_parts,
    _removed_on_error,
    replay,
    write_state,
)
from tagcons.cache.parts import TMP_SUFFIX, remove_stale_temps
from tagcons.cache.schema import (
    DIGEST_ATTR,
    DIGESTED,
    STR_DTYPE,
    digests_of,
    fsync_path,
    now_iso,
    open_h5,
    read_strings,
    write_attrs,
    write_digests,
)

log = logging.getLogger(__name__)

# Smaller caches stay one self-contained file (rewriting them is cheap); the variable is for tests and tuning.
SEGMENT_MIN_ROWS = int(os.environ.get("TAGCONS_SEGMENT_MIN_ROWS", "100000"))
MAX_DEAD_FRACTION = 0.5
MAX_RUNS = 100_000
GROUP_DATASETS = {"images": ("keys", "sha256", "embeds"), "texts": ("keys", "embeds")}
RUNS = "_segments/{group}_runs"
FAILED = ("keys", "sha256", "reasons")


def segments_dir(cache: Path) -> Path:
    return cache.with_name(cache.name + ".segments")


def segment_names(cache: Path) -> list[str]:
    """Segments the index at `cache` maps ([] for a plain or missing file)."""
    if not cache.exists():
        return []
    with open_h5(cache, "r") as f:
        return json.loads(f.attrs.get("segments", "[]"))


def missing_segments(cache: Path, f) -> list[str]:
    """Segments the open index `f` (at `cache`) names that are not on disk ([] for a plain file)."""
    return [name for name in json.loads(f.attrs.get("segments", "[]")) if not (segments_dir(cache) / name).exists()]


def segment_files(cache: Path) -> list[Path]:
    """Every segment file the cache spans (what `cache verify` checks beside the index)."""
    return [segments_dir(cache) / name for name in segment_names(cache)]


def write_consolidated(cache: Path, sources: list[Path], state, attrs: dict, dim: int, dtype: str, progress: bool):
    """Write `state` into `cache`: a new index over segments when that pays, else one plain file.
    Returns the row counts. The caller holds the exclusive cache lock."""

    previous = segment_names(cache)
    counts = _write_segmented(cache, sources, state, attrs, dim, dtype, progress) if _worth_it(cache, sources) else None
    if counts is None:
        counts = write_state(cache, sources, state, attrs, dim, dtype, progress)
    remove_orphans(cache, keep=set(previous) | set(segment_names(cache)))
    return counts


def _worth_it(cache: Path, sources: list[Path]) -> bool:
    if not sources or sources[0] != cache:
        return False
    with open_h5(cache, "r") as f:
        rows = f["images/keys"].shape[0] + f["texts/keys"].shape[0]
        return "segments" in f.attrs or rows >= SEGMENT_MIN_ROWS


def remove_orphans(cache: Path, keep: set[str]) -> None:
    """Segments neither the new nor the previous index names (and temps of a killed consolidation)."""
    folder = segments_dir(cache)
    if not folder.is_dir():
        return
    remove_stale_temps(folder)
    for name in os.listdir(folder):
        if name.endswith(".h5") and name not in keep:
            (folder / name).unlink(missing_ok=True)
    if not keep:
        try:
            folder.rmdir()
        except OSError:
            log.debug("%s not empty; left in place", folder)


# --- the segmented write -------------------------------------------------------------------------------


def _write_segmented(cache, sources, state, attrs, dim, dtype, progress) -> dict | None:
    """None when a plain rewrite is due (too many dead rows or runs); nothing is written then."""

    folder = segments_dir(cache)
    names = segment_names(cache)
    base = None if names else f"seg-{time.time_ns()}-base.h5"
    mapped = names + ([base] if base else [])
    new_id, fresh = len(mapped), Replay()
    locations = {g: _locate(cache, g, getattr(state, g), getattr(fresh, g), new_id) for g in GROUP_DATASETS}
    new_name = f"seg-{time.time_ns()}.h5" if fresh.images or fresh.texts else None
    rows = _segment_rows(cache, folder, names, base, fresh)
    if _needs_compaction(locations, rows):
        return None
    folder.mkdir(exist_ok=True)
    remove_stale_temps(folder)
    if base:
        _link(cache, folder / base)
    if new_name:
        write_state(folder / new_name, sources, fresh, attrs, dim, dtype, progress)
        mapped.append(new_name)
    counts = {group: len(locations[group][0]) for group in GROUP_DATASETS} | {"failed": len(state.failed)}
    _write_index(cache, mapped, locations, state.failed, attrs, dim, dtype)
    return counts


def _locate(cache: Path, group: str, entries: dict, fresh: dict, new_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(segment, segment row) per row of the new index; rows from parts move to `fresh` (the new segment)."""
    main_segment, main_row = _main_locations(cache, group, new_id - 1)
    segment = np.empty(len(entries), dtype=np.int64)
    row = np.empty(len(entries), dtype=np.int64)
    for i, (key, value) in enumerate(entries.items()):
        if value[0] == 0:
            segment[i], row[i] = main_segment[value[1]], main_row[value[1]]
        else:
            segment[i], row[i] = new_id, len(fresh)
            fresh[key] = value
    return segment, row


def _main_locations(cache: Path, group: str, base_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each row of the current cache lives: its runs when segmented, else the base segment."""
    with open_h5(cache, "r") as f:
        n = f[f"{group}/keys"].shape[0]
        if "segments" not in f.attrs:
            return np.full(n, base_id, dtype=np.int64), np.arange(n, dtype=np.int64)
        runs = f[RUNS.format(group=group)][:]
    segment, row = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for first, seg, seg_row, count in runs.tolist():
        segment[first : first + count] = seg
        row[first : first + count] = np.arange(seg_row, seg_row + count)
    return segment, row


def _segment_rows(cache: Path, folder: Path, names: list[str], base: str | None, fresh) -> int:
    """Rows (images + texts) the mapped segments hold, live or dead, counting the new one."""
    files = [folder / n for n in names] + ([cache] if base else [])
    total = len(fresh.images) + len(fresh.texts)
    for path in files:
        with open_h5(path, "r") as f:
            total += f["images/keys"].shape[0] + f["texts/keys"].shape[0]
    return total


def _needs_compaction(locations: dict, segment_rows: int) -> bool:
    live = sum(len(segment) for segment, _ in locations.values())
    runs = sum(len(_runs(segment, row)) for segment, row in locations.values())
    return segment_rows and (1 - live / segment_rows > MAX_DEAD_FRACTION or runs > MAX_RUNS)


def _link(cache: Path, target: Path) -> None:
    """The plain cache file becomes the base segment: a hard link (no copy) where the disk allows."""
    tmp = target.with_name(target.name + TMP_SUFFIX)
    try:
        os.link(cache, tmp)
    except OSError:
        shutil.copyfile(cache, tmp)
        fsync_path(tmp)
    os.replace(tmp, target)
    fsync_path(target.parent)


def _runs(segment: np.ndarray, row: np.ndarray) -> np.ndarray:
    """[n_runs, 4]: (first row, segment, first segment row, rows) of maximal contiguous runs."""
    n = len(segment)
    if n == 0:
        return np.zeros((0, 4), dtype=np.int64)
    breaks = np.flatnonzero((np.diff(segment) != 0) | (np.diff(row) != 1)) + 1
    starts, ends = np.r_[0, breaks], np.r_[breaks, n]
    return np.stack([starts, segment[starts], row[starts], ends - starts], axis=1).astype(np.int64)


def _write_index(cache: Path, names: list[str], locations: dict, failed: dict, attrs: dict, dim: int, dtype: str):
    """The new index beside the cache (temp, fsync), renamed over it: readers see the old or the new."""

    tmp = cache.with_name(f"{cache.name}.consolidate-{os.getpid()}{TMP_SUFFIX}")
    folder = segments_dir(cache)
    shapes = _source_rows(folder, names, locations)
    with writing(tmp, cache), _removed_on_error(tmp):
        with open_h5(tmp, "w") as out:
            fresh = {k: v for k, v in attrs.items() if k != DIGEST_ATTR}  # the index's own digests are written below
            write_attrs(out, {**fresh, "updated_at": now_iso(), "segments": json.dumps(names)})
            for group, datasets in GROUP_DATASETS.items():
                runs = _runs(*locations[group])
                out.create_dataset(RUNS.format(group=group), data=runs)
                for name in datasets:
                    _virtual(out, f"{group}/{name}", runs, folder.name, names, shapes, dim, dtype)
            columns = {"keys": list(failed), "sha256": [v[0] for v in failed.values()]}
            columns["reasons"] = [v[1] for v in failed.values()]
            for name in FAILED:
                out.create_dataset(f"failed/{name}", data=np.asarray(columns[name], dtype=object), dtype=STR_DTYPE)
        _write_index_digests(tmp)
        fsync_path(tmp)
    os.replace(tmp, cache)
    fsync_path(cache.parent)


def _write_index_digests(index: Path) -> None:
    """The digests of the index's string datasets as readers will see them: read through a read-only handle
    (a writable one would open the segments behind the virtual datasets writable too), written to the attrs."""
    with open_h5(index, "r") as f:
        digests = digests_of({name: read_strings(f[name]) for name in DIGESTED if name in f})
    with open_h5(index, "r+") as f:
        write_digests(f, digests)


def _source_rows(folder: Path, names: list[str], locations: dict) -> dict:
    """Rows per (segment, group) of the segments the runs use."""
    used = sorted({int(s) for segment, _ in locations.values() for s in np.unique(segment)})
    rows = {}
    for s in used:
        with open_h5(folder / names[s], "r") as f:
            for group in GROUP_DATASETS:
                rows[s, group] = f[f"{group}/keys"].shape[0]
    return rows


def _virtual(out, name: str, runs: np.ndarray, folder: str, names: list[str], rows: dict, dim: int, dtype: str):
    group = name.split("/")[0]
    is_embeds = name.endswith("embeds")
    n = int(runs[:, 3].sum()) if len(runs) else 0
    shape, kind = ((n, dim), dtype) if is_embeds else ((n,), STR_DTYPE)
    if n == 0:
        out.create_dataset(name, shape=shape, dtype=kind)
        return
    layout = h5py.VirtualLayout(shape=shape, dtype=kind)
    for first, seg, seg_row, count in runs.tolist():
        source_shape = (rows[seg, group], dim) if is_embeds else (rows[seg, group],)
        source = h5py.VirtualSource(f"{folder}/{names[seg]}", name, shape=source_shape)
        layout[first : first + count] = source[seg_row : seg_row + count]
    out.create_virtual_dataset(name, layout, fillvalue=np.nan if is_embeds else None)


def consolidate_files(
    cache: Path, sources: list[Path], attrs: dict, dim: int, dtype: str, progress: bool = False
) -> ConsolidateStats:
    """Merge `sources` (the main file first if it exists, then parts oldest first) into `cache`.
    The caller holds the exclusive cache lock."""
    start = time.perf_counter()
    state = replay(sources)
    counts = write_consolidated(cache, sources, state, attrs, dim, dtype, progress)  # zero-copy when it pays
    n_parts = _delete_merged_parts(cache, sources)
    return ConsolidateStats(n_parts, counts["images"], counts["texts"], counts["failed"], time.perf_counter() - start)
