"""`--exclude-pairs FILE`: the pairs a reviewed list names (an audit.csv: columns image, hashtag), kept
out of every training side only.

A list from `tagcons audit` names the pairs a model like the one being tested gets wrong. Leaving
them out of the test part too would select the test rows by the model's own errors and raise its
test scores with no label fixed (with shuffled labels logreg's macro-F1 rose from 0.172 to 0.315):
so the split is made on every pair, the listed pairs leave the training side (and with it the
validation side carved from it) and the test part stays whole.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from tagcons.configs import PairColumns
from tagcons.data.pairs import PairTable, load_pairs
from tagcons.data.splits import Partition

log = logging.getLogger(__name__)
AUDIT_COLUMNS = PairColumns(image="image", text="hashtag", label="given_score")


def listed_rows(table: PairTable, path, strip_hash: bool = False) -> np.ndarray:
    """Boolean mask over ``table``: True where the pair is listed in ``path`` (an audit.csv or any
    CSV with image and hashtag columns, normalised like the pairs file); all False without a path."""
    if path is None:
        return np.zeros(len(table), dtype=bool)
    listing = load_pairs(path, AUDIT_COLUMNS, strip_hash, require_labels=False)
    listed = set(zip(listing.images, listing.texts))
    mask = np.fromiter((pair in listed for pair in zip(table.images, table.texts)), dtype=bool, count=len(table))
    log.info("%s: %d of its %d pairs leave the training side; the test part stays whole", path, mask.sum(), len(listed))
    return mask


def leave_out_of_training(partition: Partition, listed: np.ndarray) -> Partition:
    """The partition with the ``listed`` rows (bool over the rows it indexes) taken off its training side."""
    return dataclasses.replace(partition, train=partition.train[~listed[partition.train]])
