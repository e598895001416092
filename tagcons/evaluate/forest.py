"""Forest plot: each headline metric of each run of one test-row group, its point and 95% interval, with
the group's baselines as reference lines; matplotlib in the shared `plot_style`."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from tagcons.evaluate.plot_style import COLOURS, REFERENCE_COLOUR, styled_pyplot

PANELS_PER_ROW = 4
PANEL_INCHES = (2.7, 0.45)  # width, height per run
BEST_COLOUR = COLOURS[3]
LEGEND_INCHES = 0.4  # room under the panels for the legend
BASELINE_STYLES = {"majority": "--", "text_only": ":", "image_prior": "-."}  # any other baseline: solid


@dataclass
class ForestRow:
    """One run: metric -> (value, [low, high] or None); ``best``: the metrics where compare marks it best."""

    name: str
    cells: dict[str, tuple[float | None, list | None]]
    best: set[str] = field(default_factory=set)


def forest_png(rows: list[ForestRow], metrics, baselines: dict[str, dict[str, float]], title: str) -> bytes:
    """PNG bytes: one panel per metric, one line per run (first run on top), baselines as vertical lines."""
    with styled_pyplot() as plt:
        n_rows = int(np.ceil(len(metrics) / PANELS_PER_ROW))
        height = max(1.6, PANEL_INCHES[1] * len(rows) + 1.1)
        fig, axes = plt.subplots(
            n_rows, PANELS_PER_ROW, figsize=(PANEL_INCHES[0] * PANELS_PER_ROW + 1.2, height * n_rows), squeeze=False
        )
        for index, ax in enumerate(axes.flat):
            if index < len(metrics):
                _panel(ax, rows, metrics[index], baselines, first=index % PANELS_PER_ROW == 0)
            else:
                ax.set_axis_off()
        _legend(fig, baselines)
        fig.suptitle(title)
        fig.tight_layout(rect=(0, LEGEND_INCHES / (height * n_rows), 1, 1))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        return buffer.getvalue()


def _panel(ax, rows: list[ForestRow], metric: str, baselines: dict, first: bool) -> None:
    positions = np.arange(len(rows))[::-1]  # the first run on top
    for y, row in zip(positions, rows):
        value, interval = row.cells.get(metric, (None, None))
        if value is None or not np.isfinite(value):
            continue
        colour = BEST_COLOUR if metric in row.best else COLOURS[0]
        if interval:
            ax.plot(interval, [y, y], color=colour, linewidth=2)
        ax.plot([value], [y], marker="D" if metric in row.best else "o", color=colour, markersize=6)
    for name, values in baselines.items():
        if values.get(metric) is not None:
            ax.axvline(values[metric], color=REFERENCE_COLOUR, linestyle=BASELINE_STYLES.get(name, "-"), linewidth=1)
    ax.set_yticks(positions)
    ax.set_yticklabels([row.name for row in rows] if first else [])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_title(metric)


def _legend(fig, baselines: dict) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=COLOURS[0], marker="o", linewidth=2, label="run: value, 95% interval")]
    handles.append(Line2D([], [], color=BEST_COLOUR, marker="D", linewidth=2, label="best point estimate (compare)"))
    handles += [
        Line2D([], [], color=REFERENCE_COLOUR, linestyle=BASELINE_STYLES.get(name, "-"), label=f"baseline: {name}")
        for name in baselines
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
