"""After training: a temperature and expected-score cut-points fitted on the validation part.

For a head with class weights the calibrated probabilities also divide the weights back out
(`prior_correction`): balanced weights shift a head's probabilities towards the rare scores, which a
temperature cannot undo; the decisions (argmax, median) stay the weighted head's own.

The validation part is carved from the training rows (grouped by image when the split is) before
the head is fitted, so neither the temperature nor the cut-points ever see a row the head trained
on, nor a test row. `evaluate_side` then scores a side (a partition's test rows) with the calibrated
probabilities under both decodings; `evaluation_report` turns the evaluated sides into metrics.json's
`calibration`, `decodings` and `decode` entries and draws reliability.png.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagcons.data.splits import validation_indices
from tagcons.errors import BadInputError
from tagcons.evaluate.calibration import calibration_metrics, fit_temperature, reliability_bins
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.plots import plot_reliability
from tagcons.heads.base import class_weighting
from tagcons.heads.decode import DECODINGS, ScoreRule, check_decode, fit_expected_cuts, identity_cuts
from tagcons.labels import LABELS

log = logging.getLogger(__name__)
RELIABILITY_FILE = "reliability.png"
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "mae", "qwk", "spearman")


@dataclass
class EvaluatedSide:
    y: np.ndarray
    raw: np.ndarray  # the head's probabilities before temperature scaling
    proba: np.ndarray  # calibrated
    by_decode: dict[str, np.ndarray]  # scores under each decoding
    pred: np.ndarray  # scores under the chosen decoding
    rule: ScoreRule
    probabilistic: bool = True
    labels: tuple[int, ...] = LABELS  # the scale: one probability column per score


def calibration_rows(rows, y, groups, kind: str, val_size: float, seed: int, probabilistic: bool):
    """(fit rows, validation rows) of a training part; no validation part for heads without probabilities."""
    rows = np.asarray(rows)
    if not probabilistic or val_size <= 0:
        return rows, rows[:0]
    return validation_indices(rows, y, groups, kind, val_size, seed)


def check_decoding(decode: str, probabilistic: bool, head_name: str, val_size: float) -> None:
    check_decode(decode)
    if decode != "argmax" and not probabilistic:
        raise BadInputError(f"--decode {decode} needs a head with probabilities; '{head_name}' only ranks")
    if decode == "expected" and val_size <= 0:
        raise BadInputError("--decode expected chooses its cut-points on the validation part; use --val-size > 0")


def fit_rule(raw_val: np.ndarray, y_val: np.ndarray, decode: str, labels=LABELS, prior=None) -> ScoreRule:
    """Temperature on held-out probabilities (one column per score in ``labels``), then expected-score
    cuts on the calibrated ones. ``prior`` (`prior_correction`) divides the head's class weights out of the
    tempered probabilities, and the temperature is fitted with it."""
    if len(y_val) == 0:
        return ScoreRule(decode="argmax", prior=prior)
    if len(np.unique(y_val)) < 2:
        return _uncalibrated_rule(y_val, decode, labels, prior)
    temperature = fit_temperature(raw_val, y_val, labels, prior)
    cuts = fit_expected_cuts(ScoreRule(temperature=temperature, prior=prior).proba(raw_val), y_val, labels)
    cut_scores = np.unique(np.asarray(y_val).astype(int))  # the scores the cuts separate
    log.info("calibrated on %d validation pairs: temperature %.3f", len(y_val), temperature)
    cuts, cut_scores = tuple(float(c) for c in cuts), tuple(int(s) for s in cut_scores)
    return ScoreRule(temperature, decode, cuts, cut_scores, prior)


def _uncalibrated_rule(y_val: np.ndarray, decode: str, labels, prior=None) -> ScoreRule:
    """Temperature 1 and the expected score rounded to the nearest score: one score fits no temperature nor cuts."""
    log.warning(
        "the validation part holds only score %s (%d pairs): no temperature nor cut-points can be fitted on it, "
        "so the head keeps temperature 1 and the expected score rounds to the nearest score; a larger --val-size "
        "(or more pairs of other scores) calibrates it",
        int(np.asarray(y_val)[0]),
        len(y_val),
    )
    cuts, cut_scores = tuple(float(c) for c in identity_cuts(labels)), tuple(int(s) for s in labels)
    return ScoreRule(temperature=1.0, decode=decode, cuts=cuts, cut_scores=cut_scores, prior=prior)


def prior_correction(head, y_fit, labels=LABELS) -> tuple[float, ...] | None:
    """Per score of the scale, 1 / w_k for the class weights w the head fitted ``y_fit`` with (1 off its
    classes); None for a head that weights no classes.

    Weighting class k by w_k multiplies its odds in the fitted probabilities by about w_k (a prior shift:
    balanced weights make every score look equally common), which one temperature cannot undo."""
    weights = class_weighting(getattr(head, "class_weight", None), np.asarray(y_fit).astype(int), head.classes_)
    if weights is None:
        return None
    prior = np.ones(len(labels))
    prior[np.searchsorted(np.asarray(labels), head.classes_)] = np.divide(
        1.0, weights, out=np.ones_like(weights), where=weights > 0
    )
    return tuple(float(m) for m in prior)


def calibrate_head(head, X_val, y_val, decode: str, labels=LABELS, y_fit=None) -> ScoreRule:
    """Fit the head's rule on the validation part; the head keeps it (and saves it in head.json).

    ``y_fit``, the scores the head was fitted on, gives the class weights to divide out (`prior_correction`)."""
    prior = None if y_fit is None else prior_correction(head, y_fit, labels)
    head.rule_ = fit_rule(head.scale_proba(X_val, labels) if len(y_val) else None, y_val, decode, labels, prior)
    return head.rule_


def evaluate_side(head, X, y, labels=LABELS) -> EvaluatedSide:
    """Calibrated probabilities (on the scale ``labels``) and scores of one evaluated side under every decoding."""
    raw = head.scale_proba(X, labels)
    if not head.probabilistic:
        pred = head.predict(X)
        return EvaluatedSide(np.asarray(y), raw, raw, {"argmax": pred}, pred, head.rule_, False, tuple(labels))
    return evaluate_probabilities(raw, y, head.rule_, labels)


def evaluate_probabilities(raw: np.ndarray, y, rule: ScoreRule, labels=LABELS) -> EvaluatedSide:
    """The same for any model's raw probabilities (the fine-tuned model's softmax, for one)."""
    proba = rule.proba(raw)
    by_decode = {d: rule.scores(proba, d, labels) for d in DECODINGS if d != "expected" or rule.cuts is not None}
    return EvaluatedSide(np.asarray(y), raw, proba, by_decode, by_decode[rule.decode], rule, labels=tuple(labels))


def _pooled(sides: list[EvaluatedSide], attribute: str) -> np.ndarray:
    return np.concatenate([getattr(p, attribute) for p in sides])


def evaluation_report(sides: list[EvaluatedSide], run_dir: Path, rows: str = "test") -> dict:
    """metrics.json entries: decode, decodings (headline metrics per decoding), calibration; draws reliability.png."""
    y, labels = _pooled(sides, "y"), sides[0].labels
    report = {"decode": sides[0].rule.decode, "decodings": _decodings(sides, y, labels, rows)}
    if not all(p.probabilistic for p in sides):
        report["calibration"] = None
        return report
    raw, proba = _pooled(sides, "raw"), _pooled(sides, "proba")
    before, after = calibration_metrics(raw, y, labels), calibration_metrics(proba, y, labels)
    temperatures = [p.rule.temperature for p in sides]
    report["calibration"] = {
        "temperature": temperatures[0] if len(temperatures) == 1 else float(np.mean(temperatures)),
        "prior": sides[0].rule.prior,  # per score: 1 / class weight, divided out of the probabilities (None: none)
        "rows": rows,
        "before": before,
        "after": after,
    }
    if len(temperatures) > 1:
        report["calibration"]["per_fold_temperature"] = temperatures
    curves = {
        f"before (ECE {before['ece']:.3f})": reliability_bins(raw, y, labels=labels),
        f"after, T={report['calibration']['temperature']:.2f} (ECE {after['ece']:.3f})": reliability_bins(
            proba, y, labels=labels
        ),
    }
    plot_reliability(curves, Path(run_dir) / RELIABILITY_FILE, title=f"reliability on the {rows} part")
    return report


def _decodings(sides: list[EvaluatedSide], y: np.ndarray, labels=LABELS, rows: str = "test") -> dict:
    out = {}
    for decode in DECODINGS:
        if all(decode in p.by_decode for p in sides):
            metrics = compute_metrics(y, np.concatenate([p.by_decode[decode] for p in sides]), labels=labels)
            out[decode] = {**{k: metrics[k] for k in HEADLINE}, "rows": rows}
        else:
            out[decode] = None
    return out
