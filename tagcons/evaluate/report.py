"""`tagcons report`: one self-contained HTML page for a study's runs.

Sections: a summary (headline metrics with their intervals, baselines, the paired differences that
`compare` computes), one section per run (confusion matrix, reliability diagram, predicted vs true
scores, training curves), metrics per category, and galleries of the worst errors and of the pairs
two runs disagree on most.

The page needs nothing but itself: CSS inline, plots and thumbnails as data URIs, no script, and a
Content-Security-Policy meta tag that forbids any other source. Every user string (hashtags, file
names, column values) goes through Jinja2's autoescaping.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.configs import ReportConfig
from tagcons.data.images import ImageLoadError, load_rgb, resolve_image_path
from tagcons.data.pairs import PairColumns, normalise_image_key, normalise_text
from tagcons.errors import BadInputError
from tagcons.evaluate import compare
from tagcons.evaluate.calibration import columns_of
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.rundir import CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, read_json, write_text_staged
from tagcons.labels import LABELS, scale_from_config
from tagcons.outputs import refuse_existing_file

log = logging.getLogger(__name__)

TEMPLATE_PACKAGE, TEMPLATE_FOLDER, TEMPLATE_NAME = "tagcons.evaluate", "templates", "report.html.j2"
THUMBNAIL_PX = 160
THUMBNAIL_QUALITY = 80
RELIABILITY_FILE = "reliability.png"
CURVES_FILE = "training_curves.png"
CATEGORY_METRICS = ("accuracy", "macro_f1", "mae", "qwk")
BASELINE_METRICS = ("accuracy", "macro_f1", "mae", "qwk")
CALIBRATION_METRICS = ("log_loss", "brier", "ece")
NO_MATCH = "(no match)"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class RunView:
    """One run directory as the report reads it."""

    name: str
    path: Path
    config: dict
    metrics: dict
    predictions: pd.DataFrame

    @cached_property
    def test_hash(self) -> str:
        from tagcons.evaluate.provenance import keys_hash, pair_keys

        recorded = self.metrics.get("test_rows_hash")
        return recorded or keys_hash(pair_keys(self.predictions["image"], self.predictions["text"]))


# ---------------------------------------------------------------- reading runs


def load_runs(run_dirs) -> list[RunView]:
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise BadInputError("report needs at least one run directory")
    names = _unique_names(paths)
    return [_load_run(path, name) for path, name in zip(paths, names)]


def _unique_names(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def _load_run(path: Path, name: str) -> RunView:
    if not path.is_dir():
        raise BadInputError(f"{path}: not a directory; pass run directories written by fit-head or finetune")
    predictions = _read_predictions(path / PREDICTIONS_FILE)
    return RunView(name, path, read_json(path / CONFIG_FILE), read_json(path / METRICS_FILE), predictions)


def _read_predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise BadInputError(f"{path}: not found; is {path.parent} a run directory written by fit-head or finetune?")
    # Hashtags such as 'NA' or 'null' are text, not missing values.
    try:
        frame = pd.read_csv(
            path, dtype={"image": str, "text": str}, keep_default_na=False, na_values={"expected": [""]}
        )
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise BadInputError(
            f"{path}: not a UTF-8 CSV table of predictions ({type(e).__name__}); the run directory is damaged, "
            "rerun fit-head or finetune"
        ) from e
    missing = [c for c in ("image", "text", "true", "pred") if c not in frame.columns]
    if missing:
        raise BadInputError(
            f"{path}: column(s) {', '.join(missing)} missing; the report needs a run's test predictions"
        )
    return frame


# ---------------------------------------------------------------- summary


def _cell(metrics: dict, key: str) -> dict:
    interval = (metrics.get("ci95") or {}).get(key)
    return {"value": metrics.get(key), "interval": interval}


def _rows_note(run: RunView) -> str:
    if run.config.get("cv"):
        return f"{run.config['cv']}-fold out-of-fold"
    return "test part"


def summary_rows(runs: list[RunView]) -> list[dict]:
    return [
        {
            "name": run.name,
            "settings": {k: run.config.get(k) for k in compare.SETTING_COLUMNS if run.config.get(k) is not None},
            "cells": [_cell(run.metrics, key) for key in compare.METRIC_COLUMNS],
            "n_test": run.metrics.get("n_test", len(run.predictions)),
            "n_test_images": run.metrics.get("n_test_images", run.predictions["image"].nunique()),
            "test_hash": run.test_hash[:12],
            "rows": _rows_note(run),
            "bootstrap": run.metrics.get("bootstrap"),
        }
        for run in runs
    ]


def baseline_rows(run: RunView) -> list[dict]:
    """The run's baselines: `baselines` when the run has them, else the majority `baseline`."""
    baselines = run.metrics.get("baselines") or {}
    if not baselines and run.metrics.get("baseline"):
        baselines = {"majority": run.metrics["baseline"]}
    return [
        {"name": name, "cells": [_cell(values or {}, key) for key in BASELINE_METRICS]}
        for name, values in baselines.items()
    ]


def decoding_rows(run: RunView) -> list[dict]:
    decodings = run.metrics.get("decodings") or {}
    active = run.metrics.get("decode")
    return [
        {"name": name, "active": name == active, "cells": [_cell(values or {}, key) for key in BASELINE_METRICS]}
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


# ---------------------------------------------------------------- paired differences (from `compare`)
# The one adapter onto `tagcons.evaluate.compare`: the report shows the differences `tagcons compare`
# computes, never its own. With compare's paired bootstrap (`paired_differences` -> RunGroup) each
# difference comes with its interval and p-value; with a compare that predates it, the report shows
# compare's table as differences to the best run, and says that intervals are not available.


def difference_groups(runs: list[RunView]) -> list[dict]:
    """Groups of runs tested on the same rows, as the template shows them."""
    if hasattr(compare, "paired_differences") and hasattr(compare, "RunGroup"):
        names = {str(run.path): run.name for run in runs}
        groups = compare.paired_differences([run.path for run in runs])
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


# ---------------------------------------------------------------- per run


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


def run_labels(run: RunView) -> tuple[int, ...]:
    """The run's score scale (config.json's `scale`; the study's 1-5 for runs that predate it)."""
    return scale_from_config(run.config).labels


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
    return _data_uri(buffer.getvalue(), "image/png")


def curves_png(run: RunView) -> str | None:
    """The run's training curves: its saved PNG, else drawn from metrics.json's history."""
    saved = run_png(run.path, CURVES_FILE)
    if saved is not None:
        return _data_uri(saved, "image/png")
    history = run.metrics.get("history")
    if not isinstance(history, dict) or not any(isinstance(v, list) and v for v in history.values()):
        return None
    from tagcons.evaluate.plots import plot_training_curves

    with tempfile.TemporaryDirectory() as folder:
        path = plot_training_curves(history, Path(folder) / CURVES_FILE, title=run.name)
        return _data_uri(path.read_bytes(), "image/png")


def reliability_png(run: RunView) -> str | None:
    saved = run_png(run.path, RELIABILITY_FILE)
    return _data_uri(saved, "image/png") if saved is not None else None


def run_png(run_dir: Path, name: str) -> bytes | None:
    """The bytes of the run's figure `name` if it is a regular PNG file inside the run folder; a symlink,
    a non-PNG or anything else is left out with a warning (the page is shared: it must embed nothing else)."""
    path = run_dir / name
    try:  # no link followed, no FIFO waited on; fstat then checks what was opened
        handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb")
    except FileNotFoundError:
        return None
    except OSError:  # ELOOP: a symlink
        log.warning("%s: not a regular file in the run folder (a symlink?); left out of the report", path)
        return None
    with handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            log.warning("%s: not a regular file in the run folder; left out of the report", path)
            return None
        payload = handle.read()
    if not payload.startswith(PNG_SIGNATURE):
        log.warning("%s: not a PNG image; left out of the report", path)
        return None
    return payload


def run_section(run: RunView) -> dict:
    return {
        "name": run.name,
        "rows": _rows_note(run),
        "n": len(run.predictions),
        "confusion": confusion_view(run),
        "distribution": distribution_png(run),
        "reliability": reliability_png(run),
        "calibration": calibration_view(run),
        "curves": curves_png(run),
        "baselines": baseline_rows(run),
        "decodings": decoding_rows(run),
        "decode": run.metrics.get("decode"),
    }


# ---------------------------------------------------------------- categories


def category_function(config: ReportConfig):
    """image key, text -> category, from --category-from or --category-col; None without either."""
    if config.category_from and config.category_col:
        raise BadInputError("give either --category-from or --category-col, not both")
    if config.category_from:
        return _regex_categories(config.category_from)
    if config.category_col:
        return _column_categories(config)
    return None


def _regex_categories(pattern: str):
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise BadInputError(f"--category-from '{pattern}': not a valid regular expression ({e})") from e
    if compiled.groups != 1:
        raise BadInputError(
            f"--category-from '{pattern}': needs exactly one group (it has {compiled.groups}), e.g. '^([a-z]+)_'"
        )

    def category(image: str, _text: str) -> str:
        match = compiled.search(image)
        return match.group(1) if match and match.group(1) is not None else NO_MATCH

    return category


def _column_categories(config: ReportConfig):
    if config.data is None:
        raise BadInputError(f"--category-col {config.category_col} reads the pairs file: add --data PAIRS")
    frame = _read_category_table(config.data, config.columns, config.category_col)
    images = [normalise_image_key(k) for k in frame[config.columns.image]]
    texts = [normalise_text(t) for t in frame[config.columns.text]]
    values = [str(v) for v in frame[config.category_col]]
    by_pair = dict(zip(zip(images, texts), values))
    by_image = dict(zip(images, values))  # a run with --strip-hash keeps stripped texts: fall back to the image

    def category(image: str, text: str) -> str:
        return by_pair.get((image, text)) or by_image.get(image) or NO_MATCH

    return category


def _read_category_table(path: Path, columns: PairColumns, column: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: pairs file not found; check the --data path")
    wanted = [columns.image, columns.text, column]
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BadInputError(
            f"{path}: cannot be read as a pairs table ({e}); save it as UTF-8 CSV, TSV or parquet"
        ) from e
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise BadInputError(f"{path}: no column {', '.join(missing)}; it has {', '.join(frame.columns)}")
    return frame[wanted]


def category_rows(runs: list[RunView], category_of) -> list[dict]:
    """Metrics of each run's test rows grouped by category (sorted by category, then run order)."""
    rows = []
    for run in runs:
        frame = run.predictions
        labels = pd.Series([category_of(i, t) for i, t in zip(frame["image"], frame["text"])], index=frame.index)
        for name, group in frame.groupby(labels, sort=True):
            rows.append(_category_row(run.name, str(name), group))
    return sorted(rows, key=lambda row: row["category"])


def _category_row(run_name: str, category: str, group: pd.DataFrame) -> dict:
    metrics = compute_metrics(group["true"], group["pred"])
    return {
        "category": category,
        "run": run_name,
        "n": len(group),
        "n_images": group["image"].nunique(),
        "values": [metrics[k] for k in CATEGORY_METRICS],
    }


# ---------------------------------------------------------------- galleries


class Thumbnails:
    """image key -> JPEG data URI (<= THUMBNAIL_PX), each image decoded once; None without --images."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None
        self._made: dict[str, str | None] = {}

    def __call__(self, key: str) -> str | None:
        if self.root is None:
            return None
        if key not in self._made:
            self._made[key] = self._make(key)
        return self._made[key]

    def _make(self, key: str) -> str | None:
        try:
            image = load_rgb(resolve_image_path(self.root, key), key)
        except (ImageLoadError, BadInputError) as e:
            log.warning("report: no thumbnail for %s (%s)", key, e)
            return None
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
        return _data_uri(buffer.getvalue(), "image/jpeg")


def _true_probability(frame: pd.DataFrame, labels=LABELS) -> pd.Series:
    columns = [f"p{k}" for k in labels]
    if not all(c in frame.columns for c in columns):
        return pd.Series(np.nan, index=frame.index)
    probabilities = frame[columns].to_numpy(dtype=float)
    return pd.Series(
        probabilities[np.arange(len(frame)), columns_of(frame["true"].to_numpy(), labels)], index=frame.index
    )


def worst_errors(run: RunView, count: int, thumbnail) -> list[dict]:
    """The pairs with the largest |true - predicted|, then the lowest probability of the true score."""
    frame = run.predictions.assign(error=(run.predictions["true"] - run.predictions["pred"]).abs())
    frame = frame.assign(p_true=_true_probability(frame, run_labels(run)))
    frame = frame[frame["error"] > 0].sort_values(["error", "p_true"], ascending=[False, True], na_position="last")
    return [
        {
            "image": row.image,
            "text": row.text,
            "true": int(row.true),
            "preds": [int(row.pred)],
            "p_true": None if pd.isna(row.p_true) else float(row.p_true),
            "thumbnail": thumbnail(row.image),
        }
        for row in frame.head(count).itertuples(index=False)
    ]


def disagreements(first: RunView, second: RunView, count: int, thumbnail) -> list[dict]:
    """Pairs both runs scored, ordered by how far apart their predictions are."""
    keys = ["image", "text", "true"]
    both = first.predictions[keys + ["pred"]].merge(second.predictions[keys + ["pred"]], on=keys, suffixes=("_a", "_b"))
    both = both.assign(gap=(both["pred_a"] - both["pred_b"]).abs())
    both = both[both["gap"] > 0].sort_values("gap", ascending=False, kind="stable")
    return [
        {
            "image": row.image,
            "text": row.text,
            "true": int(row.true),
            "preds": [int(row.pred_a), int(row.pred_b)],
            "p_true": None,
            "thumbnail": thumbnail(row.image),
        }
        for row in both.head(count).itertuples(index=False)
    ]


# ---------------------------------------------------------------- page


def _data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, (float, np.floating)) else str(value)


def _signed(value, digits: int = 3) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:+.{digits}f}"


def _environment():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader(TEMPLATE_PACKAGE, TEMPLATE_FOLDER),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["num"] = _number
    environment.filters["signed"] = _signed
    return environment


def report_context(config: ReportConfig) -> dict:
    """Everything the template shows, as plain values."""
    runs = load_runs(config.run_dirs)
    category_of = category_function(config)
    thumbnail = Thumbnails(config.images)
    pair = runs[:2] if len(runs) >= 2 else None
    return {
        "metric_names": compare.METRIC_COLUMNS,
        "baseline_metrics": BASELINE_METRICS,
        "category_metrics": CATEGORY_METRICS,
        "calibration_metrics": CALIBRATION_METRICS,
        "summary": summary_rows(runs),
        "differences": difference_groups(runs),
        "runs": [run_section(run) for run in runs],
        "categories": category_rows(runs, category_of) if category_of else None,
        "category_source": config.category_from or config.category_col,
        "worst": [{"name": run.name, "items": worst_errors(run, config.worst, thumbnail)} for run in runs],
        "disagree": {
            "names": [run.name for run in pair],
            "items": disagreements(*pair, config.worst, thumbnail),
        }
        if pair
        else None,
        "has_images": config.images is not None,
        "thumbnail_px": THUMBNAIL_PX,
        "version": _version(),
    }


def _version() -> str:
    from tagcons import __version__

    return __version__


def render_report(config: ReportConfig) -> str:
    return _environment().get_template(TEMPLATE_NAME).render(**report_context(config))


def write_report(config: ReportConfig) -> Path:
    """Render the page and write it to ``config.out``; returns the path."""
    out = Path(config.out)
    if not out.parent.is_dir():
        raise BadInputError(f"{out.parent}: folder does not exist; create it or pick another --out")
    if config.images is not None and not Path(config.images).is_dir():
        raise BadInputError(f"{config.images}: images folder not found; check the --images path")
    refuse_existing_file(out, config.overwrite)
    html = render_report(config)
    write_text_staged(out, html, "--out")
    log.info("report: %s (%.1f MB)", out, len(html.encode("utf-8")) / 1e6)
    return out
