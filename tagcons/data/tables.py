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


def read_table(path: str | Path, text_columns=(), what: str = "pairs file", flag: str = "--data") -> pa.Table:
    """Any table tagcons reads (CSV/TSV/parquet) as Arrow, header names trimmed; ``text_columns`` of a CSV/TSV
    stay text. BadInputError (naming ``what`` and its ``flag``) when it is missing, unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: {what} not found; check the {flag} path")
    try:
        table = pq.read_table(path) if path.suffix.lower() == ".parquet" else _read_delimited(path, text_columns)
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as e:
        raise BadInputError(
            f"{path}: cannot be read as a {what.removesuffix(' file')} table ({_unreadable_reason(path, e)}); "
            "save it as UTF-8 CSV, TSV or parquet"
        ) from e
    if table.num_rows == 0:
        raise BadInputError(f"{path}: the table has no rows; it needs one row per image-hashtag pair")
    return table.rename_columns([str(name).strip() for name in table.column_names])


def read_header(path: str | Path) -> list[str]:
    """A table's column names without reading its rows ([] when it cannot be read: the full read says why)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            return list(pq.read_schema(path).names)
        with path.open(encoding="utf-8-sig", newline="") as f:
            first = f.readline()
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
        return [name.strip() for name in next(csv.reader([first], delimiter=delimiter), [])]
    except (OSError, UnicodeDecodeError, pa.ArrowInvalid):
        return []


def _read_delimited(path: Path, text_columns) -> pa.Table:
    """CSV/TSV with every wanted column read as text: 'NA' or 'nan' are hashtags, not missing values.

    Arrow skips a UTF-8 byte-order mark (Excel and the study's CSV write one)."""
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    as_text = {name: pa.string() for name in text_columns if name}
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=as_text, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True
        ),
    )


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
    first = _first_data_line(path)
    if first == 0:
        return np.arange(raw.num_rows)
    breaks = np.zeros(raw.num_rows, np.int64)
    for column in raw.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            counts = pc.count_substring(column.combine_chunks(), "\n").fill_null(0)
            breaks += counts.to_numpy(zero_copy_only=False).astype(np.int64)
    return first + np.arange(raw.num_rows) + np.concatenate([[0], np.cumsum(breaks)[:-1]])


Where = _Where  # the public name, for other modules that name lines of a file they read
