"""What the passes of one `tagcons embed` run share: the job (model, writer, device) and the summary.

`extractor.py` plans and starts the job; `image_encoding.py` and `text_encoding.py` fill the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from tagcons.cache import CacheWriter
    from tagcons.configs import EmbedConfig
    from tagcons.embed.backbones import Backbone

FAILED_BEFORE = "failed in an earlier run; the file has not changed since"


@dataclass
class EmbedSummary:
    cache: Path
    images_new: int = 0
    images_cached: int = 0
    images_failed: int = 0
    texts_new: int = 0
    texts_cached: int = 0
    texts_truncated: int = 0  # of the new texts, how many the tokenizer's limit cut
    truncated_example: str | None = None
    image_seconds: float = 0.0
    text_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    shard: tuple[int, int] | None = None
    rank: int = 0  # under torchrun the counts are totals over all ranks; only rank 0 reports them

    COUNTS = ("images_new", "images_cached", "images_failed", "texts_new", "texts_cached")

    @property
    def images_per_second(self) -> float:
        return self.images_new / self.image_seconds if self.image_seconds else 0.0

    @property
    def texts_per_second(self) -> float:
        return self.texts_new / self.text_seconds if self.text_seconds else 0.0

    def record_failed_before(self, keys: list[str]) -> None:
        """Images that failed in an earlier run and are unchanged: counted and reported, not retried."""
        self.images_failed = len(keys)
        self.failures = {key: FAILED_BEFORE for key in keys}


@dataclass
class EncodeJob:
    """What one process needs to encode its share."""

    config: EmbedConfig
    backbone: Backbone
    writer: CacheWriter
    shard: tuple[int, int] | None
    device: torch.device
    dtype: torch.dtype


@dataclass
class ImagePlan:
    """Which images of this run's share to encode, and which are settled already (planned by the extractor,
    encoded by image_encoding: it lives here, below both)."""

    todo: list[str]
    hashes: list[str]
    cached: int
    failed_before: list[str]  # failed in an earlier run and unchanged (or still missing) since: not retried
