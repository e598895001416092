"""`fit_head`: join pairs to a cache, split honestly, fit a head, evaluate, write the run directory.

Everything chosen from data (cut-points, C, early-stopping epoch, boosting rounds) is chosen on the
training part only; the test part is touched once, for the reported metrics. With ``cv`` the metrics
are pooled over K out-of-fold predictions (per-fold metrics beside them) and the saved head is refit
on every row, so `predict` has one model to use.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagcons.data.pairs import PairColumns, PairTable, load_pairs
from tagcons.data.splits import SPLIT_KINDS, cv_fold_indices, train_test_split_indices
from tagcons.errors import BadInputError
from tagcons.evaluate.metrics import compute_metrics, majority_baseline, majority_label, pooled_and_per_fold
from tagcons.evaluate.plots import plot_training_curves
from tagcons.evaluate.rundir import CONFIG_FILE, METRICS_FILE, write_config, write_evaluation
from tagcons.heads.base import Head, on_scale
from tagcons.heads.features import PairFeatures, check_kind
from tagcons.heads.join import cache_strip_hash, join_pairs, open_cache, report_missing
from tagcons.heads.registry import get_head_class, make_head
from tagcons.labels import DEFAULT_SCALE

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
    scale: str = str(DEFAULT_SCALE)  # "LOW-HIGH" (the study's 1-5) or "auto": the labels' own range
    strip_hash: bool | None = None  # None: as the cache was embedded (its settings record --strip-hash)
    head_params: dict = field(default_factory=dict)  # head-specific hyperparameters, e.g. {"recipe": "robust"}
    overwrite: bool = False
    progress: bool = False


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
    _check_out(Path(config.out), config.overwrite)
    return _fit_loaded(config, *_load(config))


def fit_heads(config: FitHeadConfig, heads: Sequence[str]) -> list[FitResult]:
    """Several heads on one join of the cache: one run per head in ``config.out/<head>``.

    ``objective`` and ``head_params`` go to the heads that have them (an error if none has one).
    """
    _check_settings_apply(config, heads)
    configs = [_config_for(config, name) for name in heads]
    for each in configs:
        _check_config(each)
        _check_out(Path(each.out), each.overwrite)
    loaded = _load(config)
    return [_fit_loaded(each, *loaded) for each in configs]


def _check_settings_apply(config: FitHeadConfig, heads: Sequence[str]) -> None:
    classes = [get_head_class(name) for name in heads]
    for key in config.head_params:
        if not any(key in cls._get_param_names() for cls in classes):
            raise BadInputError(f"--param {key}: none of the heads {', '.join(heads)} has this setting")
    if config.objective and not any(config.objective in cls.OBJECTIVES for cls in classes):
        raise BadInputError(f"--objective {config.objective} applies to none of the heads {', '.join(heads)}")


def _config_for(config: FitHeadConfig, name: str) -> FitHeadConfig:
    cls = get_head_class(name)
    accepted = set(cls._get_param_names())
    objective = config.objective if config.objective in cls.OBJECTIVES else None
    params = {k: v for k, v in config.head_params.items() if k in accepted}
    out = Path(config.out) / name
    return dataclasses.replace(config, head=name, out=out, objective=objective, head_params=params)


def _fit_loaded(config: FitHeadConfig, data: _Data, provenance: dict, n_excluded: int) -> FitResult:
    run_dir = Path(config.out)
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


def _check_out(run_dir: Path, overwrite: bool) -> Path:
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInputError(f"{run_dir}: exists and is not a directory; choose another --out")
    if not overwrite and ((run_dir / CONFIG_FILE).exists() or (run_dir / METRICS_FILE).exists()):
        raise BadInputError(f"{run_dir}: already holds a run; choose another --out or delete it")
    return run_dir


def _load(config: FitHeadConfig) -> tuple[_Data, dict, int]:
    with open_cache(config.cache) as cache:
        strip_hash = cache_strip_hash(cache) if config.strip_hash is None else config.strip_hash
        table = load_pairs(config.data, config.columns, strip_hash, require_labels=True, scale=config.scale)
        joined = join_pairs(cache, table, config.features)
        provenance = {"backbone": cache.backbone, "model_id": cache.model_id, "fingerprint": cache.fingerprint}
    report_missing(joined, table, f"; add them with: tagcons embed --data {config.data} --out {config.cache} ...")
    table = table.subset(np.flatnonzero(joined.present))
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
    head = _new_head(config).fit(data.X.subset(train), data.y[train], _part_groups(data, train))
    X_test = data.X.subset(test)
    labels = data.table.scale.labels
    proba, pred = _scale_proba(head, X_test, labels), head.predict(X_test)
    extra = {
        "n_train": len(train),
        "n_excluded": n_excluded,
        "baseline": majority_baseline(data.y[train], data.y[test], labels),
    }
    extra.update(head.extra_test_metrics(X_test, data.y[test]))
    metrics = write_evaluation(
        run_dir, data.table.subset(test), pred, proba, extra, title=_title(config), labels=labels
    )
    return metrics, head


def _cross_validate(config: FitHeadConfig, data: _Data, run_dir: Path, n_excluded: int) -> tuple[dict, Head]:
    folds = cv_fold_indices(data.y, data.table.images, config.split, config.cv, config.seed)
    outcomes, baseline_preds = [], []
    labels = data.table.scale.labels
    for train, test in folds:
        head = _new_head(config).fit(data.X.subset(train), data.y[train], _part_groups(data, train))
        X_test = data.X.subset(test)
        outcomes.append((data.y[test], head.predict(X_test), _scale_proba(head, X_test, labels)))
        baseline_preds.append(np.full(len(test), majority_label(data.y[train], labels)))
    pooled, per_fold = pooled_and_per_fold(outcomes, labels)
    order = np.concatenate([test for _, test in folds])
    extra = {
        "cv": config.cv,
        "per_fold": per_fold,
        "n_excluded": n_excluded,
        "n_train": int(np.mean([len(train) for train, _ in folds])),  # mean training rows per fold
        "baseline": compute_metrics(data.y[order], np.concatenate(baseline_preds), labels=labels),
    }
    metrics = write_evaluation(
        run_dir,
        data.table.subset(order),
        np.concatenate([o[1] for o in outcomes]),
        np.concatenate([o[2] for o in outcomes]),
        extra,
        title=_title(config) + f", {config.cv}-fold",
        labels=labels,
    )
    log.info("refitting %s on all %d pairs for later predictions", config.head, len(data.y))
    final = _new_head(config).fit(data.X, data.y, data.groups)
    return metrics, final


def _scale_proba(head: Head, X, labels) -> np.ndarray:
    """The head's probabilities with one column per score of the scale (zeros for scores it never saw)."""
    return on_scale(head.predict_proba(X), head.classes_, labels)


def _title(config: FitHeadConfig) -> str:
    return f"{config.head}, {config.features} features, {config.split} split"


def _settings(config: FitHeadConfig, head: Head, provenance: dict, data: _Data, n_excluded: int) -> dict:
    settings = dataclasses.asdict(config)
    settings.update(
        kind="fit-head",
        scale=str(data.table.scale),
        backbone=provenance["backbone"],
        model_id=provenance["model_id"],
        head_params_resolved=head.get_params(),
        n_pairs=len(data.y),
        n_excluded=n_excluded,
    )
    return settings
