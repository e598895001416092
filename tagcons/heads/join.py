"""A pairs table joined to a cache (`tagcons.cache.join`, the one join) as `PairFeatures`, and the one
report of pairs left out for lack of embeddings (fit-head and predict).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tagcons.cache.join import JoinedRows, join_rows
from tagcons.data.pairs import PairTable
from tagcons.errors import BadInputError
from tagcons.heads.features import PairFeatures

log = logging.getLogger(__name__)

SHOWN = 3


def open_cache(path):
    """Open a cache for reading (a seam: tests may substitute an in-memory reader)."""
    import tagcons.cache

    return tagcons.cache.open(path)


def cache_strip_hash(cache) -> bool:
    """Whether the cache's text keys were embedded with --strip-hash (pairs must be normalised alike)."""
    return bool(getattr(cache, "settings", {}).get("strip_hash", False))


@dataclass
class JoinedPairs:
    features: PairFeatures  # one row per present pair, in table order
    rows: JoinedRows  # the cache join: which pairs are present, what is missing and why

    present = property(lambda self: self.rows.present)
    missing_images = property(lambda self: self.rows.missing_images)
    missing_texts = property(lambda self: self.rows.missing_texts)
    failed_images = property(lambda self: self.rows.failed_images)
    n_missing = property(lambda self: self.rows.n_missing)
    n_present = property(lambda self: int(self.rows.present.sum()))


@dataclass
class MissingPairs:
    """The pairs left out of a table read in chunks, added up chunk by chunk: counts, and the unique keys
    missing or failed in first-seen order (they are what the report names; the pairs themselves are not held)."""

    images: dict = field(default_factory=dict)  # image key -> None
    texts: dict = field(default_factory=dict)  # hashtag -> None
    failed_images: dict = field(default_factory=dict)  # image key -> the cache's reason
    n_missing: int = 0
    n_present: int = 0

    def add(self, joined: JoinedPairs) -> None:
        self.images.update(dict.fromkeys(joined.missing_images))
        self.texts.update(dict.fromkeys(joined.missing_texts))
        self.failed_images.update(joined.failed_images)
        self.n_missing += joined.n_missing
        self.n_present += joined.n_present

    missing_images = property(lambda self: list(self.images))
    missing_texts = property(lambda self: list(self.texts))


def join_pairs(cache, table: PairTable, kind: str = "concat") -> JoinedPairs:
    """The table's pairs joined to the cache (normalised embeddings), as lazy feature rows."""
    rows = join_rows(cache, table.images, table.texts)
    features = PairFeatures(rows.image_embeds, rows.text_embeds, rows.image_index, rows.text_index, kind)
    return JoinedPairs(features, rows)


def describe_missing(joined: JoinedPairs, n_rows: int) -> str:
    """One line: how many pairs are left out and why, with the first few keys of each kind."""
    parts = []
    if joined.missing_images:
        parts.append(f"{len(joined.missing_images)} images not in the cache (e.g. {_first(joined.missing_images)})")
    if joined.failed_images:
        shown = ", ".join(f"'{k}': {v}" for k, v in list(joined.failed_images.items())[:SHOWN])
        parts.append(f"{len(joined.failed_images)} images that failed to embed ({shown})")
    if joined.missing_texts:
        parts.append(f"{len(joined.missing_texts)} hashtags not in the cache (e.g. {_first(joined.missing_texts)})")
    return f"{joined.n_missing} of {n_rows} pairs have no embedding and are left out: " + "; ".join(parts)


def _first(keys: list[str]) -> str:
    return ", ".join(f"'{k}'" for k in keys[:SHOWN]) + (" ..." if len(keys) > SHOWN else "")


def report_missing(joined: JoinedPairs, table: PairTable, hint: str = "") -> None:
    """Warn about pairs without embeddings; raise when no pair is left at all. ``hint`` (how to add pairs
    missing from the cache) is given only when some are missing: re-embedding cannot mend a failed image."""
    report_missing_rows(joined, len(table), table.source, hint)


def report_missing_rows(missing: JoinedPairs | MissingPairs, n_rows: int, source: str, hint: str = "") -> None:
    """`report_missing` of ``n_rows`` pairs of ``source`` joined at once or added up chunk by chunk."""
    if not missing.n_missing:
        return
    message = describe_missing(missing, n_rows) + (hint if adds_pairs(missing) else "")
    if not missing.n_present:
        raise BadInputError(f"{source}: none of the {n_rows} pairs has embeddings in the cache; {message}")
    log.warning("%s: %s", source, message)


def adds_pairs(joined: JoinedPairs) -> bool:
    """Whether embedding the pairs file into the cache would add any of the pairs left out (not only failures)."""
    return bool(joined.missing_images or joined.missing_texts)
