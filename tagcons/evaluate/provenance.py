"""Provenance of rows: which pairs trained, validated and tested a model.

A pair is identified by its key ``image + TAB + text`` (both already normalised by the pairs
table). A part's hash is the sha256 of its sorted unique keys, one per line, so two runs tested on
the same rows share a hash whatever the row order. Runs and exported models keep the keys
themselves in ``part_keys.json`` (gzip-free JSON: a few hundred kB for the study's table), so
anything that reuses trained weights can count the overlap with its own test part.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tagcons.errors import BadInputError

PART_KEYS_FILE = "part_keys.json"
PART_NAMES = ("fit", "validation", "test")
KEY_SEPARATOR = "\t"


def pair_keys(images: Iterable[str], texts: Iterable[str]) -> np.ndarray:
    """One key per pair: image and text joined by a tab (neither may hold a tab after normalising)."""
    return np.asarray([f"{i}{KEY_SEPARATOR}{t}" for i, t in zip(images, texts)], dtype=object)


def table_keys(table) -> np.ndarray:
    """Keys of every row of a `PairTable`."""
    return pair_keys(table.images, table.texts)


def keys_hash(keys: Iterable[str] | None) -> str | None:
    """sha256 hex of the sorted unique keys (None for a part that does not exist)."""
    if keys is None:
        return None
    digest = hashlib.sha256()
    for key in sorted(set(keys)):
        digest.update(key.encode("utf-8") + b"\n")
    return digest.hexdigest()


def part_hashes(parts: dict[str, Iterable[str] | None]) -> dict[str, str | None]:
    """{"fit": hash, "validation": hash|None, "test": hash|None} for config.json."""
    return {name: keys_hash(parts.get(name)) for name in PART_NAMES}


def write_part_keys(directory: str | Path, parts: dict[str, Iterable[str] | None]) -> Path:
    """Save each part's keys (sorted) beside a run's head or an exported backbone."""
    path = Path(directory) / PART_KEYS_FILE
    payload = {name: None if parts.get(name) is None else sorted(set(parts[name])) for name in PART_NAMES}
    path.write_text(json.dumps(payload, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_part_keys(directory: str | Path) -> dict[str, set[str] | None] | None:
    """The saved parts of a run or export; None when it predates provenance (nothing recorded)."""
    path = Path(directory) / PART_KEYS_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        return {name: None if payload.get(name) is None else set(payload[name]) for name in PART_NAMES}
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        raise BadInputError(f"{path}: not a valid list of part keys ({e}); the run directory is damaged") from e


def trained_keys(parts: dict[str, set[str] | None]) -> set[str]:
    """Every key whose label shaped the weights: the fit part and the validation part (model selection)."""
    return set().union(*(parts.get(name) or set() for name in ("fit", "validation")))


def overlap_count(trained: set[str], test_keys: Iterable[str]) -> int:
    """How many of the current test pairs the reused weights were trained on."""
    return sum(1 for key in set(test_keys) if key in trained)
