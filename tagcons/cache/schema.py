"""The cache file layout (schema `tagcons.cache/1`), its metadata and fingerprint.

Every file the cache package writes -- the consolidated cache and each part file -- has this same
layout, so one set of helpers reads both:

    /images/keys, /images/sha256, /images/embeds [n, d]
    /texts/keys, /texts/embeds [n, d]
    /failed/keys, /failed/reasons, /failed/sha256 (optional when reading)
    root attrs: schema, backbone, model_id, revision, projection_dim, text_template, fingerprint,
                store_dtype, settings (JSON), created_with (JSON), updated_at, texts_truncated, key_digests (JSON)

The embedding datasets carry HDF5's fletcher32 checksum. The string datasets cannot: their values
live in HDF5's global heap, which no filter covers (two equal-length keys swapped there pass any
chunk checksum), so `key_digests` holds a sha256 of each string dataset's values, in order.
docs/cache-schema.md documents every dataset and attribute, and which a reader requires.

The fingerprint hashes everything that changes the numbers, so a cache is never silently extended
with features computed another way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from tagcons.cache.rows import REPAIR
from tagcons.errors import BadInputError

SCHEMA = "tagcons.cache/1"
STORE_DTYPES = ("float32", "float16")
FINGERPRINT_CHARS = 20
STR_DTYPE = h5py.string_dtype("utf-8")
CHUNK_BYTES = 1 << 20  # ~1 MiB chunks: cheap random row reads, still large sequential I/O
KEY_CHUNK = 65536


@dataclass
class CacheMeta:
    """How the features in a cache were computed; `settings` holds anything else that changes them
    (processor/tokenizer settings, dtype policy, strip_hash, ...) and must be JSON-serialisable."""

    backbone: str
    model_id: str
    revision: str | None
    projection_dim: int
    text_template: str = "{}"
    store_dtype: str = "float32"
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.store_dtype not in STORE_DTYPES:
            raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, got {self.store_dtype!r}")
        if int(self.projection_dim) <= 0:
            raise ValueError(f"projection_dim must be positive, got {self.projection_dim}")
        try:
            json.dumps(self.settings, sort_keys=True)
        except TypeError as e:
            raise ValueError(f"CacheMeta.settings must be JSON-serialisable: {e}") from e


def compute_fingerprint(meta: CacheMeta) -> str:
    """Hex digest of everything that changes the numbers (the backbone's short name is not one)."""
    payload = {
        "schema": SCHEMA,
        "model_id": meta.model_id,
        "revision": meta.revision,
        "projection_dim": int(meta.projection_dim),
        "text_template": meta.text_template,
        "store_dtype": meta.store_dtype,
        "settings": meta.settings,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:FINGERPRINT_CHARS]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def created_with() -> str:
    """Versions that produced the numbers, read without importing torch (slow)."""
    from tagcons import __version__

    versions = {"tagcons": __version__, "torch": _version("torch"), "transformers": _version("transformers")}
    return json.dumps(versions, sort_keys=True)


FINGERPRINTED = ("model_id", "revision", "projection_dim", "text_template", "store_dtype")


def fingerprinted_settings(attrs: dict) -> dict:
    """The settings a fingerprint covers, flat (`settings.tokenizer.vocab_size`), from root attrs."""
    flat = {name: attrs.get(name) for name in FINGERPRINTED}
    flat["revision"] = flat["revision"] or None
    settings = attrs.get("settings") or "{}"
    _flatten("settings", json.loads(settings) if isinstance(settings, str) else settings, flat)
    return flat


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
    else:
        out[prefix] = value


def describe_difference(stored: dict, wanted: dict) -> str:
    """`text_template '{}' vs 'a photo of {}'` for each fingerprinted setting that differs (stored first)."""
    return describe_settings_difference(fingerprinted_settings(stored), fingerprinted_settings(wanted)) or (
        "no named setting"
    )


def describe_settings_difference(old: dict, new: dict) -> str:
    """The same, from flat settings (`fingerprinted_settings`); empty when no recorded setting differs."""
    names = [name for name in dict.fromkeys([*old, *new]) if _plain(old.get(name)) != _plain(new.get(name))]
    shown = [f"{_short(name)} {old.get(name)!r} vs {new.get(name)!r}" for name in names[:3]]
    return ", ".join(shown + ([f"and {len(names) - 3} more"] if len(names) > 3 else []))


def recorded_settings(attrs: dict) -> dict:
    """A cache's fingerprinted settings as a run records them (without a fine-tuned backbone's key list)."""
    return {k: v for k, v in fingerprinted_settings(attrs).items() if not k.startswith("settings.trained_keys")}


def _plain(value):
    return str(value) if isinstance(value, (int, np.integer)) else value


def _short(name: str) -> str:
    return name.removeprefix("settings.")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def meta_attrs(meta: CacheMeta) -> dict:
    """Root attributes for a file written with `meta` (HDF5 attrs cannot hold None: revision -> '')."""
    return {
        "schema": SCHEMA,
        "backbone": meta.backbone,
        "model_id": meta.model_id,
        "revision": meta.revision or "",
        "projection_dim": int(meta.projection_dim),
        "text_template": meta.text_template,
        "fingerprint": compute_fingerprint(meta),
        "store_dtype": meta.store_dtype,
        "settings": json.dumps(meta.settings, sort_keys=True, ensure_ascii=False),
        "created_with": created_with(),
        "updated_at": now_iso(),
    }


def open_h5(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """HDF5's own file locking breaks on some network file systems; we lock with flock instead,
    and never modify a finished file in place (it is replaced atomically), so readers are safe."""
    return h5py.File(path, mode, locking=False)


def plain_attr(value):
    """HDF5 attrs come back as bytes or numpy scalars; callers want str / int / float."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value.item() if isinstance(value, np.generic) else value


def read_attrs(path: Path, names: Sequence[str] | None = None) -> dict:
    """Root attrs (all, or just `names`) of a cache or part file; BadInputError if it is not a
    readable tagcons cache."""
    try:
        with open_h5(path, "r") as f:
            attrs = {k: plain_attr(f.attrs[k]) for k in (names or f.attrs.keys()) if k in f.attrs}
    except OSError as e:
        raise BadInputError(f"{path}: not a readable HDF5 file ({e}); delete it or pass another path") from e
    check_schema(path, attrs)
    return attrs


def check_schema(path: Path, attrs: dict) -> None:
    """A tagcons cache of this schema (BadInputError otherwise); see also `check_required_attrs`."""
    schema = attrs.get("schema")
    if schema is None:
        raise BadInputError(
            f"{path}: not a tagcons cache (no 'schema' attribute); pass a file written by tagcons embed"
        )
    if schema != SCHEMA:
        raise BadInputError(
            f"{path}: cache schema {schema!r} is not supported (this tagcons reads {SCHEMA!r}); "
            "re-embed with this version"
        )


def check_required_attrs(path: Path, attrs: dict) -> None:
    """Every root attribute a reader needs is there (BadInputError naming the missing ones)."""
    missing = [name for name in REQUIRED_ATTRS if name not in attrs]
    if missing:
        raise BadInputError(
            f"{path}: root attribute(s) {', '.join(missing)} missing; a cache needs {', '.join(REQUIRED_ATTRS)} "
            "(see docs/cache-schema.md)"
        )


def write_attrs(f: h5py.File, attrs: dict) -> None:
    for name, value in attrs.items():
        f.attrs[name] = np.int64(value) if isinstance(value, (int, np.integer)) else value


def chunk_rows(n: int, dim: int, dtype: str) -> int:
    rows = max(1, CHUNK_BYTES // (dim * np.dtype(dtype).itemsize))
    return min(n, rows)


def create_layout(f: h5py.File, counts: dict[str, int], dim: int, dtype: str) -> None:
    """Empty datasets for `counts` = {'images': n, 'texts': n, 'failed': n} rows."""
    _strings(f, "images/keys", counts["images"])
    _strings(f, "images/sha256", counts["images"])
    _embeds(f, "images/embeds", counts["images"], dim, dtype)
    _strings(f, "texts/keys", counts["texts"])
    _embeds(f, "texts/embeds", counts["texts"], dim, dtype)
    for name in ("keys", "sha256", "reasons"):
        _strings(f, f"failed/{name}", counts["failed"])


def _strings(f: h5py.File, name: str, n: int) -> None:
    f.create_dataset(name, shape=(n,), dtype=STR_DTYPE, chunks=(min(n, KEY_CHUNK),) if n else None)


def _embeds(f: h5py.File, name: str, n: int, dim: int, dtype: str) -> None:
    """Chunked with HDF5's fletcher32 checksum, so damaged bytes fail loudly on read (empty: no chunks)."""
    chunks = (chunk_rows(n, dim, dtype), dim) if n else None
    f.create_dataset(name, shape=(n, dim), dtype=dtype, chunks=chunks, fletcher32=bool(n))


LAYOUT = (
    "images/keys",
    "images/sha256",
    "images/embeds",
    "texts/keys",
    "texts/embeds",
    "failed/keys",
    "failed/reasons",
)
# Written by tagcons, optional when reading (a cache written by another tool may lack them).
OPTIONAL_LAYOUT = ("failed/sha256",)  # absent: the failed files' hashes are unknown (they are retried)
# Root attributes every reader needs (docs/cache-schema.md lists the optional ones).
REQUIRED_ATTRS = ("schema", "backbone", "model_id", "projection_dim", "fingerprint")
UNKNOWN_SHA256 = ""
# Datasets whose row counts must agree: (first, second).
SAME_ROWS = (
    ("images/keys", "images/embeds"),
    ("images/keys", "images/sha256"),
    ("texts/keys", "texts/embeds"),
    ("failed/keys", "failed/sha256"),
    ("failed/keys", "failed/reasons"),
)


def layout_problems(f: h5py.File) -> list[str]:
    """What is wrong with the datasets' presence and shapes (empty when the layout is sound)."""
    missing = [name for name in LAYOUT if name not in f]
    if missing:
        return [f"datasets missing: {', '.join(missing)}"]
    rows = {name: f[name].shape[0] for name in (*LAYOUT, *OPTIONAL_LAYOUT) if name in f}
    problems = [
        f"{a} has {rows[a]} rows but {b} has {rows[b]}" for a, b in SAME_ROWS if b in rows and rows[a] != rows[b]
    ]
    dim = f.attrs.get("projection_dim")
    for name in ("images/embeds", "texts/embeds"):
        shape = f[name].shape
        if len(shape) != 2 or (dim is not None and shape[1] != int(dim)):
            problems.append(f"{name} has shape {shape}, expected (rows, {dim}) for projection_dim {dim}")
    return problems


def failed_records(f: h5py.File, path: Path | None = None) -> list[tuple[str, str, str]]:
    """(key, sha256, reason) of each image that could not be embedded; sha256 UNKNOWN_SHA256 where not stored.
    With ``path`` every string is checked against the file's digests (BadInputError naming the dataset)."""

    def strings(name: str) -> list[str]:
        return read_strings(f[name]) if path is None else checked_strings(path, f, name)

    keys, reasons = strings("failed/keys"), strings("failed/reasons")
    shas = strings("failed/sha256") if "failed/sha256" in f else [UNKNOWN_SHA256] * len(keys)
    return list(zip(keys, shas, reasons))


def check_layout(path: Path, f: h5py.File) -> None:
    """BadInputError naming the damaged datasets and the repair."""
    problems = layout_problems(f)
    if problems:
        raise BadInputError(f"{path}: damaged tagcons cache: {'; '.join(problems)}; {REPAIR.format(path=path)}")


def read_strings(ds: h5py.Dataset, lo: int = 0, hi: int | None = None) -> list[str]:
    return ds.asstr()[lo:hi].tolist() if ds.shape[0] else []


DIGEST_ATTR = "key_digests"
DIGESTED = ("images/keys", "images/sha256", "texts/keys", "failed/keys", "failed/sha256", "failed/reasons")


def strings_digest(values: Sequence[str]) -> str:
    """sha256 of a string dataset's values in order: their lengths, then the values joined (the lengths
    make it unambiguous; both are built at C speed, ~0.5 s for a million keys)."""
    digest = hashlib.sha256(np.fromiter(map(len, values), dtype=np.int64, count=len(values)).tobytes())
    digest.update("\x00".join(values).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def digests_of(values: dict[str, Sequence[str]]) -> dict[str, str]:
    """Digest of every string dataset from the values written (a dataset absent from `values` is empty)."""
    return {name: strings_digest(values.get(name, ())) for name in DIGESTED}


def write_digests(f: h5py.File, digests: dict[str, str]) -> None:
    f.attrs[DIGEST_ATTR] = json.dumps({name: digests.get(name, strings_digest(())) for name in DIGESTED})


def stored_digests(f: h5py.File) -> dict[str, str] | None:
    """The stored digests, or None for a file written before key digests (its keys are not checked)."""
    raw = f.attrs.get(DIGEST_ATTR)
    if raw is None:
        return None
    try:
        return json.loads(plain_attr(raw))
    except (ValueError, UnicodeDecodeError):
        return {}  # a damaged attribute: every dataset then fails its check


def string_problem(f: h5py.File, name: str) -> tuple[list[str] | None, str | None]:
    """(values, None) when `name` reads and matches its digest (or the file has none), else (None, what is wrong)."""
    if name not in f and name in OPTIONAL_LAYOUT:  # an optional dataset another writer left out
        return [], None
    try:
        values = read_strings(f[name])
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"{name} cannot be read ({type(e).__name__}: {str(e)[:80]})"
    digests = stored_digests(f)
    if digests is not None and digests.get(name) != strings_digest(values):
        return None, f"{name} does not match its stored digest (keys or hashes changed after writing)"
    return values, None


def checked_strings(path: Path, f: h5py.File, name: str) -> list[str]:
    """The values of string dataset `name`, checked against the file's digest; BadInputError naming it."""
    values, problem = string_problem(f, name)
    if problem:
        raise BadInputError(f"{path}: {problem}; {REPAIR.format(path=path)}")
    return values


def shard_of(key: str, n: int) -> int:
    """Stable shard of `key` in 0..n-1, the same on every machine and process (unlike hash())."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory's entries, after a rename) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
