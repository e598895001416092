"""Writing a run directory: config.json, metrics.json, predictions.csv, confusion_matrix.png.

Both fit-head and finetune use these, so `tagcons compare` reads any run the same way. The keys
`compare` reads from config.json are: backbone, head, split, features, recipe (any may be absent).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.data.pairs import PairTable
from tagcons.errors import BadInputError
from tagcons.evaluate.intervals import bootstrap_intervals
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.plots import plot_confusion_matrix
from tagcons.evaluate.provenance import keys_hash, table_keys
from tagcons.labels import LABELS
from tagcons.outputs import refuse_filled_folder
from tagcons.table_out import WRITE_ERRORS

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_FILE = "confusion_matrix.png"
AUDIT_CSV, AUDIT_JSON = "audit.csv", "audit.json"  # what `tagcons audit` writes (the report reads them too)
VERSIONED = ("tagcons", "torch", "transformers", "scikit-learn", "lightgbm", "xgboost", "numpy")


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
    """Atomically: a failed write (a full disk) leaves the old file or none, never a truncated one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(_jsonable(payload), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_staged(path: str | Path, text: str, option: str = "--out") -> Path:
    """Write `text` to a temporary sibling, then rename it over `path`: a failed write (a full disk, a
    read-only folder) leaves the old file or none, never a truncated one, and a symlink at `path` is
    replaced, never written through. Write errors and a folder at `path` are one-line BadInputErrors."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise BadInputError(f"{path}: is a folder; pass a file name as {option}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "x", encoding="utf-8") as handle:  # "x": a new file, never an existing one or a link
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        raise BadInputError(
            f"cannot write {path}: {e.strerror}; nothing half-written was left, fix that and rerun"
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextmanager
def staged_run_dir(run_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to write a run into; on success its files move into `run_dir`
    (the whole folder is renamed when `run_dir` does not exist yet). On any failure (a full disk, an
    interrupt) the temporary folder is removed, so no half-written run blocks a rerun."""
    run_dir = Path(run_dir)
    work = run_dir.with_name(f".{run_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        work.mkdir()
        yield work
        _move_into_place(work, run_dir)
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        raise BadInputError(
            f"cannot write {run_dir}: {e.strerror}; nothing half-written was kept, fix that and rerun"
        ) from e
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _move_into_place(work: Path, run_dir: Path) -> None:
    if not run_dir.exists():
        os.replace(work, run_dir)
        return
    for entry in sorted(work.iterdir()):
        target = run_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


def check_run_out(run_dir: Path, overwrite: bool) -> Path:
    """``run_dir`` may receive a run: not a file, and not holding a run unless ``overwrite``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInputError(f"{run_dir}: exists and is not a directory; choose another --out")
    refuse_filled_folder(run_dir, (CONFIG_FILE, METRICS_FILE), overwrite, holds="a run")
    return run_dir


def read_json(path: str | Path) -> dict:
    """A run file holding one JSON object (every run file does); anything else is a damaged run."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BadInputError(f"{path}: not found; is {path.parent} a tagcons run directory?") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path}: not valid JSON ({e}); the run directory is damaged") from e
    if not isinstance(payload, dict):
        raise BadInputError(
            f"{path}: holds a JSON {type(payload).__name__}, not an object of settings; the run directory is damaged"
        )
    return payload


def write_config(run_dir: str | Path, record: dict, fingerprint: str | None = None) -> Path:
    """config.json: the run's config record, the cache fingerprint and package versions."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return write_json(run_dir / CONFIG_FILE, {**record, "cache_fingerprint": fingerprint, "versions": versions()})


def predictions_frame(table: PairTable, y_pred, proba=None, y_true=None, labels=LABELS) -> pd.DataFrame:
    """image, text, [true], pred, expected (sum of k * p_k), p{k} per label k; one row per pair of ``table``."""
    frame = pd.DataFrame({"image": table.images, "text": table.texts})
    if y_true is not None:
        frame["true"] = np.asarray(y_true).astype(int)
    frame["pred"] = np.asarray(y_pred).astype(int)
    if proba is not None:
        proba = np.asarray(proba, dtype=float)
        frame["expected"] = (proba * np.asarray(labels, dtype=float)).sum(axis=1)  # row by row: the same bits
        # for a row whatever rows come with it (a matrix product of one row takes another BLAS path)
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
    seed: int = 0,
    rows: str = "test",
) -> dict:
    """Score predictions on ``table_test`` (which has labels) and write metrics, predictions, confusion PNG.

    ``extra_metrics`` (e.g. n_train, baseline, per_fold, history) is merged into metrics.json; the
    headline metrics win on a key clash. Every run also gets the image-clustered bootstrap intervals
    (``ci95``, ``bootstrap``, ``n_test_images``, resamples drawn with ``seed``) and ``test_rows_hash``,
    the hash of the test pairs' keys that `compare` groups runs by, and ``rows``, which rows the headline
    metrics are computed on ("test", or "out-of-fold" for pooled CV predictions; docs/metrics.md).
    Returns the metrics dict as written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    y_true = table_test.labels.astype(int)
    metrics = {
        **(extra_metrics or {}),
        **compute_metrics(y_true, y_pred, proba, labels),
        **bootstrap_intervals(y_true, y_pred, table_test.images, proba, seed=seed, labels=labels),
        "rows": rows,
        "n_test": int(len(y_true)),
        "test_rows_hash": keys_hash(table_keys(table_test)),
    }
    metrics.setdefault("n_train", None)
    write_json(run_dir / METRICS_FILE, metrics)
    predictions_frame(table_test, y_pred, proba, y_true, labels).to_csv(run_dir / PREDICTIONS_FILE, index=False)
    plot_confusion_matrix(y_true, y_pred, run_dir / CONFUSION_FILE, title=title, labels=labels)
    return _jsonable(metrics)
