"""`fit_head`: split the pairs honestly, join them to a cache, fit a head, evaluate, write the run directory.

Order matters. The split (or the CV folds) is computed on the whole table, after the optional
dedupe; rows that cannot be used (not in the cache, image failed) are then removed from the side
they fell on and counted (``n_dropped_fit``, ``n_dropped_test``), so a missing image never reshuffles
the test part: ``--split pairs`` keeps exactly the study's test rows minus the dropped ones.

Everything chosen from data (cut-points, C, early-stopping epoch, boosting rounds) is chosen on the
training part only; the test part is touched once, for the reported metrics, their image-clustered
bootstrap intervals and the shortcut baselines (majority, text-only, image-prior) fitted on the same
training part. With ``cv`` the metrics are pooled over K out-of-fold predictions (per-fold metrics
beside them) and the saved head is refit on every row, so `predict` has one model to use. Heads
with probabilities are fitted on their training part minus a validation part (``val_size``, grouped
like the split), on which their temperature and expected-score cuts are then fitted
(`tagcons.heads.calibrate`); metrics.json reports both decodings and the calibration. With
``repeats`` R > 1 the split (or the CV) is repeated with seeds seed..seed+R-1 and metrics.json gains
their mean, sd and pooled interval; the run's own predictions and head are the first seed's.
`fit_heads` fits several heads on one load and join of the cache, one run directory per head.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagcons.cache.lock import FileLock
from tagcons.configs import FitHeadConfig
from tagcons.data.exclude import leave_out_of_training
from tagcons.data.pairs import PairTable, resolve_columns
from tagcons.data.splits import SPLIT_KINDS, Partition, default_dedupe, folds_then_drop, split_then_drop
from tagcons.errors import BadInputError, CacheBusyError
from tagcons.evaluate.metrics import fold_summary, majority_label
from tagcons.evaluate.plots import plot_training_curves
from tagcons.evaluate.provenance import check_reuse, side_hashes, table_keys, write_side_keys
from tagcons.evaluate.provenance import split_spec as row_split_spec
from tagcons.evaluate.rundir import check_run_out, staged_run_dir, write_config, write_evaluation
from tagcons.heads.base import Head
from tagcons.heads.baselines import shortcut_predictions
from tagcons.heads.calibrate import calibrate_head, calibration_rows, check_decoding, evaluate_side, evaluation_report
from tagcons.heads.features import check_kind
from tagcons.heads.fit_data import _Data, _load, _Outcome, needs_features
from tagcons.heads.fit_metrics import _baseline_metrics, _cleaned_test, _per_fold, _repeats, _rows
from tagcons.heads.params import parse_head_params
from tagcons.heads.registry import get_head_class, make_head

log = logging.getLogger(__name__)
CURVES_FILE = "training_curves.png"
CACHE_REUSE = {
    "source": "the cache's backbone (fine-tuned by tagcons finetune)",
    "fix": "fit with the fine-tune's --split, --seed, --test-size and --dedupe (no --cv), or embed with a backbone "
    "fine-tuned on this run's training rows only",
}


@dataclass
class FitResult:
    run_dir: Path
    metrics: dict
    head: Head
    n_excluded: int  # pairs left out of the training side because --exclude-pairs lists them
    n_missing_embeddings: int = 0  # pairs left out because the cache has no embedding for them


def fit_head(config: FitHeadConfig) -> FitResult:
    config = with_given_folds(config)
    _check_config(config)
    with exclusive_out(Path(config.out)):
        check_run_out(Path(config.out), config.overwrite)
        data, provenance = _load(config)
        return _fit_loaded(_folds_counted(config, data), data, provenance)


def fit_heads(config: FitHeadConfig, heads: Sequence[str]) -> list[FitResult]:
    """Several heads on one join of the cache: one run per head in ``config.out/<head>``.

    ``objective`` and ``head_params`` go to the heads that have them (an error if none has one).
    """
    config = with_given_folds(config)
    _check_params_apply(config, heads)
    configs = [_config_for(config, name) for name in heads]
    for each in configs:
        _check_config(each)
    with exclusive_out(Path(config.out)):  # the checks, the staging and every final move: one writer at a time
        for each in configs:
            check_run_out(Path(each.out), each.overwrite)
        data, provenance = _load(config)
        return [_fit_loaded(_folds_counted(each, data), data, provenance) for each in configs]


def with_given_folds(config: FitHeadConfig) -> FitHeadConfig:
    """With --folds the rows are the given ones (--dedupe none unless asked); --cv and --repeats do not apply.
    The pairs file's columns are resolved here too (the published study's names are recognised)."""
    config = dataclasses.replace(config, columns=resolve_columns(config.data, config.columns))
    if config.folds is None:
        return config
    if config.cv is not None or config.repeats != 1:
        raise BadInputError(f"--folds {config.folds} gives the folds: drop --cv and --repeats")
    return dataclasses.replace(config, dedupe="none" if config.dedupe is None else config.dedupe)


def _folds_counted(config: FitHeadConfig, data: _Data) -> FitHeadConfig:
    """A config with given folds runs as K-fold cross-validation, K the file's number of folds."""
    return config if data.given is None else dataclasses.replace(config, cv=len(data.given.numbers))


@contextmanager
def exclusive_out(out: Path) -> Iterator[None]:
    """Hold `.<out>.lock` beside `out` exclusively (flock: dropped when the process dies), so a second
    fit-head into the same --out is refused at once instead of both writing the same runs."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"cannot create {out.parent}: {e.strerror}; choose another --out") from e
    lock_file = out.with_name(f".{out.name}.lock")
    lock = _out_lock(lock_file, out)
    try:
        yield
    finally:
        if lock.held and lock.writable:
            lock_file.unlink(missing_ok=True)  # still held: nobody can take the lock between these two lines
        lock.release()


def _out_lock(lock_file: Path, out: Path) -> FileLock:
    for _ in range(5):  # a file the previous holder unlinked as we locked it: lock the new one
        try:
            lock = FileLock(lock_file, out).acquire(read_only_ok=True)
        except CacheBusyError as e:
            raise BadInputError(
                f"{out}: another tagcons fit-head is writing runs there; wait for it to finish or choose another --out"
            ) from e
        if lock.still_at_path():
            return lock
        lock.release()
    raise BadInputError(f"{out}: its lock file {lock_file} keeps changing; is another fit-head starting there?")


def _check_params_apply(config: FitHeadConfig, heads: Sequence[str]) -> None:
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
    params.update(parse_head_params(cls, {k: v for k, v in params.items() if isinstance(v, str)}))  # --param text
    out = Path(config.out) / name
    return dataclasses.replace(config, head=name, out=out, objective=objective, head_params=params)


def _fit_loaded(config: FitHeadConfig, data: _Data, provenance: dict) -> FitResult:
    run_dir = Path(config.out)
    check_reuse(provenance.get("trained_keys"), table_keys(_tested_table(config, data)), **CACHE_REUSE)
    with staged_run_dir(run_dir) as work:  # a failure (full disk) leaves no half run behind
        outcomes = [_run_split(config, data, config.seed + r) for r in range(config.repeats)]
        metrics, head, side_keys = _write_run(config, data, outcomes, work)
        head.save(work)
        write_side_keys(work, side_keys)
        if getattr(head, "history_", None):
            plot_training_curves(head.history_, work / CURVES_FILE, title=f"{config.head} ({provenance['backbone']})")
        write_config(work, _config_record(config, head, provenance, data, side_keys), provenance["fingerprint"])
    return FitResult(run_dir, metrics, head, data.n_excluded, data.n_missing_embeddings)


def _check_config(config: FitHeadConfig) -> None:
    get_head_class(config.head)
    check_kind(config.features)
    if config.split not in SPLIT_KINDS:
        raise BadInputError(f"unknown --split '{config.split}'; choose one of {', '.join(SPLIT_KINDS)}")
    if config.cv is not None and config.cv < 2:
        raise BadInputError(f"--cv {config.cv}: cross-validation needs at least 2 folds")
    if config.repeats < 1:
        raise BadInputError(f"--repeats {config.repeats}: needs at least 1")
    default_dedupe(config.split, config.dedupe)
    if config.cache is None and needs_features(config.head):
        raise BadInputError(f"head '{config.head}' reads embeddings: pass --cache (a cache from `tagcons embed`)")
    check_decoding(config.decode, _new_head(config, config.seed).probabilistic, config.head, config.val_size)


def _tested_table(config: FitHeadConfig, data: _Data) -> PairTable:
    """Every usable pair this run tests on: each repeat's test part (every row under --cv)."""
    partitions = [p for r in range(config.repeats) for p in _partitions(config, data, config.seed + r)]
    return data.usable_table.subset(np.unique(np.concatenate([p.test for p in partitions])))


def _new_head(config: FitHeadConfig, seed: int) -> Head:
    params = dict(config.head_params)
    if config.progress and "progress" in get_head_class(config.head)._get_param_names():
        params["progress"] = True
    return make_head(config.head, config.objective, seed, params)


def _groups(config: FitHeadConfig, table: PairTable):
    return table.images if config.split == "images" else None


def _partitions(config: FitHeadConfig, data: _Data, seed: int) -> list[Partition]:
    return data.once((_compute_partitions, *_split_key(config, seed)), lambda: _compute_partitions(config, data, seed))


def _split_key(config: FitHeadConfig, seed: int) -> tuple:
    """What a seed's partitions depend on (the same for every head of one `fit_heads`)."""
    return (config.split, config.cv, None if config.cv else config.test_size, seed)


def _compute_partitions(config: FitHeadConfig, data: _Data, seed: int) -> list[Partition]:
    labels, groups = data.table.labels.astype(int), data.table.images
    if data.given is not None:
        return data.given.partitions(data.usable)
    if config.cv:
        partitions = folds_then_drop(labels, groups, data.usable, config.split, config.cv, seed)
    else:
        partitions = [split_then_drop(labels, groups, data.usable, config.split, config.test_size, seed)]
    return [leave_out_of_training(p, data.listed_usable) for p in partitions]


def _run_split(config: FitHeadConfig, data: _Data, seed: int) -> _Outcome:
    """Fit and predict every partition of one seed's split; baselines only for the run's own seed."""
    usable, y, X = data.usable_table, data.y, data.inputs(config.head)
    outcome = _Outcome(_partitions(config, data, seed), [], [], [])
    for index, partition in enumerate(outcome.partitions):
        head, _, validation = _fit_calibrated(config, data, partition.train, seed)
        evaluated = evaluate_side(head, X.subset(partition.test), y[partition.test], data.labels)
        outcome.heads.append(head)
        outcome.evaluated.append(evaluated)
        outcome.validation.append(validation)
        outcome.probas.append(evaluated.proba)  # calibrated, on the run's scale
        outcome.preds.append(evaluated.pred)  # under the chosen decoding
        if seed == config.seed:
            key = (_baseline_predictions, *_split_key(config, seed), index)
            predictions = data.once(key, lambda p=partition: _baseline_predictions(usable, y, p, data.labels))
            for name, pred in predictions.items():
                outcome.baselines.setdefault(name, []).append(pred)
    return outcome


def _fit_calibrated(config: FitHeadConfig, data: _Data, rows: np.ndarray, seed: int):
    """Fit a head on ``rows`` minus a validation part, then its temperature and cuts on that part.

    Returns (head, fit rows, validation rows); heads without probabilities fit on every row.
    """
    usable, y, X = data.usable_table, data.y, data.inputs(config.head)
    head = _new_head(config, seed)
    groups = usable.images if config.split == "images" else None
    key = (calibration_rows, config.split, config.val_size, seed, head.probabilistic, rows.tobytes())
    fit_rows, val_rows = data.once(
        key, lambda: calibration_rows(rows, y, groups, config.split, config.val_size, seed, head.probabilistic)
    )
    head.fit(X.subset(fit_rows), y[fit_rows], _groups(config, usable.subset(fit_rows)))
    if head.probabilistic:
        calibrate_head(head, X.subset(val_rows), y[val_rows], config.decode, data.labels, y[fit_rows])
    return head, fit_rows, val_rows


def _baseline_predictions(usable: PairTable, y: np.ndarray, partition: Partition, labels) -> dict[str, np.ndarray]:
    """Each baseline's predictions on a partition's test side, fitted on its training side."""
    train, test = partition.train, partition.test
    predictions = shortcut_predictions(usable.subset(train), y[train], usable.subset(test), labels)
    predictions["majority"] = (np.full(len(test), majority_label(y[train], labels)), None)
    return {name: pred for name, (pred, _) in predictions.items()}


def _write_run(config: FitHeadConfig, data: _Data, outcomes: list[_Outcome], run_dir: Path):
    first = outcomes[0]
    usable, y = data.usable_table, data.y
    rows = first.rows
    extra = {
        **_counts(config, data, first),
        "baselines": copy.deepcopy(
            data.once(
                (_baseline_metrics, *_split_key(config, config.seed)),
                lambda: _baseline_metrics(config, first, y, usable.images, data.labels),
            )
        ),
    }
    extra["baseline"] = extra["baselines"]["majority"]
    if config.cv:
        per_fold = _per_fold(first, y, data.labels)
        extra.update(cv=config.cv, per_fold=per_fold, fold_summary=fold_summary(per_fold))
    else:
        extra.update(first.heads[0].extra_test_metrics(data.inputs(config.head).subset(rows), y[rows]))
    if config.repeats > 1:
        extra["repeats"] = _repeats(config, usable, y, outcomes, data.labels)
    if data.n_excluded:
        extra["excluded_pairs"] = _cleaned_test(data, first)
    extra.update(evaluation_report(first.evaluated, run_dir, rows=_rows(config)))
    title = _title(config) + (f", {config.cv}-fold" if config.cv else "")
    pred, proba = np.concatenate(first.preds), np.concatenate(first.probas)
    metrics = write_evaluation(
        run_dir, usable.subset(rows), pred, proba, extra, title, data.labels, config.seed, rows=_rows(config)
    )
    head, fit_rows, validation = _final_head(config, data, first)
    return metrics, head, _side_keys(usable, first, fit_rows, validation)


def _counts(config: FitHeadConfig, data: _Data, outcome: _Outcome) -> dict:
    """Row bookkeeping: training size, what the dedupe removed and what each side of the split lost."""
    partitions = outcome.partitions
    dropped_fit, dropped_test = sum(p.n_dropped_fit for p in partitions), sum(p.n_dropped_test for p in partitions)
    if config.cv:  # every row is tested once; an unusable row is also missing from the refit's fit part
        dropped_fit = dropped_test
    if dropped_fit or dropped_test:
        log.warning(
            "%d training and %d test pairs dropped after the split (no embedding); the other test rows stay as split",
            dropped_fit,
            dropped_test,
        )
    n_train = [len(p.train) for p in partitions]
    return {
        "n_train": int(np.mean(n_train)),  # CV: mean training rows per fold
        "n_excluded": data.n_excluded,  # listed in --exclude-pairs: off the training sides, still tested
        "n_missing_embeddings": data.n_missing_embeddings,
        "n_dropped_fit": int(dropped_fit),
        "n_dropped_test": int(dropped_test),
        "n_validation": int(np.mean([len(v) for v in outcome.validation])),  # CV: mean per fold
        "n_duplicates_removed": data.n_duplicates_removed,
        "dedupe": default_dedupe(config.split, config.dedupe),
    }


def _final_head(config: FitHeadConfig, data: _Data, outcome: _Outcome):
    """(head, its fit rows, its validation rows): the run's own head, or with CV a refit on every row."""
    if not config.cv:
        validation = outcome.validation[0]
        return outcome.heads[0], np.setdiff1d(outcome.partitions[0].train, validation), validation
    rows = np.flatnonzero(~data.listed_usable)  # every pair --exclude-pairs does not list
    log.info("refitting %s on all %d pairs for later predictions", config.head, len(rows))
    return _fit_calibrated(config, data, rows, config.seed)


def _side_keys(usable: PairTable, outcome: _Outcome, fit_rows: np.ndarray, validation: np.ndarray) -> dict:
    """Pair keys of each side of the saved head; CV: the test side is every out-of-fold row."""
    keys = table_keys(usable)
    return {
        "fit": keys[fit_rows],
        "validation": keys[validation] if len(validation) else None,
        "test": keys[outcome.rows],
    }


def _title(config: FitHeadConfig) -> str:
    return f"{config.head}, {config.features} features, {config.split} split"


def split_spec(config: FitHeadConfig) -> dict:
    """config.json's ``split_spec``: everything needed to recompute the parts from the table."""
    return row_split_spec(
        config.split,
        config.seed,
        None if config.cv else config.test_size,
        cv=config.cv,
        repeats=config.repeats,
        dedupe=default_dedupe(config.split, config.dedupe),
        # the calibration part (heads with probabilities only); mlp and lgbm carve early stopping inside the fit part
        val_size=config.val_size if _new_head(config, config.seed).probabilistic else None,
    )


def _given_spec(config: FitHeadConfig, data: _Data) -> dict:
    """split_spec of given folds: the file (path, sha256, join) instead of a seed and a test size; ``grouping``
    is how the validation part is carved from each fold's training rows."""
    spec = {**split_spec(config), "kind": "given", "test_size": None, "grouping": config.split}
    spec["given_folds"] = data.given.record(config.key_col, config.fold_col)
    return spec


def _config_record(config: FitHeadConfig, head: Head, provenance: dict, data: _Data, side_keys: dict) -> dict:
    """config.json: the config plus what the run resolved (backbone, scale, split, side hashes)."""
    record = dataclasses.asdict(config)
    record.update(
        kind="fit-head",
        backbone=provenance["backbone"],
        model_id=provenance["model_id"],
        text_template=provenance["text_template"],
        cache_settings=provenance.get("cache_settings"),
        head_params_resolved=head.get_params(),
        n_pairs=int(data.usable.sum()),
        n_excluded=data.n_excluded,
        n_missing_embeddings=data.n_missing_embeddings,
        scale=str(data.table.scale),
        split_spec=_given_spec(config, data) if data.given is not None else split_spec(config),
        parts=side_hashes(side_keys),
    )
    if data.given is not None:  # compare's split column: the folds were given (split_spec's grouping: config.split)
        record["split"] = "given"
    return record
