"""Join another file's rows (predictions made elsewhere, a fold per pair) to the rows of a pairs table.

Rows are matched on ``key_col`` when both files have that column (a study's ``sample_id``), else on
image + hashtag normalised as the pairs table normalises them. Every row of the other file must
match exactly one row of the pairs table: a row that matches none, a key that names several pairs
or a pair named twice raise `BadInputError` naming the file, its first lines and the fix.
`tagcons evaluate` and the given folds of `fit-head --folds` / `audit --folds-file` share this join.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from tagcons.configs import PairColumns
from tagcons.data.pairs import PairTable, normalise_image_key, normalise_text
from tagcons.data.tables import Where, read_table, row_lines
from tagcons.errors import BadInputError

log = logging.getLogger(__name__)
IMAGE_AND_TEXT = "image + hashtag"


@dataclass
class JoinedRows:
    """The other file's rows, each with the pairs-table row it names."""

    raw: pa.Table  # the other file as read
    where: Where  # its path and the line of each of its rows, for messages
    pair_row: np.ndarray  # [rows of the other file] index into the pairs table
    on: str  # the key column, or "image + hashtag"

    def column(self, name: str, flag: str) -> pd.Series:
        """The column ``name`` (BadInputError naming ``flag`` when the file lacks it)."""
        if name not in self.raw.column_names:
            raise BadInputError(
                f"{self.where.path}: no column '{name}' ({flag}); it has {self.raw.column_names}; "
                f"name the right column with {flag}"
            )
        return self.raw.column(name).to_pandas()

    def integers(self, name: str, flag: str) -> np.ndarray:
        """The column ``name`` as whole numbers (BadInputError naming the lines of empty or fractional cells)."""
        numbers = pd.to_numeric(self.column(name, flag), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
        if bad.any():
            raise BadInputError(
                f"{self.where.path}: column '{name}' ({flag}) is empty or not a whole number at "
                f"{self.where.describe(bad)}; fill in an integer per row"
            )
        return numbers.astype(np.int64)


def join_rows(
    path: str | Path,
    table: PairTable,
    columns: PairColumns,
    key_col: str | None = None,
    what: str = "predictions file",
    flag: str = "--predictions",
    strip_hash: bool = False,
) -> JoinedRows:
    """Match every row of ``path`` to one row of ``table`` (loaded from ``table.source`` with ``columns``)."""
    path = Path(path)
    raw = read_table(path, (key_col, columns.image, columns.text), what, flag)
    where = Where(path, row_lines(raw, path))
    on, theirs, ours = _keys(raw, path, table, columns, key_col, strip_hash)
    pair_row = _match(theirs, ours, where, table, on)
    return JoinedRows(raw, where, pair_row, on)


def _keys(raw: pa.Table, path: Path, table: PairTable, columns: PairColumns, key_col, strip_hash: bool):
    """(what the rows are joined on, the other file's key per row, the pairs table's key per row)."""
    if key_col and key_col in raw.column_names:
        pairs_keys = _pairs_key_column(table, key_col)
        if pairs_keys is not None:
            return key_col, _text(raw, key_col), pairs_keys
        log.info("%s has no column '%s': joining %s on image + hashtag", table.source, key_col, path)
    missing = [name for name in (columns.image, columns.text) if name not in raw.column_names]
    if missing:
        key_hint = f"the key column '{key_col}' in both files or " if key_col else "--key-col naming an id column, or "
        raise BadInputError(
            f"{path}: no column {missing} to join its rows to {table.source}; it has {raw.column_names}; "
            f"give {key_hint}--image-col / --text-col columns that both files have"
        )
    images = [normalise_image_key(v) for v in _text(raw, columns.image)]
    texts = [normalise_text(v, strip_hash) for v in _text(raw, columns.text)]
    theirs = np.asarray([f"{i}\t{t}" for i, t in zip(images, texts)], dtype=object)
    ours = np.asarray([f"{i}\t{t}" for i, t in zip(table.images, table.texts)], dtype=object)
    return IMAGE_AND_TEXT, theirs, ours


def _text(raw: pa.Table, name: str) -> np.ndarray:
    values = raw.column(name).to_pandas()
    return np.asarray([("" if pd.isna(v) else str(v)).strip() for v in values], dtype=object)


def _pairs_key_column(table: PairTable, key_col: str) -> np.ndarray | None:
    """The key of each row of ``table``, read again from its file (found by each row's line); None without it."""
    source = Path(table.source)
    raw = read_table(source, (key_col,))
    if key_col not in raw.column_names:
        return None
    by_line = dict(zip(row_lines(raw, source), _text(raw, key_col)))
    return np.asarray([by_line[line] for line in table.frame["line"]], dtype=object)


def _match(theirs: np.ndarray, ours: np.ndarray, where: Where, table: PairTable, on: str) -> np.ndarray:
    _check_unique(theirs, where, on, f"each pair may appear once in {where.path.name}")
    position = _positions(theirs, ours, table, on)
    unmatched = position < 0
    if unmatched.any():
        shown = ", ".join(_shown(v) for v in theirs[unmatched][:3])
        raise BadInputError(
            f"{where.path}: {where.describe(unmatched)} ({on} {shown}) have no row in {table.source}; "
            f"give the pairs file these rows were made from, or delete them"
        )
    return position


def _positions(theirs: np.ndarray, ours: np.ndarray, table: PairTable, on: str) -> np.ndarray:
    """Row of ``ours`` each of ``theirs`` names (-1: none); a pairs key named but held by several rows is refused."""
    named = np.flatnonzero(pd.Index(theirs).get_indexer(ours) >= 0)
    lines = table.frame["line"].to_numpy()[named]
    _check_unique(ours[named], Where(Path(table.source), lines), on, "join on an id column with --key-col")
    found = pd.Index(ours[named]).get_indexer(theirs)
    return np.where(found >= 0, named[np.maximum(found, 0)], -1)


def _check_unique(keys: np.ndarray, where: Where, on: str, fix: str) -> None:
    repeated = pd.Series(keys).duplicated(keep=False).to_numpy()
    if repeated.any():
        example = _shown(keys[repeated][0])
        raise BadInputError(
            f"{where.path}: {on} {example} appears more than once ({where.describe(repeated)}), so a row cannot be "
            f"joined to exactly one pair; {fix}"
        )


def _shown(key: str) -> str:
    return "'" + str(key).replace("\t", "' + '") + "'"
