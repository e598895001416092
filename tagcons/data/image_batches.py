"""One image batch pipeline for `embed` and `finetune`: reader -> decoder -> the backbone's processor.

`ImageFiles` reads and decodes images by index (a map-style dataset: DataLoader workers call it), so
the model never sees a path; a file that cannot be decoded yields its reason instead of an image.
`BatchPreprocessor` turns a batch of those items into one processor call and keeps the failures
beside the tensor, so one bad file never breaks a batch and is never lost. `ImagePipeline` joins
the two for a backbone's processor: images are decoded reduced (JPEG DCT scaling) to a few times
the model's input side (`tagcons.data.images.reduced_side`).

Every batch is `(indices, pixel_values or None, failed)`: the indices of the images that made it, in
the order asked, their pixels as one float32 tensor, and `(index, reason)` for the rest.
torch is imported only where a tensor is made.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tagcons.data.images import ImageLoadError, open_image, reduced_side

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

log = logging.getLogger(__name__)
Item = tuple[int, "Image.Image | None", "str | None"]  # (index, decoded RGB image, failure reason)
Failed = list[tuple[int, str]]


def read_image(root: str | Path, key: str, min_side: int | None = None) -> tuple[Image.Image | None, str | None]:
    """(image, None), or (None, the short reason it could not be loaded)."""
    try:
        return open_image(root, key, min_side), None
    except ImageLoadError as e:
        return None, e.reason


class ImageFiles:
    """Decoded RGB images by index into `keys`; a file that cannot be decoded yields its reason instead.

    With `min_side`, large images are decoded reduced (`tagcons.data.images.decode_reduced`).
    """

    def __init__(self, root: str | Path, keys, min_side: int | None = None):
        self.root, self.keys, self.min_side = Path(root), keys, min_side

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Item:
        return (index, *read_image(self.root, self.keys[index], self.min_side))

    def read(self, indices) -> list[Item]:
        """The items of `indices`, in order; a key that several indices share is decoded once."""
        decoded = {}
        for index in indices:
            key = self.keys[index]
            if key not in decoded:
                decoded[key] = read_image(self.root, key, self.min_side)
        return [(int(index), *decoded[self.keys[index]]) for index in indices]

    def failures(self, threads: int = 8) -> dict[str, str]:
        """Decode every distinct key once (decoding releases the GIL); key -> reason for those that fail."""
        keys = list(dict.fromkeys(self.keys))
        with ThreadPoolExecutor(max_workers=threads) as pool:
            reasons = list(pool.map(self._reason, keys))  # reasons only: no decoded image is kept
        return {key: reason for key, reason in zip(keys, reasons) if reason is not None}

    def _reason(self, key: str) -> str | None:
        return read_image(self.root, key, self.min_side)[1]


class BatchPreprocessor:
    """collate_fn: one processor call per batch, in the worker; failures travel beside the tensor."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, batch: list[Item]) -> tuple[list[int], torch.Tensor | None, Failed]:
        failed = [(index, reason) for index, image, reason in batch if image is None]
        loaded = [(index, image) for index, image, _ in batch if image is not None]
        try:
            pixels = self._pixels([image for _, image in loaded]) if loaded else None
        except (ValueError, OSError) as e:  # one odd image (e.g. 1x1) breaks the batch: isolate it
            return self._one_by_one(loaded, failed, e)
        return [index for index, _ in loaded], pixels, failed

    def _pixels(self, images) -> torch.Tensor:
        import torch

        return torch.as_tensor(np.asarray(self.image_processor(images=images, return_tensors="np")["pixel_values"]))

    def _one_by_one(self, loaded, failed: Failed, batch_error: Exception):
        import torch

        indices, tensors = [], []
        for index, image in loaded:
            try:
                tensors.append(self._pixels([image]))
                indices.append(index)
            except (ValueError, OSError) as e:
                failed.append((index, f"preprocessing failed ({type(e).__name__}: {e})"))
        log.debug("batch preprocessing failed (%s); retried image by image", batch_error)
        return indices, (torch.cat(tensors) if tensors else None), failed


class ImagePipeline:
    """Reader -> preprocessor for one backbone's image processor, over the images named by `keys`."""

    def __init__(self, root: str | Path, keys, image_processor):
        self.files = ImageFiles(root, keys, reduced_side(image_processor))
        self.preprocess = BatchPreprocessor(image_processor)

    def __call__(self, indices) -> tuple[list[int], torch.Tensor | None, Failed]:
        """One batch from index numbers (e.g. pair rows, several may share an image)."""
        return self.preprocess(self.files.read(indices))

    def loader(self, batch_size: int, workers: int, pin_memory: bool = False) -> DataLoader:
        """Every image in order, `batch_size` at a time, decoded and preprocessed in `workers` processes."""
        from torch.utils.data import DataLoader

        return DataLoader(
            self.files,
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=self.preprocess,
            pin_memory=pin_memory,
            persistent_workers=False,
        )
