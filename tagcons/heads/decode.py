"""From score probabilities to one score: argmax, the median, or the expected score cut at four learned points.

``expected`` takes sum_k k * p_k (a number in [1, 5] that keeps the order of the scores) and rounds
it with four cut-points chosen on held-out rows (the validation part) by the threshold head's exact
cut search, maximising QWK. ``median`` takes the smallest score whose cumulative probability reaches
1/2: the Bayes decision under absolute error, and for a cumulative-link model (the ordinal head) its
latent-interval rule, which never skips a score the way argmax can. `ScoreRule` is what a head keeps
after training: its temperature, the class weights to divide out, the decoding and the cut-points; it is
saved in head.json as plain numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from tagcons.errors import BadInputError
from tagcons.evaluate.calibration import apply_temperature, reweighted
from tagcons.heads.cuts import scores_from_cuts, search_cuts
from tagcons.labels import LABELS

DECODINGS = ("argmax", "expected", "median")
CUT_OBJECTIVE = "qwk"


def check_decode(decode: str) -> None:
    if decode not in DECODINGS:
        raise BadInputError(f"unknown --decode '{decode}'; choose one of {', '.join(DECODINGS)}")


def expected_score(proba: np.ndarray, labels=LABELS) -> np.ndarray:
    return np.asarray(proba, dtype=np.float64) @ np.asarray(labels, dtype=np.float64)


def fit_expected_cuts(proba: np.ndarray, y: np.ndarray, labels=LABELS) -> np.ndarray:
    """K-1 cut-points on the expected score separating the K scores in y (``np.unique(y)``), maximising
    QWK on these rows (exact search)."""

    cuts, _ = search_cuts(expected_score(proba, labels), np.asarray(y).astype(int), CUT_OBJECTIVE)
    return cuts


def identity_cuts(labels=LABELS) -> np.ndarray:
    """Cut-points halfway between neighbouring scores: the expected score rounded to the nearest score."""
    labels = np.asarray(labels, dtype=np.float64)
    return (labels[:-1] + labels[1:]) / 2


def median_columns(proba: np.ndarray) -> np.ndarray:
    """Per row, the first column whose cumulative probability reaches 1/2 (rounding spared)."""
    cumulative = np.cumsum(np.asarray(proba, dtype=np.float64), axis=1)
    return np.argmax(cumulative >= 0.5 * cumulative[:, -1:] - 1e-12, axis=1)


def decode_scores(proba: np.ndarray, decode: str, cuts=None, labels=LABELS, cut_scores=None) -> np.ndarray:
    """Scores on the scale ``labels`` (the probability columns): argmax, or the expected score cut at
    ``cuts`` into ``cut_scores`` (the scores seen when the cuts were fitted; default every label)."""
    if decode == "median":
        return np.asarray(labels)[median_columns(proba)]
    if decode == "argmax" or cuts is None:
        return np.asarray(labels)[np.argmax(proba, axis=1)]

    return scores_from_cuts(expected_score(proba, labels), cuts, labels if cut_scores is None else cut_scores)


@dataclass(frozen=True)
class ScoreRule:
    """Post-training rule of a head: probabilities -> softmax(log p / temperature) -> decoded score."""

    temperature: float = 1.0
    decode: str = "argmax"
    cuts: tuple[float, ...] | None = None  # on the expected score; None before calibration
    cut_scores: tuple[int, ...] | None = None  # the scores the cuts separate (None: every label of the scale)
    # per score of the scale: the multiplier undoing the head's class weights (1 / w_k), None when unweighted
    prior: tuple[float, ...] | None = None

    def proba(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities: softmax(log p / T), then the class weights' shift divided out
        (times ``prior``, renormalised)."""
        return apply_temperature(raw, self.temperature, self.prior)

    def decision_proba(self, proba: np.ndarray) -> np.ndarray:
        """The class-weighted head's own tempered probabilities, softmax(log raw / T), from calibrated ones:
        what argmax decides on, so the balanced weights stay the decision's costs (and argmax the head's)."""
        return proba if self.prior is None else reweighted(proba, 1.0 / np.asarray(self.prior, dtype=np.float64))

    def scores(self, proba: np.ndarray, decode: str | None = None, labels=LABELS) -> np.ndarray:
        """Scores of calibrated probabilities with one column per score in ``labels`` (the run's scale):
        argmax on the head's own (class-weighted) probabilities, the expected score on the calibrated ones."""
        decode = decode or self.decode
        decided = proba if decode == "expected" else self.decision_proba(proba)
        return decode_scores(decided, decode, self.cuts, labels, self.cut_scores)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload: dict | None) -> ScoreRule:
        payload = dict(payload or {})
        if payload.get("cuts") is not None:
            payload["cuts"] = tuple(float(c) for c in payload["cuts"])
        if payload.get("cut_scores") is not None:
            payload["cut_scores"] = tuple(int(c) for c in payload["cut_scores"])
        if payload.get("prior") is not None:
            payload["prior"] = tuple(float(c) for c in payload["prior"])
        return cls(**payload)
