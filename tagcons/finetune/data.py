"""Pairs to batches: safe image loading and the backbone's processor in DataLoader workers.

Texts are tokenised once for the whole table (`TokenTable`); a batch picks its rows and trims the
padding to its longest text. Images go through the image batch pipeline `embed` uses
(`tagcons.data.image_batches`: reduced decode, one processor call per batch) inside `Collate`, which
runs in the workers, so the training loop never calls the processor per sample. Images that cannot
be decoded are found once, before training (`exclude_unloadable`), instead of failing mid-epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from tagcons.data.image_batches import ImageFiles, ImagePipeline
from tagcons.data.images import ImageLoadError
from tagcons.data.pairs import PairTable
from tagcons.errors import BadInputError

log = logging.getLogger(__name__)
SHOWN_FAILURES = 5


@dataclass
class TokenTable:
    """Token ids of every unique text under each template; `index` maps a pair row to its text.

    Tensors are [templates, unique texts, tokens]. With padding to the longest (CLIP), a batch is
    trimmed to its longest text; with the SigLIP family's max-length rule it keeps the full width.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    index: np.ndarray
    trim: bool = True

    @classmethod
    def build(cls, texts: np.ndarray, backbone, templates=("{}",)) -> TokenTable:
        unique, index = np.unique(texts.astype(str), return_inverse=True)
        per_template = [backbone.tokenize([template.format(u) for u in unique]) for template in templates]
        width = max(tokens["input_ids"].shape[1] for tokens in per_template)
        pad_id = backbone.tokenizer.pad_token_id or 0
        ids = torch.stack([_widen(t["input_ids"], width, pad_id) for t in per_template])
        masks = torch.stack([_widen(_mask_of(t), width, 0) for t in per_template])
        return cls(ids, masks, index, trim=not backbone.family.pad_to_max_length)

    def rows(self, pair_rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """[batch, tokens] for one template, [templates, batch, tokens] for an ensemble."""
        at = torch.as_tensor(self.index[pair_rows])
        ids, mask = self.input_ids[:, at], self.attention_mask[:, at]
        if self.trim:
            width = int(mask.sum(dim=2).max())
            ids, mask = ids[..., :width], mask[..., :width]
        return (ids[0], mask[0]) if len(ids) == 1 else (ids, mask)


def _mask_of(tokens: dict) -> torch.Tensor:
    """The tokenizer's attention mask; all ones where it makes none (same features as no mask)."""
    return tokens.get("attention_mask", torch.ones_like(tokens["input_ids"]))


def _widen(tensor: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=value)


def exclude_unloadable(table: PairTable, images_root: str | Path, threads: int = 8) -> tuple[PairTable, dict[str, str]]:
    """Decode every unique image once (at full size: no processor yet); drop the pairs of those that
    fail and return why they failed."""
    keys = table.unique_images()
    failed = ImageFiles(images_root, keys).failures(threads)
    shown = "; ".join(f"{k}: {r}" for k, r in list(failed.items())[:SHOWN_FAILURES])
    if failed:
        log.warning("%d of %d images cannot be loaded; their pairs are left out (%s)", len(failed), len(keys), shown)
    keep = ~table.frame["image"].isin(list(failed)).to_numpy()
    if not keep.any():
        raise BadInputError(
            f"{table.source}: none of the {len(keys)} images under {images_root} could be loaded "
            f"({shown}); check the --images folder"
        )
    return table.subset(np.flatnonzero(keep)), failed


class PairRows(Dataset):
    """Yields row numbers only; the collate function does the work for the whole batch."""

    def __init__(self, rows: np.ndarray):
        self.rows = np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int:
        return int(self.rows[i])


class Collate:
    """Row numbers -> pixel_values, input_ids, attention_mask, labels, rows (picklable for workers)."""

    def __init__(self, table: PairTable, images_root: str | Path, image_processor, tokens: TokenTable):
        self.images = ImagePipeline(images_root, table.images, image_processor)  # indexed by pair row
        self.labels, self.scale = table.labels, table.scale
        self.tokens = tokens

    def __call__(self, rows: list[int]) -> dict:
        rows = np.asarray(rows)
        pixels = self._pixels(rows)
        input_ids, attention_mask = self.tokens.rows(rows)
        labels = torch.as_tensor(self.scale.column_of(self.labels[rows]).astype(np.int64))  # score -> class index
        return {
            "pixel_values": pixels,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "rows": torch.as_tensor(rows),
        }

    def _pixels(self, rows: np.ndarray) -> torch.Tensor:
        """Every row's image; one that fails now (it loaded before training) stops the run."""
        _, pixels, failed = self.images(rows)
        if failed:
            index, reason = failed[0]
            raise ImageLoadError(self.images.files.keys[index], reason)
        return pixels


class ShardSampler(Sampler):
    """Every world_size-th row for this rank, no padding: evaluation sees each row exactly once."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class LoaderSettings:
    batch_size: int
    workers: int
    seed: int
    rank: int = 0
    world_size: int = 1
    pin_memory: bool = False


def train_loader(rows: np.ndarray, collate: Collate, settings: LoaderSettings) -> DataLoader:
    """Shuffled batches; under DDP a DistributedSampler (call `set_epoch`) gives each rank its share."""
    dataset = PairRows(rows)
    sampler = DistributedSampler(
        dataset, settings.world_size, settings.rank, shuffle=True, seed=settings.seed, drop_last=False
    )
    return _loader(dataset, sampler, collate, settings)


def eval_loader(rows: np.ndarray, collate: Collate, settings: LoaderSettings) -> DataLoader:
    dataset = PairRows(rows)
    return _loader(dataset, ShardSampler(len(dataset), settings.rank, settings.world_size), collate, settings)


def _loader(dataset: Dataset, sampler: Sampler, collate: Collate, settings: LoaderSettings) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=settings.workers,
        pin_memory=settings.pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if settings.workers else None,
    )
