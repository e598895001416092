"""`tagcons cache verify`: find every damaged part of a cache (and its pending part files), and repair
it by dropping what is damaged, so that the next `tagcons embed` re-embeds exactly those rows.

Checked per file: readable HDF5 of this schema, every dataset present, keys and rows in step, the
embedding width equal to `projection_dim`, every embedding row readable (fletcher32 checksum,
where the file has one) and finite, and every string dataset (keys, hashes, reasons) equal to its
stored digest (files written before key digests: noted as not checked; `--repair` adds them). Across
files: every part has the fingerprint of the first file, as `cache merge` requires. Rows are read one
HDF5 chunk at a time, never the whole matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from tagcons.cache.lock import FileLock
from tagcons.cache.merge import Replay, write_state
from tagcons.cache.parts import list_parts, parts_dir, remove_stale_temps
from tagcons.cache.rows import checked_read
from tagcons.cache.schema import (
    DIGESTED,
    failed_records,
    layout_problems,
    open_h5,
    read_attrs,
    read_strings,
    string_problem,
)
from tagcons.cache.segments import missing_segments, segment_files
from tagcons.errors import BadInputError, first_line

GROUPS = ("images", "texts")
SCAN_ROWS = 65536
REPAIR_FIX = "make the folder writable, or copy the cache to a writable folder and repair the copy"


@dataclass
class FileReport:
    """What is wrong with one file; `bad_rows` are the rows to drop per group."""

    path: Path
    problems: list[str] = field(default_factory=list)
    bad_rows: dict[str, set[int]] = field(default_factory=dict)
    fatal: bool = False  # unreadable, or a layout that dropping rows cannot mend
    rows: dict[str, int] = field(default_factory=dict)
    damaged_strings: set[str] = field(default_factory=set)  # string datasets that fail their digest
    unchecked_keys: bool = False  # written before key digests
    fingerprint: str | None = None
    foreign: bool = False  # another fingerprint than the first file's: merge refuses it


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

    @property
    def unchecked(self) -> list[Path]:
        """Files written before key digests (their keys and hashes could not be checked)."""
        return [f.path for f in self.files if f.unchecked_keys]

    @property
    def unrepairable(self) -> FileReport | None:
        """The consolidated file when its damage is beyond --repair (unreadable, or a layout rows cannot mend)."""
        return next((f for f in self.files if f.fatal and f.path == self.cache), None)

    def advice(self) -> str:
        """What to do about the problems found: --repair where it can mend them, else start the file over."""
        if self.unrepairable is not None:
            return unrepairable_message(self.cache, self.unrepairable)
        return f"run `tagcons cache verify --repair {self.cache}` and rerun tagcons embed to re-embed the dropped rows"


def unrepairable_message(path: Path, report: FileReport) -> str:
    return f"{path} cannot be repaired ({report.problems[0]}); delete it and its .parts folder and re-embed"


def verify_cache(path: str | Path) -> VerifyReport:
    """Check the consolidated file and every pending part file of the cache at `path`."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"{path}: is a folder; pass the cache file itself (CACHE.h5, as given to embed --out)")
    files = ([path, *_segment_paths(path)] if path.exists() else []) + _part_paths(path)
    if not files:
        raise BadInputError(f"{path}: cache file not found (and no part files); check the path")
    report = VerifyReport(path, [verify_file(f) for f in files])
    _check_fingerprints(report)
    return report


def _check_fingerprints(report: VerifyReport) -> None:
    """Mark the files `cache merge` would refuse: a fingerprint other than the first readable file's."""
    readable = [f for f in report.files if f.fingerprint is not None]
    for other in readable[1:]:
        if other.fingerprint != readable[0].fingerprint:
            other.foreign = True
            other.problems.append(
                f"fingerprint {other.fingerprint} differs from {readable[0].fingerprint} of {readable[0].path} "
                "(computed with other settings): `tagcons cache merge` would refuse it; delete the parts of the "
                "unwanted run"
            )


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
        report.fingerprint = str(read_attrs(path, ["schema", "fingerprint"]).get("fingerprint"))
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
    _check_strings(f, report)
    for group in GROUPS:
        n_keys, embeds = f[f"{group}/keys"].shape[0], f[f"{group}/embeds"]
        report.rows[group] = n_keys
        bad = set(range(min(n_keys, embeds.shape[0]), n_keys))  # keys without a row
        bad |= _scan(embeds, report)
        if _strings_lost(report, group):
            bad = set(range(n_keys))  # keys (or their hashes) untrustworthy: every row is re-embedded
        report.bad_rows[group] = {r for r in bad if r < n_keys}
    report.rows["failed"] = f["failed/keys"].shape[0]


def _check_strings(f: h5py.File, report: FileReport) -> None:
    """Every string dataset read whole and compared with its stored digest."""
    report.unchecked_keys = "key_digests" not in f.attrs
    if missing_segments(report.path, f):  # a lost segment's keys read empty through the index: its rows are
        return  # flagged by their NaN values (and dropped by --repair), its loss reported as its own problem
    for name in DIGESTED:
        _, problem = string_problem(f, name)
        if problem:
            report.problems.append(f"{problem}; --repair drops its group's rows (embed then redoes them)")
            report.damaged_strings.add(name)


def _strings_lost(report: FileReport, group: str) -> bool:
    names = {"images": ("images/keys", "images/sha256"), "texts": ("texts/keys",), "failed": DIGESTED[3:]}[group]
    return any(name in report.damaged_strings for name in names)


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


def check_checksums(path: Path) -> None:
    """Read every embedding chunk as stored (HDF5 checks its fletcher32; no conversion, no NaN scan) and
    raise BadInputError naming the first dataset that fails: the cheap check of a finished cache."""
    with open_h5(path, "r") as f:
        for group in GROUPS:
            embeds = f[f"{group}/embeds"]
            step = embeds.chunks[0] if embeds.chunks else SCAN_ROWS
            buffer = np.empty((min(step, embeds.shape[0]), *embeds.shape[1:]), dtype=embeds.dtype)
            for lo in range(0, embeds.shape[0], step):
                hi = min(lo + step, embeds.shape[0])
                with checked_read(path, embeds):
                    embeds.read_direct(buffer, np.s_[lo:hi], np.s_[0 : hi - lo])


def _rows(rows: list[int]) -> str:
    return "rows " + ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")


# --- repair ------------------------------------------------------------------------------------------


@dataclass
class RepairResult:
    dropped: dict[str, int]
    removed_parts: list[Path]
    removed_temps: list[str] = field(default_factory=list)
    digests_added: bool = False


def repair_cache(path: str | Path, report: VerifyReport) -> RepairResult:
    """Drop the damaged rows of the consolidated file (rewritten atomically, with key digests) and
    delete damaged part files and the temporary files of killed writers, under the exclusive cache
    lock. A file whose layout cannot be mended, or parts of other settings, raise BadInputError."""
    from tagcons.cache.writer import lock_path

    path = Path(path)
    _check_repairable(path, report)
    lock = FileLock(lock_path(path), path, fix=REPAIR_FIX).acquire()
    try:
        temps = _remove_temps(path)
        segments = set(_segment_paths(path))  # damaged rows there are dropped from the index below
        removed = [f.path for f in report.files if f.problems and f.path != path and f.path not in segments]
        for part in removed:
            part.unlink(missing_ok=True)
        main = next((f for f in report.files if f.path == path and (f.problems or f.unchecked_keys)), None)
        dropped = _rewrite_without(main) if main else {group: 0 for group in GROUPS}
    finally:
        lock.release()
    return RepairResult(dropped, removed, temps, bool(main and main.unchecked_keys))


def _check_repairable(path: Path, report: VerifyReport) -> None:
    if report.unrepairable is not None:
        raise BadInputError(unrepairable_message(path, report.unrepairable))
    foreign = [f.path for f in report.files if f.foreign]
    if foreign:
        raise BadInputError(
            f"{path}: cannot be repaired: {foreign[0]} (and {len(foreign) - 1} more) hold features computed with "
            f"other settings; delete the part files of the unwanted run from {parts_dir(path)}"
        )


def _remove_temps(path: Path) -> list[str]:
    """What a killed consolidation or commit left (`<cache>.consolidate-*.tmp`, `.parts/*.tmp`)."""
    found = [p.name for p in path.parent.glob(f"{path.name}.consolidate-*.tmp")]
    found += [p.name for p in parts_dir(path).glob("*.tmp")]
    remove_stale_temps(path.parent, f"{path.name}.consolidate-")
    remove_stale_temps(parts_dir(path))
    return found


def _rewrite_without(report: FileReport) -> dict[str, int]:
    attrs = read_attrs(report.path)
    with open_h5(report.path, "r") as f:
        state = _kept_rows(f, report)
    dtype = str(attrs.get("store_dtype") or _stored_dtype(report.path))
    write_state(report.path, [report.path], state, attrs, int(attrs["projection_dim"]), dtype)
    failed = report.rows.get("failed", 0) if _strings_lost(report, "failed") else 0
    return {**{group: len(report.bad_rows.get(group, ())) for group in GROUPS}, "failed": failed}


def _stored_dtype(path: Path) -> str:
    """The stored embeddings' dtype (a cache written by another tool may not say it in `store_dtype`)."""
    with open_h5(path, "r") as f:
        return str(f["images/embeds"].dtype)


def _kept_rows(f: h5py.File, report: FileReport) -> Replay:
    """The rows that survive the repair; a group whose strings are damaged is dropped unread."""
    state = Replay()
    if not _strings_lost(report, "images"):
        image_keys, shas = read_strings(f["images/keys"]), read_strings(f["images/sha256"])
        for row, (key, sha) in enumerate(zip(image_keys, shas)):
            if row not in report.bad_rows["images"]:
                state.images[key] = (0, row, sha)
    if not _strings_lost(report, "texts"):
        for row, key in enumerate(read_strings(f["texts/keys"])):
            if row not in report.bad_rows["texts"]:
                state.texts[key] = (0, row)
    if not _strings_lost(report, "failed"):
        state.failed.update((key, (sha, reason)) for key, sha, reason in failed_records(f))
    return state


def unchecked_note(report: VerifyReport, repairing: bool) -> str:
    """'; keys not checked in ...' for files written before key digests ('' when every file has them)."""
    if not report.unchecked:
        return ""
    action = "adding them" if repairing else "`--repair` adds them"
    return f"; keys and hashes not checked in {len(report.unchecked)} file(s) written before key digests: {action}"


def repair_summary(result: RepairResult) -> str:
    """One line of what the repair did ('nothing to repair' for a sound cache)."""
    dropped = any(result.dropped.values()) or result.removed_parts
    done = []
    if dropped:
        done.append(
            f"dropped {result.dropped['images']} image and {result.dropped['texts']} text row(s)"
            + (f" and {result.dropped['failed']} failure record(s)" if result.dropped.get("failed") else "")
            + f", removed {len(result.removed_parts)} damaged part file(s)"
        )
    if result.removed_temps:
        done.append(f"removed {len(result.removed_temps)} temporary file(s) of a killed writer")
    if result.digests_added:
        done.append("key digests added")
    if not done:
        return "nothing to repair"
    return "repaired: " + "; ".join(done) + ("; rerun tagcons embed to re-embed what was dropped" if dropped else "")
