"""`embed --decode gpu`: workers read file bytes only; JPEGs are decoded and preprocessed on the device.

The main process hands each batch of JPEG bytes to a batch decoder (in production
`torchvision.io.decode_jpeg(list_of_tensors, device="cuda")`, imported only here and only then),
then resizes, centre-crops, rescales and normalises on the device with plain torch ops as the
image processor specifies. Anything that is not a JPEG, or that the decoder rejects, goes through
the CPU path (`open_image` + the processor) one image at a time, so a failure is recorded with the
same reason as `--decode cpu` and nothing is lost. Rows keep the batch's key order.

The decoder is pluggable (`BatchDecoder`): the main suite injects a PIL-based stand-in with the same
signature to check batching, fallback and ordering without torchvision; `make test-decode` runs the
same tests with torchvision's own `decode_jpeg` on CPU tensors (`torchvision_decoder`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from tagcons.data.images import ImageLoadError, open_image, resolve_image_path
from tagcons.errors import BadInputError

log = logging.getLogger(__name__)
JPEG_MAGIC = b"\xff\xd8\xff"
# (list of 1-D uint8 byte tensors, device) -> list of uint8 RGB tensors [3, H, W] on the device, EXIF
# orientation applied; raises if any image of the list cannot be decoded.
BatchDecoder = Callable[[list[torch.Tensor], torch.device], list[torch.Tensor]]
CHANNELS_LAST = torch.channels_last  # the patch convolution reads NHWC faster on tensor cores
RESAMPLE_MODES = {2: "bilinear", 3: "bicubic"}  # PIL resample codes the processors use


def load_batch_decoder(device: torch.device) -> BatchDecoder:
    """torchvision's batched nvJPEG decode; BadInputError (exit 2) without CUDA or torchvision."""
    if device.type != "cuda" or not torch.cuda.is_available():
        raise BadInputError(f"--decode gpu needs a CUDA device (got {device}); use --decode cpu")
    return torchvision_decoder()


def torchvision_decoder() -> BatchDecoder:
    """`torchvision.io.decode_jpeg` on the batch's device: CUDA for users (`load_batch_decoder`), CPU
    tensors in the tests (`make test-decode`), which run the same code short of nvJPEG itself."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as e:  # ImportError, or a torchvision built for another torch (RuntimeError)
        raise BadInputError(
            f"--decode gpu needs torchvision built for this torch ({type(e).__name__}: {e}); "
            "install the matching torchvision or use --decode cpu"
        ) from e

    def decode(datas: list[torch.Tensor], target: torch.device) -> list[torch.Tensor]:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec, once per call
            warnings.filterwarnings(
                "ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning
            )
            return decode_jpeg(datas, mode=ImageReadMode.RGB, device=target, apply_exif_orientation=True)

    return decode


class FileBytes(Dataset):
    """(index, file bytes or None) by key: workers only read; None sends the image to the CPU path."""

    def __init__(self, root: Path, keys: list[str]):
        self.root, self.keys = Path(root), keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int):
        try:
            return index, resolve_image_path(self.root, self.keys[index]).read_bytes()
        except (OSError, ImageLoadError):  # the CPU path reports it with today's reason
            return index, None


def _as_list(batch):
    return batch


@dataclass
class DevicePreprocess:
    """The image processor's resize / centre crop / rescale / normalise as torch ops on a device."""

    size: dict
    crop: tuple[int, int] | None
    resample: str
    rescale: float | None
    mean: torch.Tensor | None
    std: torch.Tensor | None

    @classmethod
    def from_processor(cls, processor, device: torch.device) -> DevicePreprocess:
        size = _plain(getattr(processor, "size", None)) if getattr(processor, "do_resize", True) else {}
        crop = _plain(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else {}
        resample = RESAMPLE_MODES.get(int(getattr(processor, "resample", 3)))
        if resample is None or (size and not (size.get("shortest_edge") or (size.get("height") and size.get("width")))):
            raise BadInputError(f"{type(processor).__name__}: its resize is not supported by --decode gpu; use cpu")
        return cls(
            size=size,
            crop=(crop["height"], crop["width"]) if crop else None,
            resample=resample,
            rescale=float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else None,
            mean=_channel(processor, "image_mean", device),
            std=_channel(processor, "image_std", device),
        )

    def __call__(self, images: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        batch = torch.stack([self._crop(self._resize(image)) for image in images]).float()
        if self.rescale is not None:
            batch = batch * self.rescale
        if self.mean is not None:
            batch = (batch - self.mean) / self.std
        return batch.to(dtype)

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        """Float 8-bit levels at the processor's size (one dtype for every image of the batch)."""
        height, width = image.shape[-2:]
        target = _resized_shape(height, width, self.size) if self.size else (height, width)
        if target == (height, width):
            return image.float()
        resized = torch.nn.functional.interpolate(
            image[None].float(), size=target, mode=self.resample, antialias=True, align_corners=False
        )[0]
        return resized.round_().clamp_(0, 255)  # the CPU processor resizes 8-bit images: keep 8-bit levels

    def _crop(self, image: torch.Tensor) -> torch.Tensor:
        if self.crop is None:
            return image
        (height, width), (crop_h, crop_w) = image.shape[-2:], self.crop
        if height < crop_h or width < crop_w:
            pad = (max(0, (crop_w - width + 1) // 2),) * 2 + (max(0, (crop_h - height + 1) // 2),) * 2
            image = torch.nn.functional.pad(image, pad)
            height, width = image.shape[-2:]
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        return image[:, top : top + crop_h, left : left + crop_w]


def _plain(size) -> dict:
    """A processor's size as a dict of set entries (dict in older transformers, SizeDict in newer)."""
    if size is None:
        return {}
    items = size.items() if isinstance(size, dict) else vars(size).items()
    return {name: value for name, value in items if isinstance(value, int)}


def _channel(processor, name: str, device: torch.device) -> torch.Tensor | None:
    if not getattr(processor, "do_normalize", True):
        return None
    return torch.tensor(getattr(processor, name), dtype=torch.float32, device=device).view(1, -1, 1, 1)


def _resized_shape(height: int, width: int, size: dict) -> tuple[int, int]:
    """The processor's output size: shortest edge to `shortest_edge` (long side truncated), else H x W."""
    if not size.get("shortest_edge"):
        return size["height"], size["width"]
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


@dataclass
class DeviceBatches:
    """Yields (indices, pixel_values on the device, failed) per batch, as the CPU loader does."""

    root: Path
    keys: list[str]
    decoder: BatchDecoder
    preprocess: DevicePreprocess
    cpu_preprocess: Callable  # extractor.BatchPreprocessor: today's path for the fallback images
    min_side: int | None
    device: torch.device
    dtype: torch.dtype
    batch_size: int
    workers: int

    def __iter__(self) -> Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]]:
        loader = DataLoader(
            FileBytes(self.root, self.keys),
            batch_size=self.batch_size,
            num_workers=self.workers,
            collate_fn=_as_list,
            persistent_workers=False,
        )
        for batch in loader:
            yield self.decode_batch(batch)

    def decode_batch(self, batch: list[tuple[int, bytes | None]]):
        jpegs = [(index, data) for index, data in batch if data is not None and data.startswith(JPEG_MAGIC)]
        decoded = self._decode(jpegs)
        fallback = [index for index, _ in batch if index not in decoded]
        cpu_indices, cpu_pixels, failed = self._cpu(fallback)
        on_device = {index: pixels for index, pixels in zip(cpu_indices, self._to_device(cpu_pixels))}
        if decoded:
            indices = list(decoded)
            on_device.update(zip(indices, self.preprocess([decoded[i] for i in indices], self.dtype)))
        order = [index for index, _ in batch if index in on_device]
        if not order:
            return order, None, failed
        return order, torch.stack([on_device[index] for index in order]).contiguous(memory_format=CHANNELS_LAST), failed

    def _decode(self, jpegs: list[tuple[int, bytes]]) -> dict[int, torch.Tensor]:
        """index -> decoded image; the whole list at once, else one by one to isolate the bad file."""
        if not jpegs:
            return {}
        tensors = [self._byte_tensor(data) for _, data in jpegs]
        try:
            return dict(zip([index for index, _ in jpegs], self.decoder(tensors, self.device)))
        except Exception as e:  # any decoder error: retry alone, then the CPU path decides
            log.debug("batch JPEG decode failed (%s); decoding image by image", e)
        decoded = {}
        for (index, _), tensor in zip(jpegs, tensors):
            try:
                decoded[index] = self.decoder([tensor], self.device)[0]
            except Exception as e:  # the CPU path decides and records the reason
                log.info("image %s: device decode failed (%s); using the CPU path", self.keys[index], e)
        return decoded

    def _byte_tensor(self, data: bytes) -> torch.Tensor:
        tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return tensor.pin_memory() if self.device.type == "cuda" else tensor

    def _cpu(self, indices: list[int]):
        """Today's path for the images the device did not decode: same pixels, same failure reasons."""
        items = []
        for index in indices:
            try:
                items.append((index, open_image(self.root, self.keys[index], self.min_side), None))
            except ImageLoadError as e:
                items.append((index, None, e.reason))
        if not items:
            return [], None, []
        if any(image is not None for _, image, _ in items):
            log.info(
                "%d image(s) of the batch went through the CPU path", sum(image is not None for _, image, _ in items)
            )
        return self.cpu_preprocess(items)

    def _to_device(self, pixels: torch.Tensor | None) -> list[torch.Tensor]:
        if pixels is None:
            return []
        if self.device.type == "cuda":
            pixels = pixels.pin_memory()
        return list(pixels.to(self.device, self.dtype, non_blocking=True))
