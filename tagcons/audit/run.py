"""`tagcons audit`: out-of-fold probabilities from image-grouped cross-validation, then cleanlab.

Every pair gets probabilities from a head that never saw it (nor any pair of its image): K folds
grouped by image; in each, the head is fitted on the rest, temperature-scaled on a validation part
carved from that rest, and scores the held-out fold. cleanlab's confident learning
(`cleanlab.filter.find_label_issues`) then flags the pairs whose given score disagrees with what
the rest of the data implies, ranked worst first by its self-confidence quality score (the
out-of-fold probability of the given score).

Outputs in ``out``: ``audit.csv`` (rank, image, hashtag, given_score, suggested_score, p_given,
quality: the flagged pairs only, worst first; usable as ``fit-head --exclude-pairs``) and
``audit.json`` (noise rate per given score from cleanlab's estimated joint distribution, the
given-vs-suggested confusion of the flagged pairs, counts). The labels' own noise caps every
metric a model can reach on them, so this list is worth reviewing before comparing models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.configs import AuditConfig
from tagcons.data.splits import cv_fold_indices
from tagcons.errors import BadInputError
from tagcons.evaluate.calibration import columns_of
from tagcons.evaluate.rundir import write_json
from tagcons.outputs import refuse_filled_folder

log = logging.getLogger(__name__)
AUDIT_CSV = "audit.csv"
AUDIT_JSON = "audit.json"
SHOWN = 10


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
    refuse_filled_folder(Path(config.out), (AUDIT_CSV, AUDIT_JSON), config.overwrite, holds="an audit")
    fit_config = FitHeadConfig(
        cache=config.cache,
        data=config.data,
        head=config.head,
        out=config.out,
        features=config.features,
        seed=config.seed,
        columns=config.columns,
        head_params=config.head_params,
        val_size=config.val_size,
        progress=config.progress,
        scale=config.scale,
    )
    data = _training_data(fit_config)
    oof = out_of_fold_proba(fit_config, data, config.folds)
    return _write(Path(config.out), data, oof, {"head": config.head, "folds": config.folds, "seed": config.seed})


def _training_data(fit_config):
    from tagcons.heads.fit import _check_config, _load  # the same join and checks fit-head uses

    _check_config(fit_config)
    data, _ = _load(fit_config)
    return data


def out_of_fold_proba(fit_config, data, folds: int) -> np.ndarray:
    """Calibrated probabilities of each pair from the fold model that did not train on its image."""
    from tagcons.heads.fit import _fit_calibrated

    oof = np.zeros((len(data.y), len(data.labels)))
    images = data.usable_table.images
    for number, (train, test) in enumerate(cv_fold_indices(data.y, images, "images", folds, fit_config.seed)):
        head, _, _ = _fit_calibrated(fit_config, data, train, fit_config.seed)
        if not head.probabilistic:
            raise BadInputError(f"the audit needs a head with probabilities; '{fit_config.head}' only ranks")
        oof[test] = head.calibrated_proba(data.inputs(fit_config.head).subset(test), data.labels)
        log.info("audit fold %d/%d: %d pairs scored", number + 1, folds, len(test))
    return oof


def label_issues(y: np.ndarray, oof: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """(flagged rows worst first, every row worst first) by cleanlab's self-confidence quality;
    ``oof`` has one column per score in ``labels`` (the run's scale)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    columns = columns_of(y, labels)
    flagged = find_label_issues(columns, oof, return_indices_ranked_by="self_confidence", n_jobs=1)
    quality = get_label_quality_scores(columns, oof, method="self_confidence")
    return np.asarray(flagged, dtype=np.int64), np.argsort(quality, kind="stable")


def noise_rates(y: np.ndarray, oof: np.ndarray, labels) -> dict:
    """Estimated share of wrong labels per given score: 1 - P(true = k | given = k) from cleanlab's joint."""
    from cleanlab.count import estimate_joint

    joint = estimate_joint(columns_of(y, labels), oof)
    given = joint.sum(axis=1)
    rates = 1.0 - np.divide(np.diag(joint), given, out=np.ones(len(labels)), where=given > 0)
    return {str(k): float(rates[i]) for i, k in enumerate(labels)}


def _write(out: Path, data, oof: np.ndarray, config_record: dict) -> AuditResult:
    labels = data.labels
    flagged, ranking = label_issues(data.y, oof, labels)
    suggested = np.asarray(labels)[oof.argmax(axis=1)]
    issues = pd.DataFrame(
        {
            "rank": np.arange(1, len(flagged) + 1),
            "image": data.usable_table.images[flagged],
            "hashtag": data.usable_table.texts[flagged],
            "given_score": data.y[flagged],
            "suggested_score": suggested[flagged],
            "p_given": oof[flagged, columns_of(data.y[flagged], labels)],
        }
    )
    summary = {
        "n_pairs": int(len(data.y)),
        "n_flagged": int(len(flagged)),
        "flagged_share": float(len(flagged) / max(len(data.y), 1)),
        "noise_rate": noise_rates(data.y, oof, labels),
        "given_vs_suggested": _confusion(data.y[flagged], suggested[flagged], labels),
        "rows": "out-of-fold",
        **config_record,
    }
    out.mkdir(parents=True, exist_ok=True)
    issues.to_csv(out / AUDIT_CSV, index=False)
    write_json(out / AUDIT_JSON, summary)
    return AuditResult(out, issues, summary, oof, ranking)


def _confusion(given: np.ndarray, suggested: np.ndarray, labels) -> dict:
    """{given score: {suggested score: count}} over the flagged pairs."""
    return {str(g): {str(s): int(np.sum((given == g) & (suggested == s))) for s in labels} for g in labels}


def top_lines(result: AuditResult, n: int = SHOWN) -> list[str]:
    """The first n flagged pairs as lines for the terminal."""
    rows = result.issues.head(n)
    return [
        f"{r.rank:>3}. {r.image}  {r.hashtag}  given {r.given_score}, suggested {r.suggested_score} "
        f"(p_given {r.p_given:.3f})"
        for r in rows.itertuples()
    ]
