"""Reading chosen rows of an HDF5 matrix without loading all of it.

Indices are sorted and deduplicated, grouped into runs whose gaps are small, and each run is read as
one contiguous slice (h5py's fancy indexing is slow for many indices); rows are then put back in
the caller's order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagcons.errors import BadInputError, first_line

if TYPE_CHECKING:
    import h5py

REPAIR = (
    "run `tagcons cache verify --repair {path}` to drop the damaged rows, then rerun tagcons embed to re-embed them"
)

MAX_GAP = 16  # reading up to this many unneeded rows beats one more read call
CONVERT_ROWS = 2048  # float16 -> float32 in cache-sized blocks: ~1.5x faster, no full-size float16 copy


def read_range(ds: h5py.Dataset, lo: int, hi: int, dtype=np.float32) -> np.ndarray:
    """Rows lo:hi as `dtype` (None: as stored), converted block by block."""
    if dtype is None or ds.dtype == dtype:
        return ds[lo:hi]
    out = np.empty((hi - lo, ds.shape[1]), dtype=dtype)
    for start in range(lo, hi, CONVERT_ROWS):
        stop = min(start + CONVERT_ROWS, hi)
        out[start - lo : stop - lo] = ds[start:stop]
    return out


def read_rows(ds: h5py.Dataset, indices) -> np.ndarray:
    """Rows `indices` (any order, repeats allowed) of the 2-D dataset `ds`, in the dataset's dtype."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= ds.shape[0]):
        raise IndexError(f"row index out of range for {ds.name} with {ds.shape[0]} rows")
    unique, inverse = np.unique(idx, return_inverse=True)
    rows = read_sorted_rows(ds, unique)
    return rows if unique.size == idx.size and np.array_equal(unique, idx) else rows[inverse]


def read_sorted_rows(ds: h5py.Dataset, idx: np.ndarray) -> np.ndarray:
    """Rows at strictly increasing `idx`, one slice read per run of nearby indices."""
    out = np.empty((idx.size, ds.shape[1]), dtype=ds.dtype)
    if idx.size == 0:
        return out
    breaks = np.flatnonzero(np.diff(idx) > MAX_GAP) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [idx.size]))
    for s, e in zip(starts.tolist(), ends.tolist()):
        lo, hi = int(idx[s]), int(idx[e - 1]) + 1
        if hi - lo == e - s:
            out[s:e] = ds[lo:hi]
        else:
            out[s:e] = ds[lo:hi][idx[s:e] - lo]
    return out


def l2_normalise(x: np.ndarray, dtype=np.float32, eps: float = 1e-12, inplace: bool = False) -> np.ndarray:
    """Row-wise L2 normalisation computed in float32, returned as ``dtype``; all-zero rows stay zero, not NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
    if inplace:
        x /= norms
        return x.astype(dtype, copy=False)
    return (x / norms).astype(dtype, copy=False)


def check_finite(path: Path, ds: h5py.Dataset, block: np.ndarray, rows) -> np.ndarray:
    """`block` unchanged if every value is finite, else BadInputError naming the dataset and rows.
    `rows`: the first row's number (a contiguous block) or the row numbers read."""
    finite = np.isfinite(block).all(axis=1) if block.ndim == 2 else np.isfinite(block)
    if finite.all():
        return block
    bad = np.flatnonzero(~finite)
    numbers = bad + rows if isinstance(rows, int) else np.asarray(rows).reshape(-1)[bad]
    shown = ", ".join(str(int(n)) for n in numbers[:5]) + (", ..." if len(numbers) > 5 else "")
    raise BadInputError(
        f"{path}: {ds.name} holds NaN or infinite values in {len(numbers)} row(s) ({shown}); "
        + REPAIR.format(path=path)
    )


@contextmanager
def checked_read(path: Path, ds: h5py.Dataset) -> Iterator[None]:
    """An HDF5 read error (a fletcher32 checksum mismatch, a truncated file) becomes a BadInputError."""
    try:
        yield
    except OSError as e:
        raise BadInputError(
            f"{path}: {ds.name} cannot be read ({first_line(e)}; the file is damaged); " + REPAIR.format(path=path)
        ) from e
