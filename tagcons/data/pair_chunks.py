"""A pairs file read in chunks of rows (CSV, TSV, parquet), each checked and normalised as `load_pairs`
checks a whole file, with the user's other columns beside it.

Nothing holds the whole file: Arrow streams it (`pyarrow.csv.open_csv`, parquet batches) and
`read_pair_chunks` yields `chunk_rows` rows at a time, so memory depends on the chunk, not on the
table. Messages name the file's own lines (a chunk's lines continue its predecessor's, quoted line
breaks counted). Every column of a CSV/TSV is read as the text it holds (an id '007' stays '007');
parquet columns keep their types. The duplicate and invisible-character reports look within a chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tagcons.configs import PAIR_CHUNK_ROWS, PairColumns
from tagcons.data.pairs import PairTable, check_columns, pairs_from_raw, report_duplicates, report_invisible_variants
from tagcons.data.tables import READ_ERRORS, Where, csv_options, line_starts, no_rows, trimmed_names, unreadable
from tagcons.errors import BadInputError
from tagcons.labels import AUTO, parse_scale


@dataclass
class PairChunk:
    """Rows of a pairs file: the pairs table of them and the file's other columns, row for row."""

    table: PairTable  # checked and normalised; its `line` column counts lines of the whole file
    carried: pd.DataFrame  # every column but the image, text and label ones, in the file's order

    def __len__(self) -> int:
        return len(self.table)


def read_pair_chunks(
    path: str | Path,
    columns: PairColumns = PairColumns(),
    strip_hash: bool = False,
    scale=None,
    chunk_rows: int = PAIR_CHUNK_ROWS,
) -> Iterator[PairChunk]:
    """The pairs file ``chunk_rows`` rows at a time on ``scale`` (a scale, not 'auto': a chunk cannot see
    the file's range); BadInputError as `load_pairs` raises it, for the chunk a problem is in."""
    path, scale = Path(path), parse_scale(scale)
    if scale == AUTO or chunk_rows < 1:
        raise ValueError("read_pair_chunks needs a scale (not 'auto') and chunk_rows >= 1")
    first, n_rows = None, 0
    for raw in _guarded(_chunks(path, columns, chunk_rows), path):
        if first is None:
            check_columns(raw, path, columns, require_labels=False)
        starts = line_starts(raw, path, first)
        table = pairs_from_raw(raw, Where(path, starts[:-1]), columns, strip_hash, scale)
        report_duplicates(table)
        report_invisible_variants(table)
        yield PairChunk(table, _carried(raw, columns))
        first, n_rows = int(starts[-1]), n_rows + raw.num_rows
    if not n_rows:
        raise no_rows(path)


def _guarded(chunks: Iterator[pa.Table], path: Path) -> Iterator[pa.Table]:
    """The chunks, a parse error in any of them the pairs loader's one-line refusal."""
    if not path.is_file():
        raise BadInputError(f"{path}: pairs file not found; check the --data path")
    try:
        yield from chunks
    except READ_ERRORS as e:
        raise unreadable(path, e) from e


def _chunks(path: Path, columns: PairColumns, chunk_rows: int) -> Iterator[pa.Table]:
    batches = _parquet_batches(path, chunk_rows) if path.suffix.lower() == ".parquet" else _csv_batches(path)
    for table in _rebatched(batches, chunk_rows):
        yield trimmed_names(table)


def _parquet_batches(path: Path, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)


def _csv_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Every column as text: a streamed CSV fixes its types on the first block, and a carried column is
    given back as written."""
    with pacsv.open_csv(path, **csv_options(path, ())) as probe:
        names = probe.schema.names
    with pacsv.open_csv(path, **csv_options(path, names)) as reader:
        yield from reader


def _rebatched(batches: Iterator[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``chunk_rows`` rows (the last one shorter), whatever the batches' sizes."""
    held, n_held = [], 0
    for batch in batches:
        held.append(batch)
        n_held += batch.num_rows
        while n_held >= chunk_rows:
            table = pa.Table.from_batches(held)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            held, n_held = rest.to_batches(), rest.num_rows
    if n_held:
        yield pa.Table.from_batches(held)


def _carried(raw: pa.Table, columns: PairColumns) -> pd.DataFrame:
    """The columns other than image, text and label, with Arrow's types (an integer column with gaps stays
    integer)."""
    names = [name for name in raw.column_names if name not in (columns.image, columns.text, columns.label)]
    return raw.select(names).to_pandas(types_mapper=pd.ArrowDtype)
