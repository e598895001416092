"""`fit_head`: join pairs to a cache, split honestly, fit a head, evaluate, write the run directory.

Everything chosen from data (cut-points, C, early-stopping epoch, boosting rounds) is chosen on the
training part only; the test part is touched once, for the reported metrics. With ``cv`` the metrics
are pooled over K out-of-fold predictions (per-fold metrics beside them) and the saved head is refit
on every row, so `predict` has one model to use.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagcons.audit.exclude import excluded_rows
from tagcons.data.pairs import PairColumns, PairTable, load_pairs
from tagcons.data.splits import SPLIT_KINDS, cv_fold_indices, train_test_split_indices
from tagcons.errors import BadInputError
from tagcons.evaluate.metrics import compute_metrics, majority_baseline, majority_label, pooled_and_per_fold
from tagcons.evaluate.plots import plot_training_curves
from tagcons.evaluate.rundir import CONFIG_FILE, METRICS_FILE, write_config, write_evaluation
from tagcons.heads.base import Head
from tagcons.heads.calibrate import calibrate_head, calibration_rows, check_decoding, evaluate_part, evaluation_report
from tagcons.heads.features import PairFeatures, check_kind, cosine_of
from tagcons.heads.join import cache_strip_hash, join_pairs, open_cache, report_missing
from tagcons.heads.registry import get_head_class, make_head
from tagcons.heads.threshold import STUDY_FIXED_CUTS, scores_from_cuts

log = logging.getLogger(__name__)
CURVES_FILE = "training_curves.png"


@dataclass
class FitHeadConfig:
    cache: str | Path
    data: str | Path
    head: str
    out: str | Path
    split: str = "images"  # "images" (grouped, no leak) or "pairs" (the study's split)
    cv: int | None = None  # K folds instead of one train/test split
    features: str = "concat"  # "concat" or "rich"
    seed: int = 42
    objective: str | None = None  # threshold: macro_f1|qwk; lgbm: multiclass|regression
    test_size: float = 0.2
    columns: PairColumns = field(default_factory=PairColumns)
    strip_hash: bool | None = None  # None: as the cache was embedded (its settings record --strip-hash)
    head_params: dict = field(default_factory=dict)  # head-specific hyperparameters, e.g. {"recipe": "robust"}
    overwrite: bool = False
    progress: bool = False
    decode: str = "argmax"  # "expected": sum k * p_k cut at four points chosen on the validation part
    val_size: float = 0.1  # share of the training part held out to fit the temperature and the cuts
    exclude_pairs: str | Path | None = None  # a CSV with image and hashtag columns (e.g. audit.csv) to leave out


@dataclass
class FitResult:
    run_dir: Path
    metrics: dict
    head: Head
    n_excluded: int


@dataclass
class _Data:
    table: PairTable  # present pairs only
    X: PairFeatures
    y: np.ndarray
    groups: np.ndarray | None  # images, when splits are grouped


def fit_head(config: FitHeadConfig) -> FitResult:
    _check_config(config)
    run_dir = _check_out(Path(config.out), config.overwrite)
    data, provenance, n_excluded = _load(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.cv:
        metrics, head = _cross_validate(config, data, run_dir, n_excluded)
    else:
        metrics, head = _holdout(config, data, run_dir, n_excluded)
    head.save(run_dir)
    if getattr(head, "history_", None):
        plot_training_curves(head.history_, run_dir / CURVES_FILE, title=f"{config.head} ({provenance['backbone']})")
    write_config(run_dir, _settings(config, head, provenance, data, n_excluded), provenance["fingerprint"])
    return FitResult(run_dir, metrics, head, n_excluded)


def _check_config(config: FitHeadConfig) -> None:
    get_head_class(config.head)
    check_kind(config.features)
    if config.split not in SPLIT_KINDS:
        raise BadInputError(f"unknown --split '{config.split}'; choose one of {', '.join(SPLIT_KINDS)}")
    if config.cv is not None and config.cv < 2:
        raise BadInputError(f"--cv {config.cv}: cross-validation needs at least 2 folds")
    probabilistic = _new_head(config).probabilistic
    check_decoding(config.decode, probabilistic, config.head, config.val_size)


def _check_out(run_dir: Path, overwrite: bool) -> Path:
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInputError(f"{run_dir}: exists and is not a directory; choose another --out")
    if not overwrite and ((run_dir / CONFIG_FILE).exists() or (run_dir / METRICS_FILE).exists()):
        raise BadInputError(f"{run_dir}: already holds a run; choose another --out or delete it")
    return run_dir


def _load(config: FitHeadConfig) -> tuple[_Data, dict, int]:
    with open_cache(config.cache) as cache:
        strip_hash = cache_strip_hash(cache) if config.strip_hash is None else config.strip_hash
        table = load_pairs(config.data, config.columns, strip_hash, require_labels=True)
        joined = join_pairs(cache, table, config.features)
        provenance = {"backbone": cache.backbone, "model_id": cache.model_id, "fingerprint": cache.fingerprint}
    if not joined.present.any():
        raise BadInputError(
            f"{config.cache}: none of the {len(table)} pairs in {config.data} has embeddings in this cache; "
            f"embed this pairs file into it with `tagcons embed --data {config.data} --out {config.cache} ...`"
        )
    report_missing(joined, table)
    keep = joined.present & ~excluded_rows(table, config.exclude_pairs, strip_hash)
    table = table.subset(np.flatnonzero(keep))
    joined.features = joined.features.subset(np.flatnonzero(keep[joined.present]))
    groups = table.images if config.split == "images" else None
    return _Data(table, joined.features, table.labels.astype(int), groups), provenance, joined.n_missing


def _new_head(config: FitHeadConfig) -> Head:
    params = dict(config.head_params)
    if config.progress and "progress" in get_head_class(config.head)._get_param_names():
        params["progress"] = True
    return make_head(config.head, config.objective, config.seed, params)


def _part_groups(data: _Data, rows: np.ndarray):
    return None if data.groups is None else data.groups[rows]


def _holdout(config: FitHeadConfig, data: _Data, run_dir: Path, n_excluded: int) -> tuple[dict, Head]:
    train, test = train_test_split_indices(data.y, data.table.images, config.split, config.test_size, config.seed)
    head, fit_rows, val_rows = _fit_calibrated(config, data, train)
    X_test = data.X.subset(test)
    part = evaluate_part(head, X_test, data.y[test])
    extra = {
        "n_train": len(fit_rows),
        "n_validation": len(val_rows),
        "n_excluded": n_excluded,
        "baseline": majority_baseline(data.y[train], data.y[test]),
        **evaluation_report([part], run_dir),
    }
    if config.head == "threshold":
        extra["study_fixed_interval"] = _fixed_interval(X_test, data.y[test])
    metrics = write_evaluation(run_dir, data.table.subset(test), part.pred, part.proba, extra, title=_title(config))
    return metrics, head


def _fit_calibrated(config: FitHeadConfig, data: _Data, rows: np.ndarray) -> tuple[Head, np.ndarray, np.ndarray]:
    """Fit a head on ``rows`` minus a validation part, then its temperature and cuts on that part."""
    head = _new_head(config)
    kind = "images" if data.groups is not None else "pairs"
    fit_rows, val_rows = calibration_rows(
        rows, data.y, data.groups, kind, config.val_size, config.seed, head.probabilistic
    )
    head.fit(data.X.subset(fit_rows), data.y[fit_rows], _part_groups(data, fit_rows))
    if head.probabilistic:
        calibrate_head(head, data.X.subset(val_rows), data.y[val_rows], config.decode)
    return head, fit_rows, val_rows


def _fixed_interval(X: PairFeatures, y: np.ndarray) -> dict:
    """The study's mapping: cosine in [0, 0.2) -> 1, [0.2, 0.4) -> 2, ... [0.8, 1] -> 5."""
    return compute_metrics(y, scores_from_cuts(cosine_of(X), STUDY_FIXED_CUTS))


def _cross_validate(config: FitHeadConfig, data: _Data, run_dir: Path, n_excluded: int) -> tuple[dict, Head]:
    folds = cv_fold_indices(data.y, data.table.images, config.split, config.cv, config.seed)
    outcomes, baseline_preds, parts = [], [], []
    for train, test in folds:
        head, _, _ = _fit_calibrated(config, data, train)
        parts.append(evaluate_part(head, data.X.subset(test), data.y[test]))
        outcomes.append((data.y[test], parts[-1].pred, parts[-1].proba))
        baseline_preds.append(np.full(len(test), majority_label(data.y[train])))
    pooled, per_fold = pooled_and_per_fold(outcomes)
    order = np.concatenate([test for _, test in folds])
    extra = {
        "cv": config.cv,
        "per_fold": per_fold,
        "n_excluded": n_excluded,
        "n_train": int(np.mean([len(train) for train, _ in folds])),  # mean training rows per fold
        "baseline": compute_metrics(data.y[order], np.concatenate(baseline_preds)),
        **evaluation_report(parts, run_dir, rows="out-of-fold"),
    }
    metrics = write_evaluation(
        run_dir,
        data.table.subset(order),
        np.concatenate([o[1] for o in outcomes]),
        np.concatenate([o[2] for o in outcomes]),
        extra,
        title=_title(config) + f", {config.cv}-fold",
    )
    log.info("refitting %s on all %d pairs for later predictions", config.head, len(data.y))
    final, _, _ = _fit_calibrated(config, data, np.arange(len(data.y)))
    return metrics, final


def _title(config: FitHeadConfig) -> str:
    return f"{config.head}, {config.features} features, {config.split} split"


def _settings(config: FitHeadConfig, head: Head, provenance: dict, data: _Data, n_excluded: int) -> dict:
    settings = dataclasses.asdict(config)
    settings.update(
        kind="fit-head",
        backbone=provenance["backbone"],
        model_id=provenance["model_id"],
        head_params_resolved=head.get_params(),
        n_pairs=len(data.y),
        n_excluded=n_excluded,
    )
    return settings
