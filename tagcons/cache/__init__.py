"""HDF5 feature cache (schema `tagcons.cache/1`): crash-safe resumable writer, shard merge, reader.

with tagcons.cache.open(path) as cache: ...          # read (see reader.py)
with CacheWriter(path, meta) as w: w.commit(...); w.consolidate()   # write (see writer.py)
"""

from tagcons.cache.merge import ConsolidateStats
from tagcons.cache.parts import pending_parts
from tagcons.cache.reader import CacheReader, PairLookup, open
from tagcons.cache.schema import SCHEMA, CacheMeta, compute_fingerprint, shard_of
from tagcons.cache.writer import CacheWriter, merge_parts

__all__ = [
    "SCHEMA",
    "CacheMeta",
    "CacheReader",
    "CacheWriter",
    "ConsolidateStats",
    "PairLookup",
    "compute_fingerprint",
    "merge_parts",
    "open",
    "pending_parts",
    "shard_of",
]
