"""Gathering across ranks for DDP fine-tuning, on top of `tagcons.distributed`'s torchrun set-up.

The same code runs single process (world_size 1, every collective a no-op) and under torchrun
(NCCL on CUDA, gloo on CPU); only rank 0 writes files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tagcons import distributed
from tagcons.embed.backbones import resolve_device

log = logging.getLogger(__name__)


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    context: distributed.DistContext | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def gather(self, value) -> list:
        """Every rank's picklable `value`, in rank order, on every rank."""
        if not self.active:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value):
        """Rank 0's picklable `value` on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.context is not None:
            self.context.close()


def start(requested_device: str) -> Dist:
    """Join the torchrun group if there is one; this rank's device (its own GPU under DDP)."""
    context = distributed.setup(requested_device)
    device = context.device or resolve_device(requested_device)
    return Dist(context.rank, context.world_size, device, context)
