"""`tagcons compare`: runs grouped by the rows they were tested on, with intervals and paired differences.

Runs are only comparable on the same test rows, so they are grouped by ``test_rows_hash`` (the hash
of their test pairs' keys, in metrics.json): one table per group, each with a one-line reason, and
the best value of each metric column in bold within its own table only. Within a group every other
run gets its difference from the best run per metric, with a 95% simultaneous interval and adjusted
p-value over all pairs of runs in the table (`simultaneous.table_differences`: studentised max-|t|
over the same image resamples, so the table as a whole makes a false claim at most 5% of the time,
the best being chosen on the same rows included); a difference is significant only when its interval
excludes 0, and the procedure is stated above the differences. Runs written before the hash existed
go in a table of their own, where nothing is marked best. Runs scored on different scales (config.json's
``scale``) never share a table.

Library use (e.g. the HTML report): ``paired_differences(run_dirs) -> list[RunGroup]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tagcons.errors import BadInputError
from tagcons.evaluate.intervals import (
    INTERVAL_METRICS,
    LOWER_IS_BETTER,
    RESAMPLES,
    PairedDifference,
    aligned_counts,
    resample,
)
from tagcons.evaluate.rundir import CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, read_json, write_text_staged
from tagcons.evaluate.simultaneous import table_differences
from tagcons.labels import resolve_scale, scale_from_config

SETTING_COLUMNS = ("backbone", "head", "recipe", "split", "features")
METRIC_COLUMNS = INTERVAL_METRICS
PAIRED_METRICS = ("macro_f1", "qwk")
SHORTCUT_BASELINES = ("majority", "text_only", "image_prior")
COUNT_COLUMNS = ("n_train", "n_test", "n_test_images")
NO_HASH = (
    "runs written before test rows were recorded (no test_rows_hash): their test rows may differ, so no best is marked"
)
SHOWN_COLUMNS_HIDDEN = ("test_rows_hash", "scale", "path")


def _run_row(run_dir: Path) -> dict:
    if not run_dir.is_dir():
        raise BadInputError(f"{run_dir}: not a directory; pass run directories written by fit-head or finetune")
    config = read_json(run_dir / CONFIG_FILE)
    metrics = read_json(run_dir / METRICS_FILE)
    row = {"run": run_dir.name}
    row.update({key: config.get(key) for key in SETTING_COLUMNS})
    intervals = metrics.get("ci95") or {}
    for key in METRIC_COLUMNS:
        row[key] = metrics.get(key)
        row[f"{key}_low"], row[f"{key}_high"] = intervals.get(key) or (None, None)
    baselines = metrics.get("baselines") or {"majority": metrics.get("baseline") or {}}
    for name in SHORTCUT_BASELINES:
        row[f"{name}_macro_f1"] = (baselines.get(name) or {}).get("macro_f1")
    row.update({key: metrics.get(key) for key in COUNT_COLUMNS})
    row.update(test_rows_hash=metrics.get("test_rows_hash"), scale=str(scale_from_config(config)), path=str(run_dir))
    return row


def compare_runs(run_dirs) -> pd.DataFrame:
    """One row per run: settings, headline metrics with their 95% interval bounds, baselines' macro-F1, sizes,
    and the test rows' hash (runs with different hashes must not be ranked against each other)."""
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise BadInputError("compare needs at least one run directory")
    frame = pd.DataFrame([_run_row(p) for p in run_dirs])
    # A column no run fills (e.g. recipe among fit-head runs only) is noise in the table.
    empty = [c for c in frame.columns if c not in ("run", *SHOWN_COLUMNS_HIDDEN) and frame[c].isna().all()]
    return frame.drop(columns=empty)


def best_rows(frame: pd.DataFrame) -> dict[str, set[int]]:
    """For each metric column, the row positions holding its best value (ties all marked)."""
    best = {}
    for column in METRIC_COLUMNS:
        if column not in frame:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.notna().any():
            target = values.min() if column in LOWER_IS_BETTER else values.max()
            best[column] = set(values.index[values == target])
    return best


@dataclass
class RunGroup:
    """Runs tested on the same rows (or, with ``test_rows_hash`` None, runs that cannot tell)."""

    test_rows_hash: str | None
    reason: str  # one line: why these runs share a table
    frame: pd.DataFrame  # compare_runs rows of this group, positions 0..n-1
    best: dict[str, set[int]]  # metric -> positions of the best run(s) in this group (empty: nothing marked)
    differences: dict[str, dict] = field(default_factory=dict)  # metric -> {"best": run, "runs": {run: diff}}

    def difference(self, metric: str, run: str) -> PairedDifference | None:
        return self.differences.get(metric, {}).get("runs", {}).get(run)


def paired_differences(
    run_dirs, metrics=PAIRED_METRICS, resamples: int = RESAMPLES, seed: int = 0, frame: pd.DataFrame | None = None
) -> list[RunGroup]:
    """Group runs by test rows; within each group, each run's difference from the best run per metric.

    ``differences[metric]["runs"][run]`` is a `PairedDifference` (difference = run - best, ``ci95``,
    ``p_value``, ``significant``), simultaneous over all pairs of the group's runs (one image bootstrap);
    ``differences[metric]["procedure"]`` says so in one line.
    """
    frame = compare_runs(run_dirs) if frame is None else frame
    scales = frame["scale"].nunique() > 1  # the same pairs scored on two scales: say which table is which
    groups = [_hashed_group(runs, metrics, resamples, seed, scales) for _, runs in _by_hash(frame)]
    unknown = frame[frame["test_rows_hash"].isna()].reset_index(drop=True)
    if len(unknown):
        groups.append(RunGroup(None, NO_HASH, unknown, {}))
    if len(groups) > 1:
        for group in groups:
            group.reason += "; the other tables were tested on other rows, so compare within a table only"
    return groups


def _by_hash(frame: pd.DataFrame):
    hashed = frame[frame["test_rows_hash"].notna()]
    return hashed.groupby(["test_rows_hash", "scale"], sort=False)


def _hashed_group(runs: pd.DataFrame, metrics, resamples: int, seed: int, name_scale: bool = False) -> RunGroup:
    runs = runs.reset_index(drop=True)
    first = runs.iloc[0]
    reason = f"tested on the same {_count(first['n_test'])} pairs"
    if "n_test_images" in runs and pd.notna(first.get("n_test_images")):
        reason += f" of {_count(first['n_test_images'])} images"
    reason += f" (test rows {first['test_rows_hash'][:12]})"
    if name_scale:
        reason += f" on the {first['scale']} scale"
    best = best_rows(runs) if len(runs) > 1 else {}  # a run alone in its table is the best of nothing
    group = RunGroup(first["test_rows_hash"], reason, runs, best)
    if len(runs) > 1:
        group.differences = _differences(runs, best, metrics, resamples, seed)
    return group


def _count(value) -> str:
    return "?" if value is None or pd.isna(value) else str(int(value))


def _differences(runs: pd.DataFrame, best: dict, metrics, resamples: int, seed: int) -> dict:
    predictions = [_predictions(Path(path)) for path in runs["path"]]
    if any(p is None for p in predictions):
        return {}
    labels = resolve_scale(runs.loc[0, "scale"]).labels
    resampled = [resample(counts, resamples, seed) for counts in aligned_counts(predictions, labels)]
    out = {}
    for metric in metrics:
        if metric not in best:
            continue
        reference = min(best[metric])
        table = table_differences(resampled, metric)
        out[metric] = {
            "best": runs.loc[reference, "run"],
            "runs": {runs.loc[i, "run"]: table.difference(i, reference) for i in range(len(runs)) if i != reference},
            "procedure": table.procedure(),
            "undefined": table.undefined,
        }
    return out


def _predictions(run_dir: Path) -> pd.DataFrame | None:
    path = run_dir / PREDICTIONS_FILE
    return pd.read_csv(path) if path.is_file() else None


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _metric_cell(row: pd.Series, column: str) -> str:
    low, high = row.get(f"{column}_low"), row.get(f"{column}_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return _cell(row[column])
    return f"{_cell(row[column])} [{low:.3f}, {high:.3f}]"


def _shown_columns(frame: pd.DataFrame) -> list[str]:
    bounds = {f"{m}_{side}" for m in METRIC_COLUMNS for side in ("low", "high")}
    return [c for c in frame.columns if c not in bounds and c not in SHOWN_COLUMNS_HIDDEN]


def _group_table(group: RunGroup) -> list[str]:
    frame = group.frame
    columns = _shown_columns(frame)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for position, row in frame.iterrows():
        cells = [_metric_cell(row, c) if c in METRIC_COLUMNS else _cell(row[c]) for c in columns]
        cells = [f"**{v}**" if position in group.best.get(c, ()) else v for c, v in zip(columns, cells)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _difference_table(group: RunGroup) -> list[str]:
    if not group.differences:
        return []
    procedures = sorted({entry["procedure"] for entry in group.differences.values()})
    lines = [
        "",
        f"Differences from the best run per metric: {'; '.join(procedures)}.",
        "",
        "| run | metric | vs best | difference | 95% simultaneous interval | adjusted p | significant |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric, entry in group.differences.items():
        for run, diff in entry["runs"].items():
            interval = "-" if diff.ci95 is None else f"[{diff.ci95[0]:.3f}, {diff.ci95[1]:.3f}]"
            lines.append(
                f"| {run} | {metric} | {entry['best']} | {_cell(diff.difference)} | {interval} | "
                f"{_cell(diff.p_value)} | {'yes' if diff.significant else 'no'} |"
            )
    return lines


def render_markdown(table) -> str:
    """Markdown: one table per group of runs tested on the same rows, its reason above it, the best value
    per metric column in bold within that table only (lowest for MAE), then the paired differences.

    ``table`` is a list of `RunGroup` (from `paired_differences`) or a `compare_runs` frame (grouped
    here, without differences)."""
    groups = _groups_of(table)
    blocks = []
    for group in groups:
        blocks.append("\n".join([f"{group.reason}:", "", *_group_table(group), *_difference_table(group)]))
    return "\n\n".join(blocks) + "\n"


def _groups_of(table) -> list[RunGroup]:
    if isinstance(table, pd.DataFrame):
        return paired_differences(None, metrics=(), frame=table)
    return list(table)


def comparison_frame(table) -> pd.DataFrame:
    """Every run of every group in one frame, with its group's hash and its paired differences."""
    frames = []
    for group in _groups_of(table):
        frame = group.frame.copy()
        for metric in group.differences:
            for position, run in frame["run"].items():
                diff = group.difference(metric, run)
                frame.loc[position, f"{metric}_vs_best"] = None if diff is None else diff.difference
                frame.loc[position, f"{metric}_vs_best_p"] = None if diff is None else diff.p_value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_comparison(table, out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` with .md and .csv suffixes; returns (markdown_path, csv_path)."""
    out = Path(out)
    if not out.parent.is_dir():
        raise BadInputError(f"{out.parent}: folder does not exist; create it or pick another --out")
    groups = _groups_of(table)
    markdown, csv = out.with_suffix(".md"), out.with_suffix(".csv")
    write_text_staged(markdown, render_markdown(groups))
    write_text_staged(csv, comparison_frame(groups).drop(columns=["path"]).to_csv(index=False))
    return markdown, csv
