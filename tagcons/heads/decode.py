"""From score probabilities to one score: argmax, or the expected score cut at four learned points.

``expected`` takes sum_k k * p_k (a number in [1, 5] that keeps the order of the scores) and rounds
it with four cut-points chosen on held-out rows (the validation part) by the threshold head's exact
cut search, maximising QWK. `ScoreRule` is what a head keeps after training: its temperature, the
decoding and the cut-points; it is saved in head.json as plain numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from tagcons.errors import BadInputError
from tagcons.evaluate.calibration import apply_temperature
from tagcons.evaluate.metrics import LABELS

DECODINGS = ("argmax", "expected")
CUT_OBJECTIVE = "qwk"


def check_decode(decode: str) -> None:
    if decode not in DECODINGS:
        raise BadInputError(f"unknown --decode '{decode}'; choose one of {', '.join(DECODINGS)}")


def expected_score(proba: np.ndarray) -> np.ndarray:
    return np.asarray(proba, dtype=np.float64) @ np.asarray(LABELS, dtype=np.float64)


def fit_expected_cuts(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Four cut-points on the expected score that maximise QWK on these rows (exact search)."""
    from tagcons.heads.threshold import search_cuts  # the threshold head imports heads.base, which imports this

    cuts, _ = search_cuts(expected_score(proba), np.asarray(y).astype(int), CUT_OBJECTIVE)
    return cuts


def decode_scores(proba: np.ndarray, decode: str, cuts=None) -> np.ndarray:
    if decode == "argmax" or cuts is None:
        return np.asarray(LABELS)[np.argmax(proba, axis=1)]
    from tagcons.heads.threshold import scores_from_cuts

    return scores_from_cuts(expected_score(proba), cuts)


@dataclass(frozen=True)
class ScoreRule:
    """Post-training rule of a head: probabilities -> softmax(log p / temperature) -> decoded score."""

    temperature: float = 1.0
    decode: str = "argmax"
    cuts: tuple[float, ...] | None = None  # on the expected score; None before calibration

    def proba(self, raw: np.ndarray) -> np.ndarray:
        return apply_temperature(raw, self.temperature)

    def scores(self, proba: np.ndarray, decode: str | None = None) -> np.ndarray:
        return decode_scores(proba, decode or self.decode, self.cuts)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload: dict | None) -> ScoreRule:
        payload = dict(payload or {})
        if payload.get("cuts") is not None:
            payload["cuts"] = tuple(float(c) for c in payload["cuts"])
        return cls(**payload)
