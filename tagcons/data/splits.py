"""Train/test splits, cross-validation folds and validation parts, shared by heads and finetune.

Two kinds of split:
- ``"pairs"`` reproduces the study: scikit-learn's ``train_test_split(np.arange(n), stratify=labels,
  test_size=0.2, random_state=42)``; the test rows are exactly the ones it returns. Pairs of one image
  land on both sides, so scores are optimistic (the image leaks).
- ``"images"`` (the default) keeps every image wholly on one side: a stratified grouped split, the
  first of round(1/test_size) grouped folds. The images are visited in an order drawn from the seed and
  each goes to the fold that keeps every score's share most even across folds (scikit-learn's
  ``StratifiedGroupKFold`` criterion, ties to the smaller fold). ``StratifiedGroupKFold(shuffle=True)``
  itself visits the images sorted by the spread of their scores and shuffles only ties, so on a small
  table most seeds gave the same test part: ``--seed`` and ``--repeats`` did nothing.

Every function returns sorted integer index arrays into the rows it was given. ``validation_indices``
carves a validation part out of a *training* index set only, so early stopping and hyperparameter
choice never see the test rows.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from tagcons.errors import BadInputError

log = logging.getLogger(__name__)
SPLIT_KINDS = ("images", "pairs")
# The seeded greedy split loops over groups in Python (as StratifiedGroupKFold does: 83 s for 60,000 images
# on a busy 2-core box); above this many images a vectorised grouped split stratified by each image's
# dominant score is used.
SKLEARN_MAX_GROUPS = 5000


def _check_kind(kind: str) -> None:
    if kind not in SPLIT_KINDS:
        raise BadInputError(f"unknown split '{kind}'; choose one of {', '.join(SPLIT_KINDS)}")


def _n_splits(test_size: float) -> int:
    if not 0.0 < test_size < 1.0:
        raise BadInputError(f"test size {test_size} must be between 0 and 1 (e.g. 0.2)")
    return max(2, int(round(1.0 / test_size)))


def _grouped_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    n_groups = len(np.unique(groups))
    if n_groups > SKLEARN_MAX_GROUPS:
        return _dealt_grouped_folds(labels, groups, k, seed)
    if n_groups < k:
        raise BadInputError(
            f"only {n_groups} distinct images for {k} image-grouped folds; use at most {n_groups} folds"
        )
    return _seeded_greedy_folds(labels, groups, k, seed)


def _score_counts(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group number of each row, [n_groups, n_scores] count of each score in each group)."""
    _, group_of_row = np.unique(groups, return_inverse=True)
    _, label_of_row = np.unique(labels, return_inverse=True)
    counts = np.zeros((group_of_row.max() + 1, label_of_row.max() + 1), dtype=np.int64)
    np.add.at(counts, (group_of_row, label_of_row), 1)
    return group_of_row, counts


def _seeded_greedy_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int):
    """Grouped stratified folds: the groups visited in a random order drawn from ``seed``, each put in
    the fold where it leaves every score's share across the folds most even."""
    group_of_row, counts = _score_counts(labels, groups)
    per_fold = np.zeros((k, counts.shape[1]))
    fold_of_group = np.empty(len(counts), dtype=np.int64)
    for group in np.random.default_rng(seed).permutation(len(counts)):
        fold_of_group[group] = _best_fold(per_fold, counts[group], counts.sum(axis=0))
        per_fold[fold_of_group[group]] += counts[group]
    fold = fold_of_group[group_of_row]
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(k)]


def _best_fold(per_fold: np.ndarray, group_counts: np.ndarray, totals: np.ndarray) -> int:
    """StratifiedGroupKFold's choice: the fold whose taking the group gives the lowest mean (over scores)
    spread of the score's share across folds; among equal ones, the fold with the fewest rows."""
    k = len(per_fold)
    trial = per_fold[None, :, :] + np.eye(k)[:, :, None] * group_counts[None, None, :]  # [candidate, fold, score]
    spread = np.std(trial / totals, axis=1).mean(axis=1)
    best = np.flatnonzero(np.isclose(spread, spread.min()))
    return int(best[np.argmin(per_fold[best].sum(axis=1))])


def _dealt_grouped_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int):
    """Grouped folds for many groups: shuffle the groups, order them by dominant score, deal them
    round-robin into k folds. Every score's images spread evenly; O(n log n), no Python loop per group."""
    group_of_row, counts = _score_counts(labels, groups)
    order = np.random.default_rng(seed).permutation(len(counts))
    order = order[np.argsort(counts.argmax(axis=1)[order], kind="stable")]
    fold_of_group = np.empty(len(counts), dtype=np.int64)
    fold_of_group[order] = np.arange(len(counts)) % k
    fold = fold_of_group[group_of_row]
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(k)]


def train_test_split_indices(
    labels: np.ndarray, groups: np.ndarray | None = None, kind: str = "images", test_size: float = 0.2, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Return (train_idx, test_idx). ``groups`` (e.g. image keys) is required for kind "images"."""
    _check_kind(kind)
    labels = np.asarray(labels)
    if kind == "pairs":
        return _pair_split(labels, test_size, seed)
    if groups is None:
        raise BadInputError("an images split needs the image of every row (groups)")
    return _grouped_folds(labels, np.asarray(groups), _n_splits(test_size), seed)[0]


def _pair_split(labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        train, test = train_test_split(np.arange(len(labels)), stratify=labels, test_size=test_size, random_state=seed)
    except ValueError as e:  # a score with a single row cannot be stratified
        raise BadInputError(f"cannot make a stratified pairs split ({e}); every score needs at least 2 rows") from e
    return np.sort(train), np.sort(test)


def cv_fold_indices(
    labels: np.ndarray, groups: np.ndarray | None = None, kind: str = "images", k: int = 5, seed: int = 42
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified folds as (train_idx, test_idx); grouped by ``groups`` for kind "images"."""
    _check_kind(kind)
    if k < 2:
        raise BadInputError(f"--cv {k}: cross-validation needs at least 2 folds")
    labels = np.asarray(labels)
    if kind == "images":
        if groups is None:
            raise BadInputError("image-grouped folds need the image of every row (groups)")
        return _grouped_folds(labels, np.asarray(groups), k, seed)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return [(np.sort(tr), np.sort(te)) for tr, te in splitter.split(np.zeros(len(labels)), labels)]
    except ValueError as e:
        raise BadInputError(f"cannot make {k} stratified folds ({e}); use fewer folds") from e


def validation_indices(
    train_idx: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    kind: str = "images",
    val_size: float = 0.1,
    seed: int = 42,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a training index set into (fit_idx, val_idx), both subsets of ``train_idx``.

    ``labels``/``groups`` are indexed by the full table (the same arrays the train/test split used).
    With kind "images" no image is on both sides. Falls back to a plain stratified split when the
    training part holds too few images to group, and to an unstratified one when a score is too rare.
    """
    train_idx = np.asarray(train_idx)
    sub_labels = np.asarray(labels)[train_idx]
    if kind == "images" and groups is not None:
        sub_groups = np.asarray(groups)[train_idx]
        if len(np.unique(sub_groups)) >= _n_splits(val_size):
            fit, val = _grouped_folds(sub_labels, sub_groups, _n_splits(val_size), seed)[0]
            return train_idx[fit], train_idx[val]
    return _plain_validation(train_idx, sub_labels, val_size, seed)


def _plain_validation(train_idx: np.ndarray, sub_labels: np.ndarray, val_size: float, seed: int):
    positions = np.arange(len(train_idx))
    try:
        fit, val = train_test_split(positions, stratify=sub_labels, test_size=val_size, random_state=seed)
    except ValueError:  # a score too rare, or fewer validation rows than scores: stratifying is impossible
        fit, val = train_test_split(positions, test_size=val_size, random_state=seed)
    return train_idx[np.sort(fit)], train_idx[np.sort(val)]


# --- split the whole table first, then drop the rows that cannot be used -----------------------------

DEDUPE_MODES = ("none", "exact")
DEFAULT_DEDUPE = {"images": "exact", "pairs": "none"}  # pairs: the study's rows stay exactly the study's


def default_dedupe(kind: str, dedupe: str | None) -> str:
    """The dedupe mode a split uses: as asked, else exact for images and none for the study's pairs split."""
    _check_kind(kind)
    dedupe = DEFAULT_DEDUPE[kind] if dedupe is None else dedupe
    if dedupe not in DEDUPE_MODES:
        raise BadInputError(f"unknown --dedupe '{dedupe}'; choose one of {', '.join(DEDUPE_MODES)}")
    return dedupe


def duplicate_rows(frame, columns=("image", "text", "label")) -> np.ndarray:
    """bool per row: an exact copy of an earlier row (the first of each identical group is kept)."""
    return frame.duplicated(subset=list(columns), keep="first").to_numpy()


def dedupe_table(table, kind: str, dedupe: str | None):
    """(table, n_removed): a `PairTable` without exact duplicate (image, text, score) rows when the dedupe
    mode (``default_dedupe(kind, dedupe)``) is exact; unchanged otherwise."""
    if default_dedupe(kind, dedupe) == "none":
        return table, 0
    duplicates = duplicate_rows(table.frame)
    if duplicates.any():
        log.warning("%s: %d exact duplicate rows removed (--dedupe exact)", table.source, int(duplicates.sum()))
    return table.subset(np.flatnonzero(~duplicates)), int(duplicates.sum())


@dataclass
class Partition:
    """One train/test division of a table, after the unusable rows were taken out of the side they fell on.

    ``train`` and ``test`` index the usable rows of the table in table order (positions among the
    rows where ``usable`` is true), so they index features built for the usable rows only.
    """

    train: np.ndarray
    test: np.ndarray
    n_dropped_fit: int
    n_dropped_test: int


def usable_positions(usable: np.ndarray) -> np.ndarray:
    """For each table row, its position among the usable rows (-1 where unusable)."""
    usable = np.asarray(usable, dtype=bool)
    return np.where(usable, np.cumsum(usable) - 1, -1)


def drop_unusable(train: np.ndarray, test: np.ndarray, usable: np.ndarray) -> Partition:
    """Keep each side's usable rows, renumbered among the usable rows; count what each side lost."""
    position = usable_positions(usable)
    kept_train, kept_test = train[position[train] >= 0], test[position[test] >= 0]
    return Partition(
        position[kept_train], position[kept_test], len(train) - len(kept_train), len(test) - len(kept_test)
    )


def split_then_drop(labels, groups, usable, kind: str = "images", test_size: float = 0.2, seed: int = 42) -> Partition:
    """The train/test split of the whole table (usable or not), then unusable rows dropped from each side.

    Splitting first keeps the test part independent of which images happened to fail or are missing
    from the cache: with ``kind="pairs"`` it holds exactly the study's test rows minus the dropped ones.
    """
    train, test = train_test_split_indices(labels, groups, kind, test_size, seed)
    return drop_unusable(train, test, usable)


def folds_then_drop(labels, groups, usable, kind: str = "images", k: int = 5, seed: int = 42) -> list[Partition]:
    """Cross-validation folds of the whole table, each with its unusable rows dropped afterwards."""
    return [drop_unusable(train, test, usable) for train, test in cv_fold_indices(labels, groups, kind, k, seed)]


def distinct_partitions(seeds, partitions_per_seed) -> int:
    """How many different partitions ``--repeats`` made (one list of partitions per seed; CV folds in any
    order count as one partition); warns naming the seeds that repeated an earlier seed's partition."""
    first_seed, repeated = {}, []
    for seed, partitions in zip(seeds, partitions_per_seed):
        key = frozenset(p.test.tobytes() for p in partitions)
        if key in first_seed:
            repeated.append(f"{seed} (as {first_seed[key]})")
        first_seed.setdefault(key, seed)
    if repeated:
        log.warning(
            "seeds %s gave the same split as an earlier seed: %d distinct splits in %d repeats, so the spread "
            "over repeats understates how much the result depends on the split",
            ", ".join(repeated),
            len(first_seed),
            len(seeds),
        )
    return len(first_seed)
