"""Given folds: a study's own cross-validation folds, one fold number per pair, read from a file.

The fold file is joined to the pairs table like `tagcons evaluate`'s predictions (`data.row_join`:
``key_col`` when both files have it, else image + hashtag). Refused, with the file, lines and fix:
a pair the file does not assign, a row that names no pair, fewer than 2 folds, and (unless
``allow_split_images``) an image whose pairs sit in two folds, which would let the image leak from
training into test. With given folds the rows are the given ones: fit-head's ``--dedupe`` defaults to
none, so a fitted run is tested on exactly the rows of the study's own predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.configs import PairColumns
from tagcons.data.images import files_sha256
from tagcons.data.pairs import PairTable
from tagcons.data.row_join import join_rows
from tagcons.data.splits import Partition, drop_unusable
from tagcons.data.tables import Where
from tagcons.errors import BadInputError

FOLDS_FLAG = "--folds"


@dataclass
class GivenFolds:
    """The fold number of every row of a pairs table, as a fold file gives it."""

    fold: np.ndarray  # [rows of the table]
    source: Path
    sha256: str
    joined_on: str

    @property
    def numbers(self) -> list[int]:
        return sorted(int(f) for f in np.unique(self.fold))

    def indices(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train rows, test rows) per fold, in fold-number order."""
        return [(np.flatnonzero(self.fold != f), np.flatnonzero(self.fold == f)) for f in self.numbers]

    def partitions(self, usable: np.ndarray) -> list[Partition]:
        """Each fold's partition with the rows that cannot be used dropped from the side they fall on."""
        return [drop_unusable(train, test, usable) for train, test in self.indices()]

    def record(self, key_col: str | None, fold_col: str) -> dict:
        """What config.json's split_spec keeps of them."""
        return {
            "file": str(self.source),
            "sha256": self.sha256,
            "joined_on": self.joined_on,
            "key_col": key_col,
            "fold_col": fold_col,
            "folds": self.numbers,
        }


def read_given_folds(
    path: str | Path,
    table: PairTable,
    columns: PairColumns,
    key_col: str | None = None,
    fold_col: str = "fold",
    allow_split_images: bool = False,
    strip_hash: bool = False,
) -> GivenFolds:
    """The fold of every row of ``table`` from ``path`` (BadInputError for holes, too few folds, split images)."""
    path = Path(path)
    joined = join_rows(path, table, columns, key_col, "fold file", FOLDS_FLAG, strip_hash)
    numbers = joined.integers(fold_col, "--fold-col")
    fold = np.full(len(table), -1, dtype=np.int64)
    assigned = np.zeros(len(table), dtype=bool)
    fold[joined.pair_row], assigned[joined.pair_row] = numbers, True
    _check_assigned(assigned, path, table)
    _check_fold_count(fold, path)
    if not allow_split_images:
        _check_images_whole(fold, table, path)
    return GivenFolds(fold, path, files_sha256([path]), joined.on)


def _check_assigned(assigned: np.ndarray, path: Path, table: PairTable) -> None:
    if not assigned.all():
        where = Where(Path(table.source), table.frame["line"].to_numpy())
        raise BadInputError(
            f"{path}: assigns no fold to {int((~assigned).sum())} pairs of {table.source} "
            f"({where.describe(~assigned)}); give every pair a fold, or leave those pairs out of the pairs file"
        )


def _check_fold_count(fold: np.ndarray, path: Path) -> None:
    if len(np.unique(fold)) < 2:
        raise BadInputError(
            f"{path}: only {len(np.unique(fold))} fold ({np.unique(fold).tolist()}); cross-validation needs at least "
            "2 folds: give the file's rows at least two fold numbers"
        )


def _check_images_whole(fold: np.ndarray, table: PairTable, path: Path) -> None:
    per_image = pd.DataFrame({"image": table.images, "fold": fold}).groupby("image", sort=True)["fold"].unique()
    split = per_image[per_image.map(len) > 1]
    if len(split):
        image, folds = split.index[0], sorted(int(f) for f in split.iloc[0])
        raise BadInputError(
            f"{path}: {len(split)} images have pairs in more than one fold (e.g. '{image}' in folds {folds}), so an "
            "image would be trained on and tested on; give each image one fold, or pass --allow-split-images "
            "to use the folds as they are (the scores are then optimistic)"
        )
