"""The pairs a fine-tuning run uses and their partition into three sides: fit / validation / test.

The test side comes from the shared split (`tagcons.data.splits`, the same one `fit-head` uses with
the same seed); validation is carved from the training side only (grouped by image for an images
split), so early stopping never looks at test rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from tagcons.data.given_folds import GivenFolds, read_given_folds
from tagcons.data.pairs import PairTable, check_image_paths, load_pairs
from tagcons.data.splits import dedupe_table, default_dedupe, drop_unusable, split_then_drop, validation_indices
from tagcons.distributed import DistContext
from tagcons.errors import BadInputError
from tagcons.evaluate.provenance import table_keys
from tagcons.finetune.config import FinetuneConfig
from tagcons.finetune.data import exclude_unloadable

log = logging.getLogger(__name__)


@dataclass
class FinetunePartition:
    """The fit / validation / test sides (row numbers into ``table``) of a fine-tuning run."""

    table: PairTable  # loadable pairs only
    fit: np.ndarray  # row numbers into table
    val: np.ndarray
    test: np.ndarray
    failed_images: dict[str, str]
    n_pairs_read: int
    dropped: dict = field(default_factory=dict)  # n_dropped_fit, n_dropped_test, n_duplicates_removed
    given_folds: dict | None = None  # --folds: the file's record and the test fold

    def side_keys(self) -> dict[str, np.ndarray | None]:
        """Pair keys of each side (validation None when there is none), for provenance records."""
        return {
            "fit": table_keys(self.table.subset(self.fit)),
            "validation": table_keys(self.table.subset(self.val)) if len(self.val) else None,
            "test": table_keys(self.table.subset(self.test)),
        }

    def summary(self) -> dict:
        return {
            "n_pairs_read": self.n_pairs_read,
            "n_pairs_used": len(self.table),
            "n_fit": len(self.fit),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "n_images_failed": len(self.failed_images),
            "images_failed": dict(list(self.failed_images.items())[:20]),
            **self.dropped,
        }


def load_partition(config: FinetuneConfig, dist: DistContext) -> FinetunePartition:
    """Read and check the pairs, dedupe, split the whole table, then drop the pairs whose image cannot be
    decoded from the side they fell on (the same split fit-head makes with the same seed and dedupe)."""
    read = load_pairs(config.data, config.columns, config.strip_hash, require_labels=True, scale=config.scale)
    check_image_paths(read, config.images)
    table, n_duplicates = dedupe_table(read, config.split, resolved_dedupe(config))
    failed = dist.broadcast(exclude_unloadable(table, config.images)[1] if dist.is_main else None)
    loadable = ~table.frame["image"].isin(list(failed)).to_numpy()
    given = _given_folds(config, table)
    if given is None:
        train_test = split_then_drop(table.labels, table.images, loadable, config.split, config.test_size, config.seed)
    else:
        train_test = drop_unusable(*_fold_sides(given, config), loadable)
    usable = table.subset(np.flatnonzero(loadable))
    labels, groups = usable.labels, usable.images
    fit, val = _carve_validation(train_test.train, labels, groups, config)
    _check_fit_labels(usable, fit, val, config)
    log.info("pairs: %d fit, %d validation, %d test (%s split)", len(fit), len(val), len(train_test.test), config.split)
    counts = {"n_dropped_fit": train_test.n_dropped_fit, "n_dropped_test": train_test.n_dropped_test}
    partition = FinetunePartition(
        usable, fit, val, train_test.test, failed, len(read), {**counts, "n_duplicates_removed": n_duplicates}
    )
    if given is not None:
        partition.given_folds = {**given.record(config.key_col, config.fold_col), "test_fold": config.test_fold}
    return partition


def resolved_dedupe(config: FinetuneConfig) -> str:
    """The dedupe mode: as asked; with given folds none (the rows are the given ones), else the split's default."""
    if config.folds is not None and config.dedupe is None:
        return "none"
    return default_dedupe(config.split, config.dedupe)


def _given_folds(config: FinetuneConfig, table: PairTable) -> GivenFolds | None:
    if config.folds is None:
        if config.test_fold is not None:
            raise BadInputError(f"--test-fold {config.test_fold} needs --folds FILE (the folds it picks from)")
        return None
    return read_given_folds(
        config.folds,
        table,
        config.columns,
        config.key_col,
        config.fold_col,
        config.allow_split_images,
        config.strip_hash,
    )


def _fold_sides(given: GivenFolds, config: FinetuneConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of the table: every fold but --test-fold, and --test-fold."""
    if config.test_fold not in given.numbers:
        raise BadInputError(
            f"--test-fold {config.test_fold}: {config.folds} has folds {given.numbers}; pick one of them to test on"
        )
    return given.indices()[given.numbers.index(config.test_fold)]


def _carve_validation(train: np.ndarray, labels, groups, config: FinetuneConfig) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) from the training side; --val-size 0 keeps the whole training side for fitting."""
    if config.val_size == 0:
        return train, train[:0]
    return validation_indices(train, labels, groups, config.split, config.val_size, config.seed)


def _check_fit_labels(table: PairTable, fit: np.ndarray, val: np.ndarray, config: FinetuneConfig) -> None:
    if (len(val) == 0 and config.val_size > 0) or len(fit) == 0:
        raise BadInputError(
            f"{config.data}: too few pairs to carve a validation part from the training part; "
            "add pairs, raise --val-size, or pass --val-size 0 (no validation part: the last epoch is kept)"
        )
    if len(np.unique(table.labels[fit])) < 2:
        raise BadInputError(f"{config.data}: the training part holds only one score; fine-tuning needs at least two")
