"""Any table tagcons reads (pairs, folds, predictions, lists of pairs): CSV/TSV/parquet as Arrow, and its lines.

`read_table` reads the whole table (header names trimmed, the wanted columns of a CSV/TSV kept as text) and
says in one line why a file cannot be read; `read_header` reads only the column names. `row_lines` gives the
physical line each row starts on (a quoted cell spanning lines counts every line; parquet: row numbers), and
`Where` names a file's lines in messages.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tagcons.errors import BadInputError, first_line

MAX_LINES_IN_MESSAGE = 5


READ_ERRORS = (pa.ArrowInvalid, UnicodeDecodeError, OSError)  # what a parser raises on a file it cannot read


def read_table(path: str | Path, text_columns=(), what: str = "pairs file", flag: str = "--data") -> pa.Table:
    """Any table tagcons reads (CSV/TSV/parquet) as Arrow, header names trimmed; ``text_columns`` of a CSV/TSV
    stay text. BadInputError (naming ``what`` and its ``flag``) when it is missing, unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: {what} not found; check the {flag} path")
    try:
        table = pq.read_table(path) if path.suffix.lower() == ".parquet" else _read_delimited(path, text_columns)
    except READ_ERRORS as e:
        raise unreadable(path, e, what) from e
    if table.num_rows == 0:
        raise no_rows(path)
    return trimmed_names(table)


def unreadable(path: Path, error: Exception, what: str = "pairs file") -> BadInputError:
    """The one-line refusal of a file its parser could not read."""
    return BadInputError(
        f"{path}: cannot be read as a {what.removesuffix(' file')} table ({_unreadable_reason(path, error)}); "
        "save it as UTF-8 CSV, TSV or parquet"
    )


def no_rows(path: Path) -> BadInputError:
    return BadInputError(f"{path}: the table has no rows; it needs one row per image-hashtag pair")


def trimmed_names(table: pa.Table) -> pa.Table:
    """The table with its header names stripped of surrounding spaces."""
    return table.rename_columns([str(name).strip() for name in table.column_names])


def delimiter_of(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def read_header(path: str | Path) -> list[str]:
    """A table's column names without reading its rows ([] when it cannot be read: the full read says why)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            return list(pq.read_schema(path).names)
        with path.open(encoding="utf-8-sig", newline="") as f:
            first = f.readline()
        return [name.strip() for name in next(csv.reader([first], delimiter=delimiter_of(path)), [])]
    except READ_ERRORS:
        return []


def _read_delimited(path: Path, text_columns) -> pa.Table:
    """CSV/TSV with every wanted column read as text: 'NA' or 'nan' are hashtags, not missing values.

    Arrow skips a UTF-8 byte-order mark (Excel and the study's CSV write one)."""
    return pacsv.read_csv(path, **csv_options(path, text_columns))


def csv_options(path: Path, text_columns) -> dict:
    """Arrow's parse and convert options for a CSV/TSV whose ``text_columns`` are read as text."""
    as_text = {name: pa.string() for name in text_columns if name}
    return {
        "parse_options": pacsv.ParseOptions(delimiter=delimiter_of(path), newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            column_types=as_text, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True
        ),
    }


UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _unreadable_reason(path: Path, error: Exception) -> str:
    """The parser's first line, without the NUL and control bytes a UTF-16 file puts into it."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if path.suffix.lower() != ".parquet" and (head.startswith(UTF16_BOMS) or b"\x00" in head):
        return "it looks UTF-16 encoded (NUL bytes between the characters)"
    return "".join(ch if ch.isprintable() else "?" for ch in first_line(error))


def _first_data_line(path: Path) -> int:
    """Line number of the first data row: 2 for CSV/TSV (after the header); parquet has row numbers."""
    return 0 if path.suffix.lower() == ".parquet" else 2


@dataclass(frozen=True)
class _Where:
    """The file being validated and the line (CSV/TSV) or row (parquet) number of each of its rows."""

    path: Path
    lines: np.ndarray

    def describe(self, mask: np.ndarray) -> str:
        rows = np.flatnonzero(mask)
        shown = ", ".join(str(line) for line in self.lines[rows[:MAX_LINES_IN_MESSAGE]])
        more = f" and {len(rows) - MAX_LINES_IN_MESSAGE} more" if len(rows) > MAX_LINES_IN_MESSAGE else ""
        what = "rows" if self.path.suffix.lower() == ".parquet" else "lines"
        return f"{what} {shown}{more}"


def row_lines(raw: pa.Table, path: Path) -> np.ndarray:
    """The physical line each row starts on: a quoted cell holding line breaks pushes later rows down."""
    return line_starts(raw, path)[:-1]


def line_starts(raw: pa.Table, path: Path, first: int | None = None) -> np.ndarray:
    """The line (parquet: row) each of the table's rows starts on, and after them the line the next row
    would start on; ``first`` is the first row's (None: the file's first data line)."""
    first = _first_data_line(path) if first is None else first
    positions = np.arange(raw.num_rows + 1)
    if path.suffix.lower() == ".parquet":
        return first + positions
    breaks = np.zeros(raw.num_rows, np.int64)
    for column in raw.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            counts = pc.count_substring(column.combine_chunks(), "\n").fill_null(0)
            breaks += counts.to_numpy(zero_copy_only=False).astype(np.int64)
    return first + positions + np.concatenate([[0], np.cumsum(breaks)])


Where = _Where  # the public name, for other modules that name lines of a file they read
