"""torch.distributed set-up and collectives shared by `embed` (one shard per rank) and `finetune` (DDP).

A command started by `torchrun` sees WORLD_SIZE/RANK/LOCAL_RANK in its environment; the same command
started plainly runs as a single process, where every collective is a no-op. NCCL on CUDA, gloo on
CPU; only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from tagcons.runtime import resolve_device

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Any = None  # torch.device: the rank's own device under torchrun, else the one asked for
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def shard(self) -> tuple[int, int] | None:
        return (self.rank, self.world_size) if self.active else None

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def sum_counts(self, counts: list[int]) -> list[int]:
        """Totals over all ranks (each rank passes its own counts)."""
        if not self.active:
            return counts
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(counts, dtype=torch.int64, device=self.device or "cpu")
        dist.all_reduce(tensor)
        return [int(v) for v in tensor.tolist()]

    def gather(self, value) -> list:
        """Every rank's picklable `value`, in rank order, on every rank."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value):
        """Rank 0's picklable `value` on every rank."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if not self.owns_group:  # a single process (or a group someone else opened): nothing to tear down
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(device_request: str = "auto", resolve: bool = True) -> DistContext:
    """Join the process group when launched by torchrun (else a single-process context); this rank's device.

    ``resolve=False``: a single process leaves the device None (resolved by the caller when it needs one),
    so a command that may find nothing to do never imports torch.
    """
    if not launched_by_torchrun():
        return DistContext(device=resolve_device(device_request) if resolve else None)
    import torch
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and device_request != "cpu"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if use_cuda:  # several ranks may share one card (a smoke test), hence the modulo
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    context = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)
    log.info("distributed: rank %d of %d on %s", context.rank, context.world_size, device)
    return context
