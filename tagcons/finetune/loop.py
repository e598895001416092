"""Optimiser, schedule, precision and the training step; evaluation that gathers across ranks.

`Trainer.micro_step` + `Trainer.update` are the training step that runs, benchmarks included:
forward under autocast, loss / grad_accum, backward (no DDP all-reduce until the last micro
step), then unscale, clip, optimiser and schedule step.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from tagcons.distributed import DistContext
from tagcons.finetune.config import FinetuneConfig
from tagcons.finetune.model import FinetuneModel, param_groups
from tagcons.labels import DEFAULT_SCALE


@dataclass
class Precision:
    """fp32 master weights always; autocast to bf16, or fp16 with loss scaling, where it pays."""

    name: str
    device_type: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def make_precision(requested: str, device: torch.device) -> Precision:
    """auto: bf16 on CUDA that supports it, fp16 + GradScaler on other CUDA, fp32 elsewhere."""
    name = requested
    if requested == "auto":
        name = "fp32" if device.type != "cuda" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16" and device.type == "cuda")
    return Precision(name, device.type, dtype, scaler)


def make_optimizer(model: FinetuneModel, config: FinetuneConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, config.lr, config.head_lr, config.weight_decay, config.layer_decay)
    if config.optimizer == "adam":  # the study's Adam: weight decay as an L2 term in the gradient
        return torch.optim.Adam(groups)
    return torch.optim.AdamW(groups)


def make_schedule(optimizer, config: FinetuneConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per optimiser step: linear warm-up then cosine to 0, or StepLR's gamma every step_size epochs."""
    total = max(1, steps_per_epoch * config.epochs)
    warmup = int(config.warmup * total)

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    def stepped(step: int) -> float:
        return config.gamma ** ((step // steps_per_epoch) // config.step_size)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine if config.schedule == "cosine" else stepped)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class Trainer:
    model: nn.Module  # FinetuneModel, or DDP around one
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    loss_fn: nn.Module
    grad_accum: int = 1
    grad_clip: float = 0.0
    device: torch.device = torch.device("cpu")
    pending: int = field(default=0)  # micro steps since the last update

    def micro_step(self, batch: dict) -> float:
        """Forward + backward of one batch; gradients accumulate until `update`."""
        batch = to_device(batch, self.device)
        sync = self.pending + 1 >= self.grad_accum
        no_sync = self.model.no_sync if isinstance(self.model, DistributedDataParallel) and not sync else None
        with no_sync() if no_sync else contextlib.nullcontext(), self.precision.autocast():
            logits = self.model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
            loss = self.loss_fn(logits.float(), batch["labels"])
        self.precision.scaler.scale(loss / self.grad_accum).backward()
        self.pending += 1
        return float(loss.detach())

    def update(self) -> None:
        scaler = self.precision.scaler
        if self.grad_clip > 0:
            scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.pending = 0

    def train_epoch(self, loader, epoch: int, dist: DistContext, progress: bool, on_batch=None) -> dict:
        """One pass; returns mean training loss over this rank's batches (averaged over ranks) and samples/s."""
        self.model.train()
        loader.sampler.set_epoch(epoch)
        total, count, started = 0.0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}", disable=not (progress and dist.is_main), leave=False)
        for i, batch in enumerate(bar):
            if on_batch:
                on_batch("fit", batch["rows"].numpy())
            loss = self.micro_step(batch)
            total, count = total + loss * len(batch["labels"]), count + len(batch["labels"])
            if self.pending >= self.grad_accum or i == len(loader) - 1:
                self.update()
            bar.set_postfix(loss=f"{total / count:.4f}", samples_s=f"{count / (time.perf_counter() - started):.1f}")
        parts = dist.gather((total, count))
        seconds = time.perf_counter() - started
        n = sum(c for _, c in parts)
        return {"train_loss": sum(t for t, _ in parts) / max(1, n), "samples_per_s": n / seconds}


@torch.no_grad()
def collect_outputs(
    model: nn.Module,
    loader,
    precision: Precision,
    device: torch.device,
    dist: DistContext,
    side: str,
    on_batch=None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, logits float32) for every row of the loader, gathered from all ranks and sorted by row."""
    model.eval()
    rows, logits = [], []
    for batch in tqdm(loader, desc=side, disable=not (progress and dist.is_main), leave=False):
        if on_batch:
            on_batch(side, batch["rows"].numpy())
        batch = to_device(batch, device)
        with precision.autocast():
            out = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        rows.append(batch["rows"].cpu().numpy())
        logits.append(out.float().cpu().numpy())
    width = logits[0].shape[1] if logits else _n_classes(model)
    mine = (
        np.concatenate(rows) if rows else np.zeros(0, np.int64),
        np.concatenate(logits) if logits else np.zeros((0, width), np.float32),
    )
    gathered = dist.gather(mine)
    all_rows = np.concatenate([r for r, _ in gathered])
    all_logits = np.concatenate([x for _, x in gathered])
    order = np.argsort(all_rows, kind="stable")
    return all_rows[order], all_logits[order]


def _n_classes(model: nn.Module) -> int:
    """Output width of a fine-tuning model (or the DDP wrapper around one) when a rank saw no rows."""
    head = getattr(getattr(model, "module", model), "head", None)
    return int(getattr(head, "n_classes", DEFAULT_SCALE.n_classes))
