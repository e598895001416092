"""`tagcons cache verify`: find every damaged part of a cache (and its pending part files), and repair
it by dropping what is damaged, so that the next `tagcons embed` re-embeds exactly those rows.

Checked per file: readable HDF5 of this schema, every dataset present, keys and rows in step, the
embedding width equal to `projection_dim`, and every embedding row readable (fletcher32 checksum,
where the file has one) and finite. Rows are read one HDF5 chunk at a time, never the whole matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from tagcons.cache.lock import FileLock
from tagcons.cache.merge import Replay, write_state
from tagcons.cache.parts import list_parts, parts_dir
from tagcons.cache.schema import layout_problems, open_h5, read_attrs, read_strings
from tagcons.cache.segments import segment_files
from tagcons.errors import BadInputError, first_line

GROUPS = ("images", "texts")
SCAN_ROWS = 65536


@dataclass
class FileReport:
    """What is wrong with one file; `bad_rows` are the rows to drop per group."""

    path: Path
    problems: list[str] = field(default_factory=list)
    bad_rows: dict[str, set[int]] = field(default_factory=dict)
    fatal: bool = False  # unreadable, or a layout that dropping rows cannot mend
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class VerifyReport:
    cache: Path
    files: list[FileReport]

    @property
    def problems(self) -> list[str]:
        return [f"{f.path}: {p}" for f in self.files for p in f.problems]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_cache(path: str | Path) -> VerifyReport:
    """Check the consolidated file and every pending part file of the cache at `path`."""
    path = Path(path)
    files = ([path, *_segment_paths(path)] if path.exists() else []) + _part_paths(path)
    if not files:
        raise BadInputError(f"{path}: cache file not found (and no part files); check the path")
    return VerifyReport(path, [verify_file(f) for f in files])


def _segment_paths(path: Path) -> list[Path]:
    try:
        return segment_files(path)
    except (OSError, ValueError):  # an unreadable index: verify_file reports it
        return []


def _part_paths(path: Path) -> list[Path]:
    try:
        return [p.path for p in list_parts(path)]
    except BadInputError:  # an unreadable part: list the files by name instead, each is checked below
        return sorted(parts_dir(path).glob("*.h5"))


def verify_file(path: Path) -> FileReport:
    report = FileReport(path)
    try:
        read_attrs(path)
        with open_h5(path, "r") as f:
            _check(f, report)
    except (BadInputError, OSError) as e:
        report.problems.append(f"not a readable tagcons cache ({first_line(e)})")
        report.fatal = True
    return report


def _check(f: h5py.File, report: FileReport) -> None:
    problems = layout_problems(f)
    if any(p.startswith("datasets missing") or "expected (rows" in p for p in problems):
        report.problems.extend(problems)
        report.fatal = True
        return
    report.problems.extend(problems)
    for group in GROUPS:
        n_keys, embeds = f[f"{group}/keys"].shape[0], f[f"{group}/embeds"]
        report.rows[group] = n_keys
        bad = set(range(min(n_keys, embeds.shape[0]), n_keys))  # keys without a row
        bad |= _scan(embeds, report)
        report.bad_rows[group] = {r for r in bad if r < n_keys}


def _scan(embeds: h5py.Dataset, report: FileReport) -> set[int]:
    """Rows that fail their checksum (a whole chunk at a time) or hold NaN/inf values."""
    step = embeds.chunks[0] if embeds.chunks else SCAN_ROWS
    unreadable, non_finite = [], []
    for lo in range(0, embeds.shape[0], step):
        hi = min(lo + step, embeds.shape[0])
        try:
            block = embeds[lo:hi]
        except OSError:
            unreadable.extend(range(lo, hi))
            continue
        non_finite.extend((lo + np.flatnonzero(~np.isfinite(block).all(axis=1))).tolist())
    if unreadable:
        report.problems.append(f"{embeds.name}: {len(unreadable)} row(s) fail their checksum ({_rows(unreadable)})")
    if non_finite:
        report.problems.append(f"{embeds.name}: {len(non_finite)} row(s) hold NaN or inf ({_rows(non_finite)})")
    return set(unreadable) | set(non_finite)


def _rows(rows: list[int]) -> str:
    return "rows " + ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")


# --- repair ------------------------------------------------------------------------------------------


@dataclass
class RepairResult:
    dropped: dict[str, int]
    removed_parts: list[Path]


def repair_cache(path: str | Path, report: VerifyReport) -> RepairResult:
    """Drop the damaged rows of the consolidated file (rewritten atomically) and delete damaged part
    files, under the exclusive cache lock. A file whose layout cannot be mended raises BadInputError."""
    from tagcons.cache.writer import lock_path

    path = Path(path)
    fatal = [f for f in report.files if f.fatal and f.path == path]
    if fatal:
        raise BadInputError(
            f"{path}: cannot be repaired ({fatal[0].problems[0]}); delete it and its .parts folder and re-embed"
        )
    lock = FileLock(lock_path(path), path).acquire()
    try:
        segments = set(_segment_paths(path))  # damaged rows there are dropped from the index below
        removed = [f.path for f in report.files if f.problems and f.path != path and f.path not in segments]
        for part in removed:
            part.unlink(missing_ok=True)
        main = next((f for f in report.files if f.path == path and f.problems), None)
        dropped = _rewrite_without(main) if main else {group: 0 for group in GROUPS}
    finally:
        lock.release()
    return RepairResult(dropped, removed)


def _rewrite_without(report: FileReport) -> dict[str, int]:
    attrs = read_attrs(report.path)
    with open_h5(report.path, "r") as f:
        state = _kept_rows(f, report)
    write_state(report.path, [report.path], state, attrs, int(attrs["projection_dim"]), str(attrs["store_dtype"]))
    return {group: len(report.bad_rows.get(group, ())) for group in GROUPS}


def _kept_rows(f: h5py.File, report: FileReport) -> Replay:
    state = Replay()
    image_keys, shas = read_strings(f["images/keys"]), read_strings(f["images/sha256"])
    for row, (key, sha) in enumerate(zip(image_keys, shas)):
        if row not in report.bad_rows["images"]:
            state.images[key] = (0, row, sha)
    for row, key in enumerate(read_strings(f["texts/keys"])):
        if row not in report.bad_rows["texts"]:
            state.texts[key] = (0, row)
    failed = zip(*(read_strings(f[f"failed/{n}"]) for n in ("keys", "sha256", "reasons")))
    state.failed.update((key, (sha, reason)) for key, sha, reason in failed)
    return state
