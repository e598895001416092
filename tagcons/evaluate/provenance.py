"""Provenance of rows: which pairs trained, validated and tested a model.

A pair is identified by its key ``image + TAB + text`` (both already normalised by the pairs
table). A side's hash (the fit, validation or test rows of a run's partition) is the sha256 of its
sorted unique keys, one per line, so two runs tested on the same rows share a hash whatever the row
order. Runs and exported models keep the keys themselves in ``part_keys.json`` (the file's name
predates the word "side"; gzip-free JSON: a few hundred kB for the study's table), so anything that
reuses trained weights can count the overlap with its own test side.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tagcons.errors import BadInputError

log = logging.getLogger(__name__)
SIDE_KEYS_FILE = "part_keys.json"
SIDE_NAMES = ("fit", "validation", "test")
KEY_SEPARATOR = "\t"
# A cache embedded from a fine-tuned backbone keeps that backbone's trained keys in its settings (part of
# the fingerprint: features from weights trained on other rows are other features).
TRAINED_KEYS_SETTING = "trained_keys"
FINETUNE_EXPORT_FILE = "tagcons_finetune.json"  # written beside every backbone `tagcons finetune` exports


def pair_keys(images: Iterable[str], texts: Iterable[str]) -> np.ndarray:
    """One key per pair: image and text joined by a tab (neither may hold a tab after normalising)."""
    return np.asarray([f"{i}{KEY_SEPARATOR}{t}" for i, t in zip(images, texts)], dtype=object)


def table_keys(table) -> np.ndarray:
    """Keys of every row of a `PairTable`."""
    return pair_keys(table.images, table.texts)


def keys_hash(keys: Iterable[str] | None) -> str | None:
    """sha256 hex of the sorted unique keys (None for a side that does not exist)."""
    if keys is None:
        return None
    digest = hashlib.sha256()
    for key in sorted(set(keys)):
        digest.update(key.encode("utf-8") + b"\n")
    return digest.hexdigest()


def side_hashes(sides: dict[str, Iterable[str] | None]) -> dict[str, str | None]:
    """{"fit": hash, "validation": hash|None, "test": hash|None} for config.json."""
    return {name: keys_hash(sides.get(name)) for name in SIDE_NAMES}


def write_side_keys(directory: str | Path, sides: dict[str, Iterable[str] | None]) -> Path:
    """Save each side's keys (sorted) beside a run's head or an exported backbone."""
    path = Path(directory) / SIDE_KEYS_FILE
    payload = {name: None if sides.get(name) is None else sorted(set(sides[name])) for name in SIDE_NAMES}
    path.write_text(json.dumps(payload, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_side_keys(directory: str | Path) -> dict[str, set[str] | None] | None:
    """The saved side keys of a run or export, checked against the side hashes its own record holds
    (config.json's `parts`, or the export's tagcons_finetune.json): a part_keys.json copied from another
    run is refused. None when it predates provenance (nothing recorded)."""
    path = Path(directory) / SIDE_KEYS_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        sides = {name: None if payload.get(name) is None else set(payload[name]) for name in SIDE_NAMES}
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as e:
        raise BadInputError(f"{path}: not a valid list of part keys ({e}); the run directory is damaged") from e
    _check_side_hashes(path, sides)
    return sides


def _check_side_hashes(path: Path, sides: dict[str, set[str] | None]) -> None:
    record, recorded = _recorded_side_hashes(path.parent)
    if recorded is None:
        log.warning("%s: %s records no part hashes (an older tagcons); its part keys are not tied to it", path, record)
        return
    changed = [name for name in SIDE_NAMES if recorded.get(name) != keys_hash(sides[name])]
    if changed:
        raise BadInputError(
            f"{path}: the {', '.join(changed)} keys do not match the part hashes in {record} (a part_keys.json "
            "copied from another run, or edited): which pairs trained it is unknown; refit it, or use another run"
        )


def _recorded_side_hashes(directory: Path) -> tuple[Path, dict | None]:
    """(the record, its `parts` hashes or None): an export's tagcons_finetune.json, else the run's config.json."""
    record = directory / FINETUNE_EXPORT_FILE
    if not record.is_file():
        record = directory / "config.json"
    try:
        parts = json.loads(record.read_text(encoding="utf-8")).get("parts")
    except FileNotFoundError:
        return record, None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise BadInputError(f"{record}: not valid JSON ({e}); the run directory is damaged") from e
    return record, parts if isinstance(parts, dict) else None


def trained_keys(sides: dict[str, set[str] | None]) -> set[str]:
    """Every key whose label shaped the weights: the fit side and the validation side (model selection)."""
    return set().union(*(sides.get(name) or set() for name in ("fit", "validation")))


def overlap_count(trained: set[str], test_keys: Iterable[str]) -> int:
    """How many of the current test pairs the reused weights were trained on."""
    return sum(1 for key in set(test_keys) if key in trained)


def check_reuse(trained: set[str] | None, test_keys: Iterable[str], source: str, fix: str) -> None:
    """Refuse weights that were trained on any of the current test pairs (BadInputError: exit 2).

    `trained` None means nothing to check (the weights carry no row record and the caller allowed it).
    """
    if trained is None:
        return
    test = set(test_keys)
    overlap = overlap_count(trained, test)
    if overlap:
        raise BadInputError(
            f"{source}: its weights were trained on {overlap} of the {len(test)} pairs in this run's test part "
            f"(a leak: those scores would be memorised, not predicted); {fix}"
        )


def recorded_trained_keys(directory: str | Path, source: str, allow_unverified: bool, flag: str) -> set[str] | None:
    """Trained keys (fit + validation) saved in `directory`; an old run or export without them is refused
    unless `allow_unverified` (then None: the caller cannot check, and says so in its log)."""
    sides = read_side_keys(directory)
    if sides is not None:
        return trained_keys(sides)
    if not allow_unverified:
        raise BadInputError(
            f"{source}: {Path(directory) / SIDE_KEYS_FILE} is missing, so which pairs trained it is unknown "
            f"and a leak into the test part cannot be ruled out; refit it with this version of tagcons, or pass "
            f"{flag} to use it anyway (its test metrics are then not evidence)"
        )
    log.warning("%s: no %s; using it unverified (%s): test rows may have trained it", source, SIDE_KEYS_FILE, flag)
    return None


def split_spec(kind: str, seed: int, test_size: float, cv=None, repeats: int = 1, dedupe="none", val_size=None):
    """config.json's `split_spec`: everything that decides which rows land on which side."""
    return {
        "kind": kind,
        "seed": seed,
        "test_size": test_size,
        "cv": cv,
        "repeats": repeats,
        "dedupe": dedupe,
        "val_size": val_size,
    }


def backbone_trained_keys(backbone: str | Path) -> list[str] | None:
    """Sorted keys that trained a local backbone folder (a `tagcons finetune` export); None for others."""
    folder = Path(backbone)
    if not folder.is_dir():
        return None
    sides = read_side_keys(folder)
    if sides is None:
        if (folder / FINETUNE_EXPORT_FILE).is_file():
            log.warning(
                "%s: a fine-tuned backbone without %s (exported by an older tagcons): which pairs trained it is "
                "unknown, so fit-head cannot check its test part against them",
                folder,
                SIDE_KEYS_FILE,
            )
        return None
    return sorted(trained_keys(sides))
