"""`tagcons audit`: out-of-fold probabilities from image-grouped cross-validation, then cleanlab.

Every pair gets probabilities from a head that never saw it (nor any pair of its image): K folds
grouped by image; in each, the head is fitted on the rest, temperature-scaled on a validation part
carved from that rest, and scores the held-out fold. cleanlab's confident learning
(`cleanlab.filter.find_label_issues`) then estimates how many given scores are wrong (its confident
joint, pruned by noise rate). The scores are ordered, so by default (``rank_by="ordinal-distance"``)
the pairs are ranked by the expected ordinal distance Σ_k p_k·min(|k − given|, 2) (in scale steps: a
5 the model believes is a 3 before a 5 it believes is a 4) and the top that many are flagged;
``rank_by="self-confidence"`` keeps cleanlab's own call and its ranking by the out-of-fold
probability of the given score. The distance is capped at two steps because beyond that its size
says more about the model than about the label: on the demo cache the fold models confuse 1 with 5
(a colour the tiny backbone barely sees), and the uncapped distance ranked those confusions above
the planted flips (docs/audit.md, benchmarks/audit_detection.py). A cache whose backbone was
fine-tuned on any of the audited pairs is refused (its features have seen those scores), as fit-head
refuses one that saw its test part.

Outputs in ``out``: ``audit.csv`` (rank, image, hashtag, given_score, suggested_score, p_given,
expected_distance: the flagged pairs only, worst first; usable as ``fit-head --exclude-pairs``, which
leaves them out of the training side only) and ``audit.json`` (noise rate per given score from
cleanlab's estimated joint distribution, the given-vs-suggested confusion of the flagged pairs,
counts, the ranking and the out-of-fold macro-F1 of the fold models: a weak model flags many pairs).
The labels' own noise caps every metric a model can reach on them, so this list is worth reviewing
before comparing models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.configs import AUDIT_RANKINGS, AuditConfig
from tagcons.data.pairs import resolve_columns
from tagcons.data.splits import cv_fold_indices
from tagcons.errors import BadInputError
from tagcons.evaluate.calibration import columns_of
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.provenance import check_reuse, table_keys
from tagcons.evaluate.rundir import AUDIT_CSV, AUDIT_JSON, staged_run_dir, write_json
from tagcons.outputs import refuse_filled_folder

log = logging.getLogger(__name__)
SHOWN = 10
MAX_STEPS = 2  # the ordinal distance counts a disagreement of more steps as this many (see the module doc)
CACHE_REUSE = {
    "source": "the cache's backbone (fine-tuned by tagcons finetune)",
    "fix": "audit a cache embedded with a backbone that was not fine-tuned on these pairs (e.g. the pretrained one)",
}


@dataclass
class AuditResult:
    out: Path
    issues: pd.DataFrame  # audit.csv's rows
    summary: dict  # audit.json
    oof_proba: np.ndarray  # [n_pairs, K] out-of-fold probabilities, in the order of the pairs used
    ranking: np.ndarray  # every pair's row, worst label quality first


def run_audit(config: AuditConfig) -> AuditResult:
    from tagcons.heads.fit import FitHeadConfig

    if config.folds < 2:
        raise BadInputError(f"--folds {config.folds}: the audit needs at least 2 folds")
    if config.rank_by not in AUDIT_RANKINGS:
        raise BadInputError(f"unknown --rank-by '{config.rank_by}'; choose one of {', '.join(AUDIT_RANKINGS)}")
    if Path(config.out).exists() and not Path(config.out).is_dir():
        raise BadInputError(f"{config.out}: exists and is not a folder; pass a folder as --out")
    refuse_filled_folder(Path(config.out), (AUDIT_CSV, AUDIT_JSON), config.overwrite, holds="an audit")
    fit_config = FitHeadConfig(
        cache=config.cache,
        data=config.data,
        head=config.head,
        out=config.out,
        features=config.features,
        seed=config.seed,
        columns=resolve_columns(config.data, config.columns),
        head_params=config.head_params,
        val_size=config.val_size,
        progress=config.progress,
        scale=config.scale,
        folds=config.folds_file,
        key_col=config.key_col,
        fold_col=config.fold_col,
        allow_split_images=config.allow_split_images,
    )
    data = _training_data(fit_config)
    oof = out_of_fold_proba(fit_config, data, config.folds)
    record = {"head": config.head, "features": config.features, "folds": config.folds, "seed": config.seed}
    if data.given is not None:
        record.update(folds=len(data.given.numbers), given_folds=data.given.record(config.key_col, config.fold_col))
    return _write(Path(config.out), data, oof, {**record, "rank_by": config.rank_by})


def _training_data(fit_config):
    from tagcons.heads.fit import _check_config, with_given_folds  # the same join and checks fit-head uses
    from tagcons.heads.fit_data import _load

    fit_config = with_given_folds(fit_config)
    _check_config(fit_config)
    data, provenance = _load(fit_config)
    # every pair is held out once, so every pair is a test pair: none may have trained the backbone
    check_reuse(provenance.get("trained_keys"), table_keys(data.usable_table), **CACHE_REUSE)
    return data


def out_of_fold_proba(fit_config, data, folds: int) -> np.ndarray:
    """Calibrated probabilities of each pair from the fold model that did not train on its image."""
    from tagcons.heads.fit import _fit_calibrated

    oof = np.zeros((len(data.y), len(data.labels)))
    images = data.usable_table.images
    for number, (train, test) in enumerate(_folds(fit_config, data, images, folds)):
        head, _, _ = _fit_calibrated(fit_config, data, train, fit_config.seed)
        if not head.probabilistic:
            raise BadInputError(f"the audit needs a head with probabilities; '{fit_config.head}' only ranks")
        oof[test] = head.calibrated_proba(data.inputs(fit_config.head).subset(test), data.labels)
        log.info("audit fold %d/%d: %d pairs scored", number + 1, folds, len(test))
    return oof


def _folds(fit_config, data, images: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) over the usable rows: the given folds (``--folds-file``), else K image-grouped folds."""
    if data.given is not None:
        return [(p.train, p.test) for p in data.given.partitions(data.usable)]
    return cv_fold_indices(data.y, images, "images", folds, fit_config.seed)


def label_issues(
    y: np.ndarray, oof: np.ndarray, labels, rank_by: str = "ordinal-distance"
) -> tuple[np.ndarray, np.ndarray]:
    """(flagged rows worst first, every row worst first); ``oof`` has one column per score in ``labels``.

    How many are flagged is cleanlab's estimate either way (its confident joint, pruned by noise rate);
    ``rank_by`` decides the order and, for the ordinal distance, which pairs make that many."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    columns = columns_of(y, labels)
    flagged = np.asarray(find_label_issues(columns, oof, return_indices_ranked_by="self_confidence", n_jobs=1))
    if rank_by == "self-confidence":
        quality = get_label_quality_scores(columns, oof, method="self_confidence")
        return flagged.astype(np.int64), np.argsort(quality, kind="stable")
    ranking = np.argsort(-expected_distance(y, oof, labels), kind="stable")
    return ranking[: len(flagged)], ranking


def expected_distance(y: np.ndarray, oof: np.ndarray, labels, max_steps: int | None = MAX_STEPS) -> np.ndarray:
    """Σ_k p_k·min(|k − given|, max_steps) per pair, in steps of the scale: how far the model expects the
    true score to be from the given one (``max_steps`` None: uncapped). It equals P(wrong) + P(two or more
    steps wrong) with the default cap, and 1 - p_given (self-confidence) on a two-score scale."""
    columns = columns_of(y, labels)
    steps = np.abs(np.arange(len(labels))[None, :] - columns[:, None])
    if max_steps is not None:
        steps = np.minimum(steps, max_steps)
    return (np.asarray(oof) * steps).sum(axis=1)


def noise_rates(y: np.ndarray, oof: np.ndarray, labels) -> dict:
    """Estimated share of wrong labels per given score: 1 - P(true = k | given = k) from cleanlab's joint."""
    from cleanlab.count import estimate_joint

    joint = estimate_joint(columns_of(y, labels), oof)
    given = joint.sum(axis=1)
    rates = 1.0 - np.divide(np.diag(joint), given, out=np.ones(len(labels)), where=given > 0)
    return {str(k): float(rates[i]) for i, k in enumerate(labels)}


def _write(out: Path, data, oof: np.ndarray, config_record: dict) -> AuditResult:
    labels = data.labels
    flagged, ranking = label_issues(data.y, oof, labels, config_record["rank_by"])
    suggested = np.asarray(labels)[oof.argmax(axis=1)]
    issues = pd.DataFrame(
        {
            "rank": np.arange(1, len(flagged) + 1),
            "image": data.usable_table.images[flagged],
            "hashtag": data.usable_table.texts[flagged],
            "given_score": data.y[flagged],
            "suggested_score": suggested[flagged],
            "p_given": oof[flagged, columns_of(data.y[flagged], labels)],
            "expected_distance": expected_distance(data.y[flagged], oof[flagged], labels),
        }
    )
    summary = {
        "n_pairs": int(len(data.y)),
        "n_flagged": int(len(flagged)),
        "flagged_share": float(len(flagged) / max(len(data.y), 1)),
        "n_flagged_from": "cleanlab's confident joint (find_label_issues, prune_by_noise_rate)",
        "oof_macro_f1": compute_metrics(data.y, suggested, labels=labels)["macro_f1"],
        "noise_rate": noise_rates(data.y, oof, labels),
        "given_vs_suggested": _confusion(data.y[flagged], suggested[flagged], labels),
        "rows": "out-of-fold",
        **config_record,
    }
    with staged_run_dir(out) as work:  # a full disk or a read-only folder leaves no partial audit
        issues.to_csv(work / AUDIT_CSV, index=False)
        write_json(work / AUDIT_JSON, summary)
    return AuditResult(out, issues, summary, oof, ranking)


def _confusion(given: np.ndarray, suggested: np.ndarray, labels) -> dict:
    """{given score: {suggested score: count}} over the flagged pairs."""
    return {str(g): {str(s): int(np.sum((given == g) & (suggested == s))) for s in labels} for g in labels}


def top_lines(result: AuditResult, n: int = SHOWN) -> list[str]:
    """The first n flagged pairs as lines for the terminal."""
    rows = result.issues.head(n)
    return [
        f"{r.rank:>3}. {r.image}  {r.hashtag}  given {r.given_score}, suggested {r.suggested_score} "
        f"(p_given {r.p_given:.3f}, expected distance {r.expected_distance:.2f})"
        for r in rows.itertuples()
    ]
