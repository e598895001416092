"""Parquet written as a stream of fixed-size row groups, staged beside its target.

Row groups hold `rows_per_group` rows whatever the input chunking, so scoring a file in chunks of any
size writes the same bytes. The file is written under a temporary sibling name and renamed into place
only when complete: a crash or a full disk never leaves a truncated parquet under the final name.
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
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing output (or a folder in its place) unless --overwrite; before any work is done."""
    if path.is_dir():
        raise BadInputError(f"{path}: is a folder; give a file name ending in .parquet")
    refuse_existing_file(path, overwrite)


class RowGroupWriter:
    """`write(frame)` buffers; full groups go to disk at once; `close()` writes the rest and renames."""

    def __init__(self, path: str | Path, rows_per_group: int = ROWS_PER_GROUP):
        self.path = Path(path)
        self.rows_per_group = rows_per_group
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self.n_rows = 0

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

    def close(self) -> Path:
        if self._buffered:
            self._flush(self._buffered)
        if self._writer is None:
            self._write_empty()
        self._guarded(self._writer.close)
        self._guarded(lambda: os.replace(self._tmp, self.path))
        return self.path

    def _write_empty(self) -> None:
        self._schema = self._schema or pa.schema([])
        self._guarded(self._open)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def _guarded(self, action) -> None:
        try:
            action()
        except OSError as error:
            if error.errno not in WRITE_ERRORS:
                raise
            self.abort()
            raise BadInputError(f"cannot write {self.path}: {error.strerror}; nothing half-written was kept") from error

    def __enter__(self) -> RowGroupWriter:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _settled(schema: pa.Schema) -> pa.Schema:
    """A column that is all null in the first chunk holds text in a later one: type it as a string."""
    return pa.schema([field.with_type(pa.string()) if pa.types.is_null(field.type) else field for field in schema])
