"""The report's test-row groups: the runs `tagcons compare` puts in one table (same test rows, same
scale), with compare's best run per metric, its ranking for the disagreements gallery, and the
baselines those runs share.

Nothing here is computed anew: best runs, differences and significance are compare's
(`compare.paired_differences`: best by point estimate, simultaneous intervals over all pairs of the
group's runs). A "best" mark therefore says which point estimate is highest (lowest for MAE) on those
rows; it claims more only where every paired difference to it excludes 0 ("clear").
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass

import pandas as pd

from tagcons.evaluate import compare
from tagcons.evaluate.intervals import LOWER_IS_BETTER
from tagcons.evaluate.report_runs import RunView
from tagcons.evaluate.report_tables import baseline_rows

RANK_METRIC = compare.PAIRED_METRICS[0]  # the metric the disagreements gallery ranks runs by (macro_f1)


@dataclass
class ReportGroup:
    """One of compare's tables: its label in the page (A, B, ...), its runs in compare's order, compare's group."""

    label: str
    runs: list[RunView]
    group: compare.RunGroup

    @property
    def reason(self) -> str:
        return self.group.reason


def test_row_groups(runs: list[RunView]) -> list[ReportGroup]:
    """compare's groups of ``runs``, each with the report's views of its runs."""
    by_path = {str(run.path): run for run in runs}
    groups = compare.paired_differences([run.path for run in runs])
    return [
        ReportGroup(_label(index), [by_path[str(path)] for path in group.frame["path"]], group)
        for index, group in enumerate(groups)
    ]


def _label(index: int) -> str:
    letters = string.ascii_uppercase
    return letters[index] if index < len(letters) else f"G{index + 1}"


def best_marks(group: ReportGroup) -> dict[str, dict[str, str]]:
    """run name -> metric -> "best" (compare's best point estimate) or "best, clear" (every paired difference
    to it excludes 0 in compare's simultaneous intervals); a run alone in its group is best of nothing."""
    marks: dict[str, dict[str, str]] = {}
    for metric, positions in group.group.best.items():
        for position in positions:
            run = group.runs[position]
            marks.setdefault(run.name, {})[metric] = "best, clear" if _clear(group, metric) else "best"
    return marks


def _clear(group: ReportGroup, metric: str) -> bool:
    entry = group.group.differences.get(metric)
    if not entry or not entry["runs"]:
        return False
    return all(diff is not None and diff.significant for diff in entry["runs"].values())


def ranked(group: ReportGroup, metric: str = RANK_METRIC) -> list[RunView]:
    """The group's runs from best to worst on ``metric`` as compare reads it (metrics.json's point estimate;
    ties keep compare's order); runs without the metric last."""
    values = pd.to_numeric(group.group.frame.get(metric, pd.Series(dtype=float)), errors="coerce")
    if metric in LOWER_IS_BETTER:
        values = -values

    def key(i: int) -> tuple:
        value = values.get(i)
        return (True, 0.0, i) if value is None or pd.isna(value) else (False, -value, i)

    return [group.runs[i] for i in sorted(range(len(group.runs)), key=key)]


def shared_baselines(group: ReportGroup) -> list[dict]:
    """The group's baselines once per distinct set: runs tested on the same rows with the same training
    side share them, so a set is shown once with the runs it belongs to."""
    sets: dict[str, dict] = {}
    for run in group.runs:
        rows = baseline_rows(run)
        key = json.dumps(rows, sort_keys=True, default=str)
        sets.setdefault(key, {"rows": rows, "runs": []})["runs"].append(run.name)
    return list(sets.values())
