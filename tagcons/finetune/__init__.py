"""End-to-end fine-tuning: backbone + the study's head, trained on images and texts.

Library entry point (the CLI wraps it): `run_finetune(FinetuneConfig(...)) -> FinetuneResult`.
Runs single process, or unchanged under `torchrun --nproc_per_node N` (DDP).
"""

from tagcons.finetune.config import ALL_LAYERS, RECIPES, FinetuneConfig, resolve
from tagcons.finetune.run import FinetuneResult, Hooks, run_finetune

__all__ = ["ALL_LAYERS", "RECIPES", "FinetuneConfig", "FinetuneResult", "Hooks", "resolve", "run_finetune"]
