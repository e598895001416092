"""Safe image loading: paths stay under the images root, every mode becomes RGB, failures are values.

A missing, empty, truncated, corrupt, unreadable or non-image file, and a symlink whose target lies
outside the images root, raise `ImageLoadError` with a short reason; callers record it per item and
go on. Paths that are absolute or climb out of the root with '..' are the user's mistake
(`BadInputError`), found before any work starts. Large images are decoded reduced to a few times the
model's input size (`load_rgb(..., min_side=...)`), so a batch's memory is bounded by batch size x
model input, not by the photos' megapixels.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import unicodedata
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tagcons.errors import BadInputError

# Pillow's default guard is ~89 Mpx with a warning and 2x that as an error; make both an error at
# 2x the default, so a 1080x1080 photo passes and a decompression bomb never reaches memory.
MAX_IMAGE_PIXELS = 2 * 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
_HASH_BLOCK = 1 << 20
# Decode to at least this many times the model's input side: the processor's own resize then sees
# enough pixels that features barely move (measured in tests/faults/test_input_faults.py).
REDUCE_FACTOR = 4
# HEIF-family brands (bytes 8-12 of an ISO media file); Pillow has no decoder for them.
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
log = logging.getLogger(__name__)


class ImageLoadError(Exception):
    """One image could not be loaded; `reason` is short enough for the cache's failed group."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class BadImagePathError(BadInputError):
    """An image key that is wrong whatever the disk holds; `key` lets the caller name the table's lines."""

    def __init__(self, key: str, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.key, self.problem, self.fix = key, problem, fix


def lexical_image_path(root: str | Path, key: str) -> Path:
    """The path of an image key under `root` without touching the disk; absolute or '..'-escaping keys refused."""
    if "\x00" in key:
        raise BadImagePathError(key, f"image path {key!r} contains a NUL byte", "fix it in the pairs file")
    relative = PurePosixPath(key.replace("\\", "/"))
    if relative.is_absolute() or Path(key).is_absolute() or (len(key) > 1 and key[1] == ":"):
        raise BadImagePathError(key, f"image path '{key}' is absolute", "image paths must be relative to --images")
    root = Path(os.path.abspath(root))
    candidate = Path(os.path.normpath(root / relative))
    if candidate != root and root not in candidate.parents:
        raise BadImagePathError(
            key, f"image path '{key}' escapes the images folder {root}", "remove '..' from the pairs file"
        )
    return candidate


def resolve_image_path(root: str | Path, key: str) -> Path:
    """The file for an image key: NFC or NFD spelling, symlinks followed only while they stay under `root`.

    Raises BadInputError for keys that are wrong whatever the disk holds, ImageLoadError for a
    symlink whose target lies outside `root` (one image refused, the run goes on).
    """
    lexical = lexical_image_path(root, key)
    real_root = Path(root).resolve()
    target = _resolved(_existing_spelling(lexical, key), key)
    if target != real_root and real_root not in target.parents:
        raise ImageLoadError(
            key,
            f"symlink pointing outside the images folder (to {target}); copy the file into the folder "
            "or pass the folder holding the real files as --images",
        )
    return target


def _resolved(path: Path, key: str) -> Path:
    """`path` with symlinks followed; a symlink loop fails this image only (RuntimeError, or OSError on 3.13)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:
        raise ImageLoadError(key, "symlink loop (the link points back at itself); replace it with the file") from e


def _existing_spelling(path: Path, key: str) -> Path:
    """`path` as written (NFC), else its NFD spelling (macOS copies), else `path` (missing either way)."""
    if os.path.lexists(path):
        return path
    decomposed = Path(unicodedata.normalize("NFD", str(path)))
    if decomposed != path and os.path.lexists(decomposed):
        _note_decomposed(str(decomposed), key)
        return decomposed
    return path


@functools.cache
def _note_decomposed(path: str, key: str) -> None:
    """Said once per file and process, however often the file is read (hashed, then decoded)."""
    log.info("image %s: found under its NFD (decomposed Unicode) file name", key)


def check_image_keys(root: str | Path, keys) -> None:
    """Validate every key up front (cheap, no file access) so bad input stops before any work."""
    if not Path(root).is_dir():
        raise BadInputError(f"{root}: images folder not found; check the --images path")
    for key in keys:
        lexical_image_path(root, key)


MISSING_FILE = ""  # sha256 recorded for a file that does not exist


def sha256_or_missing(root: Path, key: str) -> str:
    """The sha256 of image `key` under `root`, or MISSING_FILE when it cannot be read (embed's plan)."""
    try:
        return file_sha256(resolve_image_path(root, key))
    except (FileNotFoundError, IsADirectoryError, PermissionError, ImageLoadError):
        return MISSING_FILE


def file_sha256(path: Path) -> str:
    return files_sha256([path])


def files_sha256(paths) -> str:
    """sha256 hex digest of the files' contents, read in order, block by block."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def open_image(root: str | Path, key: str, min_side: int | None = None) -> Image.Image:
    """Resolve an image key under `root` and decode it (reduced when `min_side` is given)."""
    return load_rgb(resolve_image_path(root, key), key, min_side)


def load_rgb(path: Path, key: str = "", min_side: int | None = None) -> Image.Image:
    """Decode an image: EXIF orientation applied, first frame only, any mode converted to RGB.

    With `min_side`, an image whose shorter side is larger is decoded reduced so that side is about
    `min_side` (see `decode_reduced`); otherwise it is decoded at full size.
    """
    key = key or str(path)
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError(key, "empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.seek(0)  # animations: the first frame
                return decode_reduced(image, min_side) if min_side else _decode(image)
    except FileNotFoundError as e:
        raise ImageLoadError(key, "file not found") from e
    except IsADirectoryError as e:
        raise ImageLoadError(key, "is a directory, not an image") from e
    except PermissionError as e:
        raise ImageLoadError(key, "permission denied: the file cannot be read; check its permissions") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(key, _unrecognised_reason(path)) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(key, f"too many pixels (decompression bomb guard, limit {MAX_IMAGE_PIXELS})") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(key, f"corrupt or truncated image ({type(e).__name__}: {e})") from e


def _decode(image: Image.Image) -> Image.Image:
    image.load()
    return to_rgb(ImageOps.exif_transpose(image))


def decode_reduced(image: Image.Image, min_side: int) -> Image.Image:
    """Decode an opened image so its shorter side is at most about `min_side` (never upscaled).

    JPEGs are asked for a DCT-scaled decode (`draft`: 1/2, 1/4 or 1/8 size) at the smallest scale
    that still covers the model's input side (`min_side / REDUCE_FACTOR`), so the full-size pixels
    never exist and the processor's own resize does the rest (a 1080-pixel photo decodes at 270
    pixels for a 224-pixel model, about 3x faster; features move by a cosine distance of ~3e-6,
    benchmarks/decode.py). Other formats decode at full size, one image at a time, and like a JPEG
    still above `min_side` after its DCT scaling are resized at once, so only a reduced copy waits in
    a batch.
    """
    if image.format == "JPEG":
        scale = math.ceil(min_side / REDUCE_FACTOR) / min(image.size)
        if scale < 1:
            image.draft(None, (math.ceil(image.size[0] * scale), math.ceil(image.size[1] * scale)))
    rgb = _decode(image)
    scale = min_side / min(rgb.size)
    if scale >= 1:
        return rgb
    size = (max(1, round(rgb.size[0] * scale)), max(1, round(rgb.size[1] * scale)))
    return rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def reduced_side(image_processor) -> int | None:
    """The shorter side to decode images to for `image_processor`: REDUCE_FACTOR x its input side."""
    sizes = [getattr(image_processor, "crop_size", None), getattr(image_processor, "size", None)]
    sides = [_size_value(size, name) for size in sizes for name in ("shortest_edge", "height", "width")]
    sides = [side for side in sides if side]
    return REDUCE_FACTOR * max(sides) if sides else None


def _size_value(size, name: str) -> int | None:
    """One entry of a processor's size: a dict in older transformers, a SizeDict object in newer ones."""
    value = size.get(name) if isinstance(size, dict) else getattr(size, name, None)
    return value if isinstance(value, int) else None


def _unrecognised_reason(path: Path) -> str:
    if path.suffix.lower() in (".heic", ".heif") or _is_heif(path):
        return "HEIC/HEIF images are not supported; convert them to JPEG or PNG"
    return "not an image (unrecognised format)"


def _is_heif(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode; transparency is composited on white (a transparent PNG reads as on a page)."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _high_depth_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale to 8 bits (a plain convert clips everything above 255 to white).

    16-bit images have a known range and scale by 1/257; 32-bit and float ones already in 0-255 are
    kept, other ranges are min-max scaled.
    """
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if image.mode.startswith("I;16"):
        scaled = values / 257.0
    elif low >= 0 and high <= 255:
        scaled = values
    else:
        scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low) * 255.0
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L").convert("RGB")
