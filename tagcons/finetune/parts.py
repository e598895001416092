"""The pairs a fine-tuning run uses and how they divide: fit / validation / test.

The test part comes from the shared split (`tagcons.data.splits`, the same one `fit-head` uses with
the same seed); validation is carved from the training part only (grouped by image for an images
split), so early stopping never looks at test rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from tagcons.data.images import check_image_keys
from tagcons.data.pairs import PairTable, load_pairs
from tagcons.data.splits import train_test_split_indices, validation_indices
from tagcons.distributed import DistContext
from tagcons.errors import BadInputError
from tagcons.finetune.config import FinetuneConfig
from tagcons.finetune.data import exclude_unloadable

log = logging.getLogger(__name__)


@dataclass
class Parts:
    table: PairTable  # loadable pairs only
    fit: np.ndarray  # row numbers into table
    val: np.ndarray
    test: np.ndarray
    failed_images: dict[str, str]
    n_pairs_read: int

    def summary(self) -> dict:
        return {
            "n_pairs_read": self.n_pairs_read,
            "n_pairs_used": len(self.table),
            "n_fit": len(self.fit),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "n_images_failed": len(self.failed_images),
            "images_failed": dict(list(self.failed_images.items())[:20]),
        }


def load_parts(config: FinetuneConfig, dist: DistContext) -> Parts:
    """Read and check the pairs, drop pairs whose image cannot be decoded, then split."""
    table = load_pairs(config.data, config.columns, config.strip_hash, require_labels=True, scale=config.scale)
    check_image_keys(config.images, table.unique_images())
    failed = dist.broadcast(exclude_unloadable(table, config.images)[1] if dist.is_main else None)
    usable = table.subset(np.flatnonzero(~table.frame["image"].isin(list(failed)).to_numpy()))
    labels, groups = usable.labels, usable.images
    train, test = train_test_split_indices(labels, groups, config.split, config.test_size, config.seed)
    fit, val = validation_indices(train, labels, groups, config.split, config.val_size, config.seed)
    _check_fit_labels(usable, fit, val, config)
    log.info("pairs: %d fit, %d validation, %d test (%s split)", len(fit), len(val), len(test), config.split)
    return Parts(usable, fit, val, test, failed, len(table))


def _check_fit_labels(table: PairTable, fit: np.ndarray, val: np.ndarray, config: FinetuneConfig) -> None:
    if len(val) == 0 or len(fit) == 0:
        raise BadInputError(
            f"{config.data}: too few pairs to carve a validation part from the training part; "
            "add pairs or raise --val-size"
        )
    if len(np.unique(table.labels[fit])) < 2:
        raise BadInputError(f"{config.data}: the training part holds only one score; fine-tuning needs at least two")
