"""Tables written as a stream of chunks, staged beside their target: parquet row groups or CSV text.

`table_writer(path)` picks the format from the path: `.parquet` writes parquet row groups of
`rows_per_group` rows whatever the input chunking, anything else CSV text (a header, then each chunk's
rows, as pandas' `to_csv` writes them), so writing a table in chunks of any size writes the same bytes.
Either is written under a temporary sibling name and renamed into place only when complete: a crash or
a full disk never leaves a truncated file under the final name, and a symlink there is replaced, never
written through. `tagcons score`, `suggest` and `predict` write their outputs so.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tagcons.errors import BadInputError
from tagcons.outputs import refuse_existing_file

ROWS_PER_GROUP = 65536
PARQUET_SUFFIXES = (".parquet", ".pq")
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing output (or a folder in its place) unless --overwrite; before any work is done."""
    if path.is_dir():
        raise BadInputError(f"{path}: is a folder; give a file name ending in .parquet")
    refuse_existing_file(path, overwrite)


def is_parquet(path: str | Path) -> bool:
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def table_writer(path: str | Path, rows_per_group: int = ROWS_PER_GROUP) -> StagedTableWriter:
    """A parquet writer for a .parquet path, else a CSV writer."""
    return RowGroupWriter(path, rows_per_group) if is_parquet(path) else CsvChunkWriter(path)


class StagedTableWriter:
    """`write(frame)` appends a chunk; `close()` finishes the temporary sibling and renames it into place;
    `abort()` (or leaving the `with` block by an exception) removes it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.n_rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Write what is buffered and close the temporary file."""
        raise NotImplementedError

    def _release(self) -> None:
        """Close the temporary file without finishing it."""
        raise NotImplementedError

    def close(self) -> Path:
        self._finish()
        self._guarded(lambda: os.replace(self._tmp, self.path))
        return self.path

    def abort(self) -> None:
        self._release()
        self._tmp.unlink(missing_ok=True)

    def _guarded(self, action) -> None:
        try:
            action()
        except OSError as error:
            if error.errno not in WRITE_ERRORS:
                raise
            self.abort()
            raise BadInputError(f"cannot write {self.path}: {error.strerror}; nothing half-written was kept") from error

    def __enter__(self) -> StagedTableWriter:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class CsvChunkWriter(StagedTableWriter):
    """CSV text: the first chunk's header, then every chunk's rows (UTF-8, fsynced before the rename)."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self._handle = None

    def write(self, frame: pd.DataFrame) -> None:
        text = frame.to_csv(index=False, header=self._handle is None)
        self._guarded(lambda: self._open().write(text))
        self.n_rows += len(frame)

    def _open(self):
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # "x": a new file, never an existing one or a link; closed by _finish or _release
            self._handle = open(self._tmp, "x", encoding="utf-8")  # noqa: SIM115
        return self._handle

    def _finish(self) -> None:
        self._guarded(self._open)
        self._guarded(self._handle.flush)
        self._guarded(lambda: os.fsync(self._handle.fileno()))
        self._guarded(self._handle.close)

    def _release(self) -> None:
        if self._handle is not None:
            self._handle.close()


class RowGroupWriter(StagedTableWriter):
    """`write(frame)` buffers; full groups go to disk at once; `close()` writes the rest and renames."""

    def __init__(self, path: str | Path, rows_per_group: int = ROWS_PER_GROUP):
        super().__init__(path)
        self.rows_per_group = rows_per_group
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, frame: pd.DataFrame) -> None:
        table = self._as_table(frame)
        self._buffer.append(table)
        self._buffered += table.num_rows
        while self._buffered >= self.rows_per_group:
            self._flush(self.rows_per_group)

    def _as_table(self, frame: pd.DataFrame) -> pa.Table:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._schema is None:
            self._schema = _settled(table.schema).remove_metadata()
        return table.cast(self._schema)

    def _flush(self, n_rows: int) -> None:
        table = pa.concat_tables(self._buffer)
        head, rest = table.slice(0, n_rows), table.slice(n_rows)
        self._guarded(lambda: self._open().write_table(head, row_group_size=n_rows))
        self.n_rows += head.num_rows
        self._buffer, self._buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, self._schema)
        return self._writer

    def _finish(self) -> None:
        if self._buffered:
            self._flush(self._buffered)
        if self._writer is None:
            self._write_empty()
        self._guarded(self._writer.close)

    def _write_empty(self) -> None:
        self._schema = self._schema or pa.schema([])
        self._guarded(self._open)

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _settled(schema: pa.Schema) -> pa.Schema:
    """Text as `string`: a column that is all null in the first chunk holds text in a later one, and pandas 3
    gives text as `large_string` only when a chunk has any (a file's schema must not depend on its chunks)."""
    return pa.schema([field.with_type(pa.string()) if _text_or_null(field.type) else field for field in schema])


def _text_or_null(kind: pa.DataType) -> bool:
    return pa.types.is_null(kind) or pa.types.is_large_string(kind)


CARRIED_SUFFIX = "_input"


def with_carried(out: pd.DataFrame, carried: pd.DataFrame, suffix: str = CARRIED_SUFFIX) -> tuple[pd.DataFrame, dict]:
    """``out`` followed by the input's own columns ``carried`` (row for row, in their order). A carried
    column whose name an output column has keeps its values under the name + ``suffix`` (again while that is
    taken too); returns the frame and {input name: name in the output} of the columns so renamed."""
    taken, names, renamed = set(out.columns), [], {}
    for name in carried.columns:
        new = name
        while new in taken:
            new = f"{new}{suffix}"
        taken.add(new)
        names.append(new)
        if new != name:
            renamed[name] = new
    extra = carried.set_axis(names, axis=1).set_axis(out.index, axis=0)
    return pd.concat([out, extra], axis=1), renamed
