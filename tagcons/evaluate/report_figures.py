"""The report's figures as data URIs: true vs predicted score counts, the run's reliability diagram and
training curves (its own PNG files when it has them, else drawn here)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from tagcons.evaluate import compare
from tagcons.evaluate.plot_style import COLOURS, styled_pyplot
from tagcons.evaluate.report_runs import RunView, data_uri, run_labels, run_png
from tagcons.evaluate.report_tables import baseline_values

RELIABILITY_FILE = "reliability.png"
CURVES_FILE = "training_curves.png"
SAME_BASELINE = 1e-9  # baseline values this close are one reference line


def distribution_png(run: RunView) -> str:
    """Bars of how often each score is true and predicted."""
    from tagcons.evaluate.plots import save_figure

    labels = run_labels(run)
    positions = np.arange(len(labels))
    true_counts = [int((run.predictions["true"] == k).sum()) for k in labels]
    pred_counts = [int((run.predictions["pred"] == k).sum()) for k in labels]
    with styled_pyplot() as plt:
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        ax.bar(positions - 0.2, true_counts, width=0.4, label="true", color=COLOURS[0])
        ax.bar(positions + 0.2, pred_counts, width=0.4, label="predicted", color=COLOURS[1])
        title = f"true vs predicted scores ({len(run.predictions)} test pairs)"
        ax.set(xticks=positions, xticklabels=labels, xlabel="score", ylabel="pairs", title=title)
        ax.legend()
        buffer = save_figure(plt, fig, io.BytesIO())
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


def forest_uri(group, marks: dict[str, dict[str, str]]) -> str:
    """The group's forest plot: every headline metric of its runs with their intervals; the baselines drawn
    as reference lines where every run of the group has the same value."""
    from tagcons.evaluate.forest import ForestRow, forest_png

    metrics = [m for m in compare.METRIC_COLUMNS if any(run.metrics.get(m) is not None for run in group.runs)]
    rows = [
        ForestRow(run.name, {m: _value_and_interval(run.metrics, m) for m in metrics}, set(marks.get(run.name, {})))
        for run in group.runs
    ]
    references = _reference_lines(group, metrics)
    first = group.runs[0]
    title = f"group {group.label}: {len(first.predictions)} test pairs, test rows {first.test_hash[:12]}"
    return data_uri(forest_png(rows, metrics, references, title), "image/png")


def _value_and_interval(metrics: dict, metric: str) -> tuple[float | None, list | None]:
    value = metrics.get(metric)
    return (None if value is None else float(value)), (metrics.get("ci95") or {}).get(metric)


def _reference_lines(group, metrics) -> dict[str, dict[str, float]]:
    """Baseline -> metric -> value, for the values every run of the group shares (a baseline fitted on a
    different training side, e.g. a fine-tune's fit part, differs: that value is left out)."""
    sets = [baseline_values(run) for run in group.runs]
    lines: dict[str, dict[str, float]] = {}
    for name in sets[0]:
        values = [[_number(s.get(name, {}).get(m)) for s in sets] for m in metrics]
        shared = {m: v[0] for m, v in zip(metrics, values) if v[0] is not None and _same(v)}
        if shared:
            lines[name] = shared
    return lines


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None


def _same(values: list) -> bool:
    return all(v is not None and abs(v - values[0]) <= SAME_BASELINE for v in values)
