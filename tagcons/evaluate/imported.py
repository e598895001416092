"""`tagcons evaluate`: predictions made by any tool become a run directory of the same shape as fit-head's.

The predictions file (CSV/TSV/parquet) holds a predicted score per row, optionally the true score, a fold
and per-score probabilities. Its rows are joined to the pairs file (`tagcons.data.row_join`: on
``key_col`` when both files have it, else image + hashtag); every row must name exactly one pair, and a
true-score column must agree with the pairs file's score after ``pred_offset`` (added to the file's
predicted and true scores: 1 for a study that wrote 0-4 labels). The run is then written with the writer
fit-head uses, so `compare` and `report` read it like any run: config.json (``source: imported``, the
file's sha256, the column mapping), predictions.csv, part_keys.json (the test side: the joined pairs),
metrics.json with the headline metrics of all rows pooled, their image-clustered ``ci95`` and
``test_rows_hash``; with a fold column also each fold's metrics and their mean and sd (``fold_summary``),
the form a paper's table reports. ``rows`` in metrics.json says which rows the headline numbers are on.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.configs import EvaluateConfig
from tagcons.data.images import files_sha256
from tagcons.data.pairs import PairTable, load_pairs, resolve_columns
from tagcons.data.row_join import JoinedRows, join_rows
from tagcons.errors import BadInputError
from tagcons.evaluate.metrics import fold_summary, pooled_and_per_fold
from tagcons.evaluate.provenance import side_hashes, split_spec, table_keys, write_side_keys
from tagcons.evaluate.rundir import check_run_out, staged_run_dir, write_config, write_evaluation
from tagcons.labels import ScoreScale

log = logging.getLogger(__name__)
PROBABILITY_TOLERANCE = 1e-3  # a row's probabilities must sum to 1 within this (rounded files)
IMPORTED_HEAD = "imported"


@dataclass
class ImportedPredictions:
    """The predictions file's rows as scores on the pairs table's scale."""

    table: PairTable  # the joined pairs, one per prediction row, in the file's order
    pred: np.ndarray
    proba: np.ndarray | None
    fold: np.ndarray | None
    joined: JoinedRows


@dataclass
class EvaluateResult:
    run_dir: Path
    metrics: dict


def evaluate_predictions(config: EvaluateConfig) -> EvaluateResult:
    """Join, check and score ``config.predictions``; write the run directory ``config.out``."""
    check_run_out(config.out, config.overwrite)
    config = dataclasses.replace(config, columns=resolve_columns(config.data, config.columns))
    imported = read_predictions(config)
    labels = imported.table.scale.labels
    extra = {"source": "imported", "n_train": None}
    if imported.fold is not None:
        extra.update(_fold_metrics(imported, labels))
    keys = table_keys(imported.table)
    with staged_run_dir(config.out) as work:
        title = f"imported: {config.predictions.name}"
        metrics = write_evaluation(
            work,
            imported.table,
            imported.pred,
            imported.proba,
            extra,
            title,
            labels,
            config.seed,
            _rows_label(imported),
        )
        write_side_keys(work, {"test": keys})
        write_config(work, _config_record(config, imported, keys))
    log.info("%s: %d imported predictions scored (%s)", config.out, len(keys), _rows_label(imported))
    return EvaluateResult(config.out, metrics)


def read_predictions(config: EvaluateConfig) -> ImportedPredictions:
    """The predictions file joined to the pairs file, every score checked (BadInputError naming the lines)."""
    pairs = load_pairs(config.data, config.columns, scale=config.scale)
    joined = join_rows(config.predictions, pairs, config.columns, config.key_col)
    table = pairs.subset(joined.pair_row)
    pred = _scores(joined, config.pred_col, "--pred-col", config.pred_offset, table.scale)
    if config.true_col:
        _check_true(joined, config, table)
    proba = _probabilities(joined, config.proba_cols, table.scale) if config.proba_cols else None
    fold = joined.integers(config.fold_col, "--fold-col") if config.fold_col else None
    return ImportedPredictions(table, pred, proba, fold, joined)


def _scores(joined: JoinedRows, name: str, flag: str, offset: int, scale: ScoreScale) -> np.ndarray:
    scores = joined.integers(name, flag) + offset
    outside = scale.outside(scores)
    if outside.any():
        raise BadInputError(
            f"{joined.where.path}: column '{name}' ({flag}) plus --pred-offset {offset} is outside the scale {scale} "
            f"at {joined.where.describe(outside)} (e.g. {int(scores[outside][0])}); give the --pred-offset that maps "
            f"the file's scores onto {scale} (1 for 0-4 labels), or the right --scale"
        )
    return scores


def _check_true(joined: JoinedRows, config: EvaluateConfig, table: PairTable) -> None:
    true = _scores(joined, config.true_col, "--true-col", config.pred_offset, table.scale)
    differ = true != table.labels.astype(int)
    if differ.any():
        first = int(np.flatnonzero(differ)[0])
        raise BadInputError(
            f"{joined.where.path}: true score in column '{config.true_col}' (plus --pred-offset {config.pred_offset}) "
            f"differs from the score in {config.data} at {joined.where.describe(differ)} (e.g. {true[first]} here, "
            f"{int(table.labels[first])} at line {int(table.frame['line'].iloc[first])} there); check --pred-offset, "
            "--key-col and that both files are the same study's"
        )


def _probabilities(joined: JoinedRows, names: tuple[str, ...], scale: ScoreScale) -> np.ndarray:
    if len(names) != scale.n_classes:
        raise BadInputError(
            f"--proba-col: {len(names)} columns for the {scale.n_classes} scores of {scale}; "
            "give one column per score, lowest score first"
        )
    proba = np.column_stack(
        [
            pd.to_numeric(joined.column(n, "--proba-col"), errors="coerce").to_numpy(float, na_value=np.nan)
            for n in names
        ]
    )
    bad = ~np.isfinite(proba).all(axis=1) | (proba < 0).any(axis=1)
    bad |= np.abs(np.nan_to_num(proba).sum(axis=1) - 1.0) > PROBABILITY_TOLERANCE
    if bad.any():
        raise BadInputError(
            f"{joined.where.path}: probabilities in {list(names)} are missing, negative or do not sum to 1 at "
            f"{joined.where.describe(bad)}; give each row's probability of every score"
        )
    return proba / proba.sum(axis=1, keepdims=True)


def _rows_label(imported: ImportedPredictions) -> str:
    n = len(imported.pred)
    if imported.fold is None:
        return f"the {n} rows of the predictions file"
    return f"out-of-fold predictions of {n} rows in {len(np.unique(imported.fold))} folds, pooled"


def _fold_metrics(imported: ImportedPredictions, labels) -> dict:
    """Each fold's metrics (with its fold number) and their mean and sd, as a paper's table reports them."""
    folds = np.unique(imported.fold)
    if len(folds) < 2:
        log.warning("%s: one fold only; the fold summary has no sd", imported.joined.where.path)
    rows = [np.flatnonzero(imported.fold == f) for f in folds]
    y = imported.table.labels.astype(int)
    parts = [(y[r], imported.pred[r], None if imported.proba is None else imported.proba[r]) for r in rows]
    per_fold = pooled_and_per_fold(parts, labels)[1]
    for fold, metrics in zip(folds, per_fold):
        metrics["fold"] = int(fold)
    return {"cv": len(folds), "per_fold": per_fold, "fold_summary": fold_summary(per_fold)}


def _config_record(config: EvaluateConfig, imported: ImportedPredictions, keys: np.ndarray) -> dict:
    """config.json of an imported run: where the predictions came from and how their columns were read."""
    given_folds = imported.fold is not None
    return {
        "kind": "evaluate",
        "source": "imported",
        "predictions": str(config.predictions),
        "predictions_sha256": files_sha256([config.predictions]),
        "data": str(config.data),
        "column_mapping": {
            "pred": config.pred_col,
            "true": config.true_col,
            "fold": config.fold_col,
            "proba": list(config.proba_cols),
            "key": config.key_col,
            "image": config.columns.image,
            "text": config.columns.text,
            "label": config.columns.label,
        },
        "joined_on": imported.joined.on,
        "pred_offset": config.pred_offset,
        "scale": str(imported.table.scale),
        "head": IMPORTED_HEAD,
        "backbone": None,
        "split": "given" if given_folds else None,
        "cv": len(np.unique(imported.fold)) if given_folds else None,
        "n_pairs": len(keys),
        "split_spec": split_spec("given", None, None, cv=len(np.unique(imported.fold)) if given_folds else None),
        "parts": side_hashes({"test": keys}),
    }
