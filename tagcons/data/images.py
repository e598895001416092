"""Safe image loading: paths stay under the images root, every mode becomes RGB, failures are values.

A missing, empty, truncated, corrupt or non-image file raises `ImageLoadError` with a short reason;
callers record it per item and go on. Paths that are absolute or escape the root are the user's
mistake (`BadInputError`), found before any work starts.
"""

from __future__ import annotations

import hashlib
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


class ImageLoadError(Exception):
    """One image could not be loaded; `reason` is short enough for the cache's failed group."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def resolve_image_path(root: str | Path, key: str) -> Path:
    """The file for an image key, refusing absolute paths and paths that leave `root`."""
    relative = PurePosixPath(key.replace("\\", "/"))
    if relative.is_absolute() or Path(key).is_absolute() or (len(key) > 1 and key[1] == ":"):
        raise BadInputError(f"image path '{key}' is absolute; image paths must be relative to --images")
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise BadInputError(f"image path '{key}' escapes the images folder {root}; remove '..' from the pairs file")
    return candidate


def check_image_keys(root: str | Path, keys) -> None:
    """Validate every key up front (cheap, no file access) so bad input stops before any work."""
    if not Path(root).is_dir():
        raise BadInputError(f"{root}: images folder not found; check the --images path")
    for key in keys:
        resolve_image_path(root, key)


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


def load_rgb(path: Path, key: str = "") -> Image.Image:
    """Decode an image fully: EXIF orientation applied, first frame only, any mode converted to RGB."""
    key = key or str(path)
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError(key, "empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.seek(0)  # animations: the first frame
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except FileNotFoundError as e:
        raise ImageLoadError(key, "file not found") from e
    except IsADirectoryError as e:
        raise ImageLoadError(key, "is a directory, not an image") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(key, "not an image (unrecognised format)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(key, f"too many pixels (decompression bomb guard, limit {MAX_IMAGE_PIXELS})") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(key, f"corrupt or truncated image ({type(e).__name__}: {e})") from e


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
