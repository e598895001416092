"""The report's per-category metrics: a category per test pair from `--category-from REGEX` (one group
applied to the image key) or `--category-col COL` of the pairs file, then each run's test rows by category."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from tagcons.configs import ReportConfig
from tagcons.data.pairs import PairColumns, normalise_image_key, normalise_text
from tagcons.errors import BadInputError
from tagcons.evaluate.intervals import RESAMPLES, bootstrap_intervals
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.report_runs import run_labels

CATEGORY_METRICS = ("accuracy", "macro_f1", "mae", "qwk")
NO_MATCH = "(no match)"
# Below this many test images a category's interval is flagged: docs/intervals.md checks the image bootstrap's
# coverage down to 20 images (0.91-0.94 there, the weakest cells); with fewer it is untested and wide.
MIN_CATEGORY_IMAGES = 20


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


def category_rows(runs, category_of) -> list[dict]:
    """Metrics of each run's test rows grouped by category (sorted by category, then run order), each with
    its image-clustered 95% interval (the run's own bootstrap settings) and ``few`` set below
    MIN_CATEGORY_IMAGES test images."""
    rows = []
    for run in runs:
        frame = run.predictions
        labels = pd.Series([category_of(i, t) for i, t in zip(frame["image"], frame["text"])], index=frame.index)
        for name, group in frame.groupby(labels, sort=True):
            rows.append(_category_row(run, str(name), group))
    return sorted(rows, key=lambda row: row["category"])


def _category_row(run, category: str, group: pd.DataFrame) -> dict:
    labels = run_labels(run)
    metrics = compute_metrics(group["true"], group["pred"], labels=labels)
    bootstrap = run.metrics.get("bootstrap") or {}
    resamples, seed = int(bootstrap.get("resamples") or RESAMPLES), int(bootstrap.get("seed") or 0)
    ci95 = bootstrap_intervals(group["true"], group["pred"], group["image"], None, resamples, seed, labels)["ci95"]
    n_images = group["image"].nunique()
    return {
        "category": category,
        "run": run.name,
        "n": len(group),
        "n_images": n_images,
        "few": n_images < MIN_CATEGORY_IMAGES,
        "cells": [{"value": metrics[k], "interval": ci95.get(k)} for k in CATEGORY_METRICS],
    }
