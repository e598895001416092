"""The report's tables as plain values: summary, baselines, decodings, calibration, confusion, and the
paired differences `tagcons compare` computes (the report shows compare's numbers, never its own)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tagcons.evaluate import compare
from tagcons.evaluate.report_runs import RunView, rows_note, run_labels

BASELINE_METRICS = ("accuracy", "macro_f1", "mae", "qwk")
CALIBRATION_METRICS = ("log_loss", "brier", "ece")


def metric_cell(metrics: dict, key: str) -> dict:
    interval = (metrics.get("ci95") or {}).get(key)
    return {"value": metrics.get(key), "interval": interval}


def summary_rows(runs: list[RunView], marks: dict | None = None, groups: dict | None = None) -> list[dict]:
    """One row per run; ``marks``: run -> metric -> compare's best mark; ``groups``: run -> its group's label."""
    marks, groups = marks or {}, groups or {}
    return [
        {
            "name": run.name,
            "group": groups.get(run.name),
            "settings": {k: run.config.get(k) for k in compare.SETTING_COLUMNS if run.config.get(k) is not None},
            "cells": [
                {**metric_cell(run.metrics, key), "mark": marks.get(run.name, {}).get(key)}
                for key in compare.METRIC_COLUMNS
            ],
            "n_test": run.metrics.get("n_test", len(run.predictions)),
            "n_test_images": run.metrics.get("n_test_images", run.predictions["image"].nunique()),
            "test_hash": run.test_hash[:12],
            "rows": rows_note(run),
            "bootstrap": run.metrics.get("bootstrap"),
        }
        for run in runs
    ]


def baseline_values(run: RunView) -> dict[str, dict]:
    """The run's baselines: `baselines` when the run has them, else the majority `baseline`."""
    baselines = run.metrics.get("baselines") or {}
    if not baselines and run.metrics.get("baseline"):
        baselines = {"majority": run.metrics["baseline"]}
    return {name: values or {} for name, values in baselines.items()}


def baseline_rows(run: RunView) -> list[dict]:
    return [
        {"name": name, "cells": [metric_cell(values, key) for key in BASELINE_METRICS]}
        for name, values in baseline_values(run).items()
    ]


def decoding_rows(run: RunView) -> list[dict]:
    decodings = run.metrics.get("decodings") or {}
    active = run.metrics.get("decode")
    return [
        {"name": name, "active": name == active, "cells": [metric_cell(values or {}, key) for key in BASELINE_METRICS]}
        for name, values in decodings.items()  # None: the head cannot decode that way
    ]


def calibration_view(run: RunView) -> dict | None:
    calibration = run.metrics.get("calibration")
    if not calibration:
        return None
    return {
        "temperature": calibration.get("temperature"),
        "side": calibration.get("rows"),
        "rows": [
            {"name": stage, "values": [(calibration.get(stage) or {}).get(k) for k in CALIBRATION_METRICS]}
            for stage in ("before", "after")
        ],
    }


def confusion_view(run: RunView) -> list[dict]:
    """Rows of the confusion matrix: per cell the count and its share of the true score's row."""
    from sklearn.metrics import confusion_matrix

    labels = run_labels(run)
    counts = confusion_matrix(run.predictions["true"], run.predictions["pred"], labels=list(labels))
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    return [
        {"label": label, "cells": [{"count": int(c), "share": float(s)} for c, s in zip(counts[i], shares[i])]}
        for i, label in enumerate(labels)
    ]


# ---------------------------------------------------------------- paired differences (from `compare`)
# The one adapter onto `tagcons.evaluate.compare`: the report shows the differences `tagcons compare`
# computes, never its own. With compare's paired bootstrap (`paired_differences` -> RunGroup) each
# difference comes with its interval and p-value; with a compare that predates it, the report shows
# compare's table as differences to the best run, and says that intervals are not available.


def difference_groups(runs: list[RunView], groups=None) -> list[dict]:
    """Groups of runs tested on the same rows, as the template shows them (``groups``: compare's RunGroups
    of these runs, when already computed)."""
    if groups is not None or (hasattr(compare, "paired_differences") and hasattr(compare, "RunGroup")):
        names = {str(run.path): run.name for run in runs}
        groups = compare.paired_differences([run.path for run in runs]) if groups is None else groups
        return [_paired_view(group, names) for group in groups if len(group.frame) > 1]
    return _point_groups(runs)


def _blank_cell() -> dict:
    return {"value": None, "best": False, "interval": None, "p": None, "significant": False}


def _paired_view(group, names: dict[str, str]) -> dict:
    metrics = list(group.differences)
    rows = []
    for position, row in group.frame.iterrows():
        cells = [_paired_cell(group, metric, position, row["run"]) for metric in metrics]
        rows.append({"name": names.get(str(row["path"]), row["run"]), "cells": cells})
    return {"reason": group.reason, "metrics": metrics, "rows": rows, "kind": "paired"}


def _paired_cell(group, metric: str, position: int, run: str) -> dict:
    cell = _blank_cell()
    if position in group.best.get(metric, ()):
        return {**cell, "best": True}
    difference = group.difference(metric, run)
    if difference is not None:
        cell.update(value=difference.difference, interval=difference.ci95, p=difference.p_value)
        cell.update(significant=bool(difference.significant))
    return cell


def _point_groups(runs: list[RunView]) -> list[dict]:
    groups: dict[str, list[RunView]] = {}
    for run in runs:
        groups.setdefault(run.test_hash, []).append(run)
    return [_point_group(members) for members in groups.values() if len(members) > 1]


def _point_group(members: list[RunView]) -> dict:
    frame = compare.compare_runs([run.path for run in members]).reset_index(drop=True)
    best = compare.best_rows(frame)
    rows = [
        {"name": run.name, "cells": [_point_cell(frame, best, column, position) for column in compare.METRIC_COLUMNS]}
        for position, run in enumerate(members)
    ]
    reason = f"tested on the same {len(members[0].predictions)} pairs (test rows {members[0].test_hash[:12]})"
    return {"reason": reason, "metrics": list(compare.METRIC_COLUMNS), "rows": rows, "kind": "point"}


def _point_cell(frame: pd.DataFrame, best: dict, column: str, position: int) -> dict:
    cell = _blank_cell()
    if column in best:
        values = pd.to_numeric(frame[column], errors="coerce")
        cell.update(value=values[position] - values[min(best[column])], best=position in best[column])
    return cell
