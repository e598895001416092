"""What a fit-head run's metrics.json reports beside its headline: the baselines, the folds, the repeats.

Each part is computed on the rows it names (``rows``): the baselines on the pooled test rows, each fold on
its own test part, the repeats per seed and pooled, and with ``--exclude-pairs`` the cleaned test beside
(never instead of) the whole one.
"""

from __future__ import annotations

import numpy as np

from tagcons.configs import FitHeadConfig
from tagcons.data.pairs import PairTable
from tagcons.data.splits import distinct_partitions
from tagcons.evaluate.intervals import repeat_summary
from tagcons.evaluate.metrics import compute_metrics, majority_label, pooled_and_per_fold
from tagcons.heads.baselines import scored_baselines
from tagcons.heads.fit_data import _Data, _Outcome


def _baseline_metrics(config: FitHeadConfig, outcome: _Outcome, y: np.ndarray, images: np.ndarray, labels) -> dict:
    """Each baseline's metrics (and intervals) on the pooled test rows; with one split the majority one names its
    label (the training side's most common score)."""
    rows = outcome.rows
    predictions = {name: np.concatenate(preds) for name, preds in outcome.baselines.items()}
    metrics = scored_baselines(y[rows], predictions, images[rows], config.seed, labels, _rows(config))
    if len(outcome.partitions) == 1:
        metrics["majority"]["label"] = majority_label(y[outcome.partitions[0].train], labels)
    return metrics


def _cleaned_test(data: _Data, outcome: _Outcome) -> dict:
    """--exclude-pairs: the headline stays on the whole test part; beside it, never instead, the same
    predictions scored on the test rows the list does not name (rows the audit chose: selection, not skill)."""
    rows, pred = outcome.rows, np.concatenate(outcome.preds)
    kept = ~data.listed_usable[rows]
    record = {"n_listed": data.n_excluded, "n_listed_in_test": int((~kept).sum()), "left_out_of": "training sides"}
    if kept.any():
        metrics = compute_metrics(data.y[rows][kept], pred[kept], labels=data.labels)
        shown = ("accuracy", "macro_f1", "qwk", "mae", "n")
        record["cleaned_test"] = {"rows": "test rows not listed in --exclude-pairs", **{k: metrics[k] for k in shown}}
    return record


def _per_fold(outcome: _Outcome, y: np.ndarray, labels) -> list[dict]:
    folds = [(y[p.test], pred, proba) for p, pred, proba in zip(outcome.partitions, outcome.preds, outcome.probas)]
    per_fold = pooled_and_per_fold(folds, labels)[1]
    return [{**fold, "rows": f"test of fold {i}"} for i, fold in enumerate(per_fold, 1)]


def _repeats(config: FitHeadConfig, usable: PairTable, y: np.ndarray, outcomes: list[_Outcome], labels) -> dict:
    pooled = [(y[o.rows], np.concatenate(o.preds), usable.images[o.rows], np.concatenate(o.probas)) for o in outcomes]
    seeds = [config.seed + r for r in range(config.repeats)]
    summary = repeat_summary(pooled, seeds, bootstrap_seed=config.seed, labels=labels)
    summary["distinct_splits"] = distinct_partitions(seeds, [o.partitions for o in outcomes])
    what = "out-of-fold rows of" if config.cv else "test of"
    summary["per_seed"] = [{**s, "rows": f"{what} seed {seed}'s split"} for s, seed in zip(summary["per_seed"], seeds)]
    summary["rows"] = f"{what} each seed's split; ci95_pooled resamples them all"
    return summary


def _rows(config: FitHeadConfig) -> str:
    """The rows a run's metrics are computed on (docs/metrics.md): its test part, or every out-of-fold row."""
    return "out-of-fold" if config.cv else "test"
