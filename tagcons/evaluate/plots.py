"""Confusion matrix and training-curve PNGs (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from tagcons.labels import LABELS

CURVE_KEYS = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "val_qwk")


def plot_confusion_matrix(y_true, y_pred, path: str | Path, title: str = "", labels=LABELS) -> Path:
    """Counts in the cells, colour by row-normalised share (recall per true score); one row per label."""
    counts = confusion_matrix(np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int), labels=list(labels))
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    fig, ax = _pyplot().subplots(figsize=(5, 4.4))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    ax.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted score",
        ylabel="true score",
        title=title or "confusion matrix",
    )
    fig.colorbar(image, ax=ax, label="share of true score")
    return _save(fig, path)


def plot_training_curves(history: dict, path: str | Path, title: str = "") -> Path:
    """Losses on the left axis, validation metrics on the right; any subset of CURVE_KEYS."""
    fig, (left, right) = _pyplot().subplots(1, 2, figsize=(9, 3.6))
    for key in ("train_loss", "val_loss"):
        if history.get(key):
            left.plot(np.arange(1, len(history[key]) + 1), history[key], label=key)
    for key in ("val_accuracy", "val_macro_f1", "val_qwk"):
        if history.get(key):
            right.plot(np.arange(1, len(history[key]) + 1), history[key], label=key)
    # Both losses are computed alike (eval mode, after each epoch), so their gap is over-fitting, not dropout.
    left.set(xlabel="epoch", ylabel="loss (eval mode, after the epoch)", title=title or "training curves")
    right.set(xlabel="epoch", ylabel="validation metric")
    for ax in (left, right):
        if ax.lines:
            ax.legend()
    return _save(fig, path)


def plot_reliability(curves: dict[str, list[dict]], path: str | Path, title: str = "") -> Path:
    """Reliability diagram: accuracy against top-label confidence per bin, one line per named curve.

    ``curves`` maps a label (e.g. "before (ECE 0.12)") to `calibration.reliability_bins` output.
    """
    fig, ax = _pyplot().subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    for label, bins in curves.items():
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top score probability)", ylabel="accuracy")
    ax.set_title(title or "reliability")
    ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported when a plot is drawn (it costs ~0.5 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
