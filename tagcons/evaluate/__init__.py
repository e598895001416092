"""Metrics, plots, run directories and run comparison, shared by heads and finetune."""

from tagcons.evaluate.metrics import compute_metrics, majority_baseline, pooled_and_per_fold
from tagcons.evaluate.rundir import predictions_frame, versions, write_config, write_evaluation

__all__ = [
    "compute_metrics",
    "majority_baseline",
    "pooled_and_per_fold",
    "predictions_frame",
    "versions",
    "write_config",
    "write_evaluation",
]
