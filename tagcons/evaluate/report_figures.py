"""The report's figures as data URIs: true vs predicted score counts, the run's reliability diagram and
training curves (its own PNG files when it has them, else drawn here)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from tagcons.evaluate.report_runs import RunView, data_uri, run_labels, run_png

RELIABILITY_FILE = "reliability.png"
CURVES_FILE = "training_curves.png"


def distribution_png(run: RunView) -> str:
    """Bars of how often each score is true and predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = run_labels(run)
    positions = np.arange(len(labels))
    true_counts = [int((run.predictions["true"] == k).sum()) for k in labels]
    pred_counts = [int((run.predictions["pred"] == k).sum()) for k in labels]
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    ax.bar(positions - 0.2, true_counts, width=0.4, label="true", color="#4c72b0")
    ax.bar(positions + 0.2, pred_counts, width=0.4, label="predicted", color="#dd8452")
    ax.set(xticks=positions, xticklabels=labels, xlabel="score", ylabel="pairs", title="true vs predicted scores")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return data_uri(buffer.getvalue(), "image/png")


def curves_png(run: RunView) -> str | None:
    """The run's training curves: its saved PNG, else drawn from metrics.json's history."""
    saved = run_png(run.path, CURVES_FILE)
    if saved is not None:
        return data_uri(saved, "image/png")
    history = run.metrics.get("history")
    if not isinstance(history, dict) or not any(isinstance(v, list) and v for v in history.values()):
        return None
    from tagcons.evaluate.plots import plot_training_curves

    with tempfile.TemporaryDirectory() as folder:
        path = plot_training_curves(history, Path(folder) / CURVES_FILE, title=run.name)
        return data_uri(path.read_bytes(), "image/png")


def reliability_png(run: RunView) -> str | None:
    saved = run_png(run.path, RELIABILITY_FILE)
    return data_uri(saved, "image/png") if saved is not None else None
