"""The report's galleries: thumbnails (JPEG data URIs), each run's worst errors, and the pairs two runs
disagree on most."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.data.images import ImageLoadError, load_rgb, resolve_image_path
from tagcons.errors import BadInputError
from tagcons.evaluate.calibration import columns_of
from tagcons.evaluate.report_runs import RunView, data_uri, run_labels
from tagcons.labels import LABELS

log = logging.getLogger(__name__)

THUMBNAIL_PX = 160
THUMBNAIL_QUALITY = 80


class Thumbnails:
    """image key -> JPEG data URI (<= THUMBNAIL_PX), each image decoded once; None without --images."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None
        self._made: dict[str, str | None] = {}

    def __call__(self, key: str) -> str | None:
        if self.root is None:
            return None
        if key not in self._made:
            self._made[key] = self._make(key)
        return self._made[key]

    def _make(self, key: str) -> str | None:
        try:
            image = load_rgb(resolve_image_path(self.root, key), key)
        except (ImageLoadError, BadInputError) as e:
            log.warning("report: no thumbnail for %s (%s)", key, e)
            return None
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
        return data_uri(buffer.getvalue(), "image/jpeg")


def _true_probability(frame: pd.DataFrame, labels=LABELS) -> pd.Series:
    columns = [f"p{k}" for k in labels]
    if not all(c in frame.columns for c in columns):
        return pd.Series(np.nan, index=frame.index)
    probabilities = frame[columns].to_numpy(dtype=float)
    return pd.Series(
        probabilities[np.arange(len(frame)), columns_of(frame["true"].to_numpy(), labels)], index=frame.index
    )


def worst_errors(run: RunView, count: int, thumbnail) -> list[dict]:
    """The pairs with the largest |true - predicted|, then the lowest probability of the true score."""
    frame = run.predictions.assign(error=(run.predictions["true"] - run.predictions["pred"]).abs())
    frame = frame.assign(p_true=_true_probability(frame, run_labels(run)))
    frame = frame[frame["error"] > 0].sort_values(["error", "p_true"], ascending=[False, True], na_position="last")
    return [
        {
            "image": row.image,
            "text": row.text,
            "true": int(row.true),
            "preds": [int(row.pred)],
            "p_true": None if pd.isna(row.p_true) else float(row.p_true),
            "thumbnail": thumbnail(row.image),
        }
        for row in frame.head(count).itertuples(index=False)
    ]


def disagreements(first: RunView, second: RunView, count: int, thumbnail) -> list[dict]:
    """Pairs both runs scored, ordered by how far apart their predictions are."""
    keys = ["image", "text", "true"]
    both = first.predictions[keys + ["pred"]].merge(second.predictions[keys + ["pred"]], on=keys, suffixes=("_a", "_b"))
    both = both.assign(gap=(both["pred_a"] - both["pred_b"]).abs())
    both = both[both["gap"] > 0].sort_values("gap", ascending=False, kind="stable")
    return [
        {
            "image": row.image,
            "text": row.text,
            "true": int(row.true),
            "preds": [int(row.pred_a), int(row.pred_b)],
            "p_true": None,
            "thumbnail": thumbnail(row.image),
        }
        for row in both.head(count).itertuples(index=False)
    ]
