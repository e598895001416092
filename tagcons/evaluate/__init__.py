"""Metrics, plots, run directories and run comparison, shared by heads and finetune.

Names load on first use (PEP 562), so a light submodule (e.g. `provenance`, which a no-op embed
reads) does not pull in scikit-learn and scipy through `metrics`.
"""

from tagcons.lazy import lazy_exports

_EXPORTS = {
    "compute_metrics": "tagcons.evaluate.metrics",
    "majority_baseline": "tagcons.evaluate.metrics",
    "pooled_and_per_fold": "tagcons.evaluate.metrics",
    "predictions_frame": "tagcons.evaluate.rundir",
    "versions": "tagcons.evaluate.rundir",
    "write_config": "tagcons.evaluate.rundir",
    "write_evaluation": "tagcons.evaluate.rundir",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
