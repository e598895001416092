"""Writing a run directory: config.json, metrics.json, predictions.csv, confusion_matrix.png.

Both fit-head and finetune use these, so `tagcons compare` reads any run the same way. The keys
`compare` reads from config.json are: backbone, head, split, features, recipe (any may be absent).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.data.pairs import PairTable
from tagcons.errors import BadInputError
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.plots import plot_confusion_matrix
from tagcons.labels import LABELS

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_FILE = "confusion_matrix.png"
VERSIONED = ("tagcons", "torch", "transformers", "scikit-learn", "lightgbm", "numpy")


def versions() -> dict:
    """Installed versions of the packages that change the numbers (None where not installed)."""
    found = {}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.write_text(json.dumps(_jsonable(payload), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BadInputError(f"{path}: not found; is {path.parent} a tagcons run directory?") from e
    except json.JSONDecodeError as e:
        raise BadInputError(f"{path}: not valid JSON ({e}); the run directory is damaged") from e


def write_config(run_dir: str | Path, settings: dict, fingerprint: str | None = None) -> Path:
    """config.json: every setting, the cache fingerprint and package versions."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return write_json(run_dir / CONFIG_FILE, {**settings, "cache_fingerprint": fingerprint, "versions": versions()})


def predictions_frame(table: PairTable, y_pred, proba=None, y_true=None, labels=LABELS) -> pd.DataFrame:
    """image, text, [true], pred, expected (sum of k * p_k), p{k} per label k; one row per pair of ``table``."""
    frame = pd.DataFrame({"image": table.images, "text": table.texts})
    if y_true is not None:
        frame["true"] = np.asarray(y_true).astype(int)
    frame["pred"] = np.asarray(y_pred).astype(int)
    if proba is not None:
        proba = np.asarray(proba, dtype=float)
        frame["expected"] = proba @ np.asarray(labels, dtype=float)
        for i, k in enumerate(labels):
            frame[f"p{k}"] = proba[:, i]
    return frame


def write_evaluation(
    run_dir: str | Path,
    table_test: PairTable,
    y_pred,
    proba=None,
    extra_metrics: dict | None = None,
    title: str = "",
    labels=LABELS,
) -> dict:
    """Score predictions on ``table_test`` (which has labels) and write metrics, predictions, confusion PNG.

    ``extra_metrics`` (e.g. n_train, baseline, per_fold, history) is merged into metrics.json; the
    headline metrics win on a key clash. Returns the metrics dict as written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    y_true = table_test.labels.astype(int)
    metrics = {**(extra_metrics or {}), **compute_metrics(y_true, y_pred, proba, labels), "n_test": int(len(y_true))}
    metrics.setdefault("n_train", None)
    write_json(run_dir / METRICS_FILE, metrics)
    predictions_frame(table_test, y_pred, proba, y_true, labels).to_csv(run_dir / PREDICTIONS_FILE, index=False)
    plot_confusion_matrix(y_true, y_pred, run_dir / CONFUSION_FILE, title=title, labels=labels)
    return _jsonable(metrics)
