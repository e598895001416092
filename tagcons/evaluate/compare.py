"""`tagcons compare`: one table of runs (fit-head or finetune), best value per metric column marked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tagcons.errors import BadInputError
from tagcons.evaluate.rundir import CONFIG_FILE, METRICS_FILE, read_json

SETTING_COLUMNS = ("backbone", "head", "recipe", "split", "features")
METRIC_COLUMNS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "mae", "qwk", "spearman")
LOWER_IS_BETTER = frozenset({"mae"})
COUNT_COLUMNS = ("n_train", "n_test")


def _run_row(run_dir: Path) -> dict:
    if not run_dir.is_dir():
        raise BadInputError(f"{run_dir}: not a directory; pass run directories written by fit-head or finetune")
    config = read_json(run_dir / CONFIG_FILE)
    metrics = read_json(run_dir / METRICS_FILE)
    row = {"run": run_dir.name}
    row.update({key: config.get(key) for key in SETTING_COLUMNS})
    row.update({key: metrics.get(key) for key in METRIC_COLUMNS})
    row["baseline_macro_f1"] = (metrics.get("baseline") or {}).get("macro_f1")
    row.update({key: metrics.get(key) for key in COUNT_COLUMNS})
    return row


def compare_runs(run_dirs) -> pd.DataFrame:
    """One row per run: settings, headline metrics, majority-baseline macro-F1, sizes."""
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise BadInputError("compare needs at least one run directory")
    frame = pd.DataFrame([_run_row(p) for p in run_dirs])
    # A column no run fills (e.g. recipe among fit-head runs only) is noise in the table.
    empty = [c for c in SETTING_COLUMNS if frame[c].isna().all()]
    return frame.drop(columns=empty)


def best_rows(frame: pd.DataFrame) -> dict[str, set[int]]:
    """For each metric column, the row positions holding its best value (ties all marked)."""
    best = {}
    for column in METRIC_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.notna().any():
            target = values.min() if column in LOWER_IS_BETTER else values.max()
            best[column] = set(values.index[values == target])
    return best


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_markdown(frame: pd.DataFrame) -> str:
    """A Markdown table; the best value of each metric column in bold (lowest for MAE)."""
    best = best_rows(frame.reset_index(drop=True))
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for position, (_, row) in enumerate(frame.iterrows()):
        cells = [_cell(row[c]) for c in columns]
        cells = [f"**{v}**" if position in best.get(c, ()) else v for c, v in zip(columns, cells)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(frame: pd.DataFrame, out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` with .md and .csv suffixes; returns (markdown_path, csv_path)."""
    out = Path(out)
    if not out.parent.is_dir():
        raise BadInputError(f"{out.parent}: folder does not exist; create it or pick another --out")
    markdown, csv = out.with_suffix(".md"), out.with_suffix(".csv")
    markdown.write_text(render_markdown(frame), encoding="utf-8")
    frame.to_csv(csv, index=False)
    return markdown, csv
