"""What one `fit_head` run reads, and what one split of it predicts.

`_load` reads the pairs (after the optional dedupe; the pairs ``--exclude-pairs`` lists are marked, not
removed), joins them to the cache once and reads the given folds: `_Data`, which also keeps, once per
process, what does not depend on the head (`_Data.once`). `_Outcome` holds one split's (or CV's)
predictions on the usable rows. `tagcons.heads.fit` fits on them; the audit (`tagcons.audit.run`) reuses
them for its folds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tagcons.configs import FitHeadConfig
from tagcons.data.exclude import listed_rows
from tagcons.data.given_folds import GivenFolds, read_given_folds
from tagcons.data.pairs import PairTable, load_pairs
from tagcons.data.splits import Partition, dedupe_table
from tagcons.errors import BadInputError
from tagcons.evaluate.provenance import TRAINED_KEYS_SETTING
from tagcons.heads.base import Head
from tagcons.heads.calibrate import EvaluatedSide
from tagcons.heads.join import adds_pairs, cache_strip_hash, describe_missing, join_pairs, open_cache, report_missing
from tagcons.heads.registry import get_head_class

# _Data.once's key of the usable rows' table; the other keys start with the function that computes them
_USABLE_TABLE = ("usable table",)


@dataclass
class _Data:
    table: PairTable  # every row after the dedupe (the split is computed on these)
    usable: np.ndarray  # bool per row of table: has features
    features: object  # features of the usable rows, in table order (None without a cache)
    n_duplicates_removed: int
    n_excluded: int  # rows of ``table`` listed in --exclude-pairs (off every training side, tested as split)
    n_missing_embeddings: int  # rows of ``table`` without features (``usable`` False)
    listed: np.ndarray | None = None  # bool per row of table: listed in --exclude-pairs
    # what does not depend on the head (partitions, validation parts, baselines), computed once per process
    shared: dict = field(default_factory=dict)
    given: GivenFolds | None = None  # --folds: the fold of every row of ``table``

    def once(self, key: tuple, compute):
        """``compute()``'s value, computed on the first call with ``key`` only (every head of a run asks)."""
        if key not in self.shared:
            self.shared[key] = compute()
        return self.shared[key]

    @property
    def usable_table(self) -> PairTable:
        return self.once(_USABLE_TABLE, lambda: self.table.subset(np.flatnonzero(self.usable)))

    @property
    def listed_usable(self) -> np.ndarray:
        """bool per usable row: listed in --exclude-pairs (kept off the training sides)."""
        return np.zeros(len(self.y), dtype=bool) if self.listed is None else self.listed[self.usable]

    @property
    def y(self) -> np.ndarray:
        return self.usable_table.labels.astype(int)

    @property
    def labels(self) -> tuple[int, ...]:
        return self.table.scale.labels

    def inputs(self, head: str):
        """What ``head`` reads: the features, or the usable pairs for a head that needs none.

        With a cache, a head that needs no features still leaves out the pairs without embeddings, so it
        is tested on the same rows as the heads it is a baseline for."""
        return self.features if needs_features(head) else self.usable_table


@dataclass
class _Outcome:
    """Predictions of one split or CV on the usable rows: pooled over the partitions in order."""

    partitions: list[Partition]
    heads: list[Head]
    preds: list[np.ndarray]
    probas: list[np.ndarray]
    baselines: dict[str, list[np.ndarray]] = field(default_factory=dict)  # name -> predictions per partition
    evaluated: list[EvaluatedSide] = field(default_factory=list)  # per partition: both decodings, raw probabilities
    validation: list[np.ndarray] = field(default_factory=list)  # per partition: rows that calibrated the head

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate([p.test for p in self.partitions])


def needs_features(head: str) -> bool:
    """Whether a head reads cached embeddings (the baselines read the pairs themselves)."""
    return getattr(get_head_class(head), "NEEDS_FEATURES", True)


def _load(config: FitHeadConfig) -> tuple[_Data, dict]:
    if config.cache is None:  # a head that needs no features, and no cache to test on the same rows as others
        table, n_duplicates, listed = _table(config, bool(config.strip_hash))
        provenance = {"backbone": None, "model_id": None, "fingerprint": None, "text_template": None}
        given = _given_folds(config, table, bool(config.strip_hash))
        return _Data(
            table, np.full(len(table), True), None, n_duplicates, int(listed.sum()), 0, listed, given=given
        ), provenance
    from tagcons.cache.schema import recorded_settings

    with open_cache(config.cache) as cache:
        strip_hash = cache_strip_hash(cache) if config.strip_hash is None else config.strip_hash
        table, n_duplicates, listed = _table(config, strip_hash)
        joined = join_pairs(cache, table, config.features)
        provenance = {
            "backbone": cache.backbone,
            "model_id": cache.model_id,
            "fingerprint": cache.fingerprint,
            "text_template": cache.attrs.get("text_template", "{}"),  # finetune --init-head checks it
            "trained_keys": _cache_trained_keys(cache),
            "cache_settings": recorded_settings(cache.attrs),  # predict names the setting another cache differs in
        }
    if not joined.present.any():
        advice = f"; embed this pairs file into it with `tagcons embed --data {config.data} --out {config.cache} ...`"
        raise BadInputError(
            f"{config.cache}: none of the {len(table)} pairs in {config.data} has embeddings in this cache; "
            f"{describe_missing(joined, len(table))}{advice if adds_pairs(joined) else ''}"
        )
    report_missing(joined, table, " (after the split, from the side each fell on)")
    given = _given_folds(config, table, strip_hash)
    data = _Data(
        table, joined.present, joined.features, n_duplicates, int(listed.sum()), joined.n_missing, listed, given=given
    )
    return data, provenance


def _table(config: FitHeadConfig, strip_hash: bool) -> tuple[PairTable, int, np.ndarray]:
    """(pairs, duplicates removed, listed): the pairs after the dedupe, and which of them ``exclude_pairs``
    lists (kept in the table: the split is made on every pair, the listed ones then leave the training sides)."""
    table, n_duplicates = dedupe_table(
        load_pairs(config.data, config.columns, strip_hash, scale=config.scale), config.split, config.dedupe
    )
    listed = listed_rows(table, config.exclude_pairs, strip_hash)
    if len(table) and listed.all():
        raise BadInputError(
            f"{config.exclude_pairs}: lists every one of the {len(table)} pairs of {config.data}, so no pair is left "
            "to fit on; keep in it only the pairs you found wrong"
        )
    return table, n_duplicates, listed


def _given_folds(config: FitHeadConfig, table: PairTable, strip_hash: bool) -> GivenFolds | None:
    if config.folds is None:
        return None
    return read_given_folds(
        config.folds, table, config.columns, config.key_col, config.fold_col, config.allow_split_images, strip_hash
    )


def _cache_trained_keys(cache) -> set[str] | None:
    """Pairs that trained the cache's backbone (a re-embedded fine-tune), None for a pretrained one."""
    keys = cache.settings.get(TRAINED_KEYS_SETTING)
    return None if keys is None else set(keys)
