"""The score scale (an ordered integer range, 1-5 by default) and balanced class weights.

Ground floor: every package may use this module; it imports nothing from tagcons but errors, and
numpy only inside the functions that need it (the CLI reads the default scale at start-up).
A study's scale is a setting (`--scale 1-5`, `0-3`, `1-7`, `0-1`, or `auto` from the labels) that is
recorded in each run's config.json, so heads, metrics, plots and fine-tuning read the same one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tagcons.errors import BadInputError

if TYPE_CHECKING:
    import numpy as np

NO_LABEL = -1
MAX_SCORE = 126  # labels are stored as int8 beside NO_LABEL
AUTO = "auto"
_RANGE = re.compile(r"^\s*(-?\d+)\s*-\s*(-?\d+)\s*$")


@dataclass(frozen=True)
class ScoreScale:
    """The ordered integer scores low..high (inclusive)."""

    low: int = 1
    high: int = 5

    def __post_init__(self) -> None:
        if self.low < 0 or self.high <= self.low or self.high > MAX_SCORE:
            raise BadInputError(
                f"score scale {self.low}-{self.high}: use LOW-HIGH with 0 <= LOW < HIGH <= {MAX_SCORE}, e.g. 1-5"
            )

    @property
    def labels(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1))

    @property
    def n_classes(self) -> int:
        return self.high - self.low + 1

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"

    def column_of(self, scores) -> np.ndarray:
        """Column index (0..K-1) of each score."""
        import numpy as np

        return np.asarray(scores).astype(int) - self.low

    def outside(self, scores) -> np.ndarray:
        """Mask of scores that are not on the scale."""
        import numpy as np

        scores = np.asarray(scores)
        return (scores < self.low) | (scores > self.high)


DEFAULT_SCALE = ScoreScale(1, 5)
LABELS = DEFAULT_SCALE.labels  # the study's scale, for code that has no run config to read one from


def parse_scale(text: str | ScoreScale | None) -> ScoreScale | str:
    """'1-5' -> ScoreScale(1, 5); 'auto' stays 'auto' (see infer_scale); None -> the default scale."""
    if text is None:
        return DEFAULT_SCALE
    if isinstance(text, ScoreScale) or text == AUTO:
        return text
    match = _RANGE.match(str(text))
    if not match:
        raise BadInputError(f"--scale '{text}': use LOW-HIGH (e.g. 1-5, 0-3, 1-7) or auto")
    return ScoreScale(int(match.group(1)), int(match.group(2)))


def infer_scale(labels) -> ScoreScale:
    """The smallest range holding every label (what `--scale auto` means)."""
    import numpy as np

    labels = np.asarray(labels).astype(int)
    labels = labels[labels != NO_LABEL]
    if len(labels) == 0:
        raise BadInputError("--scale auto needs labelled rows; name the scale instead, e.g. --scale 1-5")
    return ScoreScale(int(labels.min()), int(labels.max()))


def absent_scores(scale: ScoreScale, labels) -> list[int]:
    """The scores of ``scale`` that no label holds (unlabelled rows aside)."""
    import numpy as np

    present = set(np.unique(np.asarray(labels).astype(int)).tolist())
    return [score for score in scale.labels if score not in present]


def resolve_scale(scale: str | ScoreScale | None, labels=None) -> ScoreScale:
    """A concrete scale: the one named, or inferred from ``labels`` when 'auto'."""
    parsed = parse_scale(scale)
    return infer_scale(labels) if parsed == AUTO else parsed


def scale_from_config(run_config: dict) -> ScoreScale:
    """The scale a run recorded (runs written before the setting existed used 1-5)."""
    return resolve_scale(run_config.get("scale") or str(DEFAULT_SCALE))


def class_weights(y, classes=LABELS) -> np.ndarray:
    """Balanced weights n / (K * count) per class in ``classes``; a class absent from y gets weight 0."""
    import numpy as np

    y = np.asarray(y).astype(int)
    counts = np.array([(y == c).sum() for c in classes], dtype=np.float64)
    return np.divide(len(y), len(classes) * counts, out=np.zeros_like(counts), where=counts > 0)
