"""Writing safely when the disk may be full: check free space before a write, and turn an OSError
while writing into a one-line WriteFailedError after removing the temporary file (the cache and the
committed parts are never touched until the temporary file is complete).

Part files are built in memory and written with plain Python I/O, so a failed commit never leaves
HDF5 in a broken state. A consolidation writes straight to disk (it may be larger than memory); if
that write fails, HDF5 keeps handles it can no longer close and can crash when the interpreter
exits, which is why the CLI ends the process at once after a WriteFailedError."""

from __future__ import annotations

import errno
import gc
import logging
import re
import shutil
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tagcons.errors import BadInputError, WriteFailedError, first_line

log = logging.getLogger(__name__)

MARGIN_BYTES = 256 << 10  # HDF5 metadata of a small file (an empty cache file takes ~20 KiB) and file system slack
MARGIN_SHARE = 0.05  # chunk index and slack grow with the file: the margin is sized to the write
KEY_BYTES = 160  # a key, its sha256 and HDF5's variable-length string overhead, generously


def estimate_bytes(counts: dict[str, int], dim: int, dtype: str) -> int:
    """Upper estimate of the bytes a cache file with `counts` rows takes."""
    rows = counts["images"] + counts["texts"]
    return rows * dim * np.dtype(dtype).itemsize + (rows + counts["failed"]) * KEY_BYTES


def ensure_free_space(folder: Path, needed: int) -> None:
    """BadInputError unless `folder`'s file system has `needed` bytes plus a margin free."""
    wanted = needed + max(MARGIN_BYTES, int(needed * MARGIN_SHARE))
    free = shutil.disk_usage(folder).free
    if free < wanted:
        raise BadInputError(
            f"{folder}: only {_mib(free)} free, {_mib(wanted)} needed to write the next cache file; free some space "
            "and rerun (everything committed so far is kept)"
        )


@contextmanager
def writing(tmp: Path, final: Path) -> Iterator[None]:
    """Remove `tmp` and raise a one-line BadInputError if writing it fails (disk full, read-only, I/O error)."""
    previous_hook, previous_excepthook = sys.unraisablehook, sys.excepthook
    sys.unraisablehook = _quiet_h5py_cleanup(previous_hook)
    sys.excepthook = _quiet_h5py_traceback(previous_excepthook)  # h5py prints the freed handle's traceback too
    try:
        yield
    except (OSError, RuntimeError) as e:  # h5py reports a failed write (ENOSPC, EFBIG) as either
        _release_frames(e)  # the traceback's frames hold the failed file's h5py objects
        gc.collect()  # let h5py drop the failed file's handles now, quietly
        tmp.unlink(missing_ok=True)
        raise WriteFailedError(
            f"cannot write {final}: {_reason(e)}; nothing half-written is left and what was committed before is kept; "
            "free space (or fix the folder) and rerun"
        ) from e
    finally:
        sys.unraisablehook, sys.excepthook = previous_hook, previous_excepthook


def _release_frames(error: BaseException | None) -> None:
    while error is not None:
        traceback.clear_frames(error.__traceback__)
        error = error.__context__


def _quiet_h5py_cleanup(previous_hook):
    """After a failed write, h5py's handles fail again as they are freed; that repeats the error
    (logged at debug level) and must not print tracebacks around the one-line message."""

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and "h5py" in repr(unraisable.object):
            log.debug("h5py cleanup after a failed write: %s", unraisable.exc_value)
        else:
            previous_hook(unraisable)

    return hook


def _quiet_h5py_traceback(previous_hook):
    def hook(kind, value, trace) -> None:
        if isinstance(value, RuntimeError) and "decrement id ref count" in str(value):
            log.debug("h5py cleanup after a failed write: %s", value)
        else:
            previous_hook(kind, value, trace)

    return hook


def _reason(error: Exception) -> str:
    if getattr(error, "errno", None) is not None:
        return error.strerror or errno.errorcode.get(error.errno, str(error.errno))
    found = re.search(r"error message = '([^']+)'", str(error))  # HDF5 wraps the OS error in its own text
    return found[1] if found else first_line(error)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
