"""torch.distributed set-up shared by `embed` (one shard per rank) and `finetune` (DDP).

A command started by `torchrun` sees WORLD_SIZE/RANK/LOCAL_RANK in its environment; the same command
started plainly runs as a single process. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # the rank's device when distributed, else None (caller decides)
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        return (self.rank, self.world_size) if self.world_size > 1 else None

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def sum_counts(self, counts: list[int]) -> list[int]:
        """Totals over all ranks (each rank passes its own counts)."""
        if self.world_size == 1:
            return counts
        tensor = torch.tensor(counts, dtype=torch.int64, device=self.device or "cpu")
        dist.all_reduce(tensor)
        return [int(v) for v in tensor.tolist()]

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(device_request: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun; a plain run gets a single-process context."""
    if not launched_by_torchrun():
        return DistContext()
    use_cuda = torch.cuda.is_available() and device_request != "cpu"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = None
    if use_cuda:  # several ranks may share one card (a smoke test), hence the modulo
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    context = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)
    log.info("distributed: rank %d of %d on %s", context.rank, context.world_size, device or "cpu")
    return context
