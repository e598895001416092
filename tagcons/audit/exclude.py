"""`--exclude-pairs FILE`: leave out the pairs a reviewed audit list names (columns image, hashtag)."""

from __future__ import annotations

import logging

import numpy as np

from tagcons.data.pairs import PairColumns, PairTable, load_pairs
from tagcons.evaluate.provenance import table_keys

log = logging.getLogger(__name__)
AUDIT_COLUMNS = PairColumns(image="image", text="hashtag", label="given_score")


def excluded_rows(table: PairTable, path, strip_hash: bool = False) -> np.ndarray:
    """Boolean mask over ``table``: True where the pair is listed in ``path`` (an audit.csv or any
    CSV with image and hashtag columns, normalised like the pairs file)."""
    if path is None:
        return np.zeros(len(table), dtype=bool)
    listed = set(table_keys(load_pairs(path, AUDIT_COLUMNS, strip_hash, require_labels=False)))
    mask = np.fromiter((key in listed for key in table_keys(table)), dtype=bool, count=len(table))
    log.info("%s: leaving out %d of %d pairs it lists", path, int(mask.sum()), len(listed))
    return mask
