"""`tagcons score`: every (post, hashtag) of a posts file scored by a fit-head run, streamed to parquet.

Per pair: the head's score under the run's decoding (`pred`), the expected score (sum of k * p_k), the
calibrated probabilities `p<k>`, the pair's `rank` within its post (1 = best fitting, by expected score;
ties keep the post's order) and `misfit`: p(score <= misfit_score) >= misfit_p (defaults: the scale's
lowest score + 1, i.e. "at most 2" on 1-5, and 0.5). Without a run the scores are zero-shot: `cosine`
and `clipscore` = 100 * max(cosine, 0) (torchmetrics' CLIPScore), ranked by cosine.
Pairs that cannot be scored are kept with a `status` naming why (image not in the cache, image failed
and the cache's reason, hashtag not in the cache) and empty scores. A per-post table has n_tags,
n_scored, n_misfits and the mean expected score (or mean cosine).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tagcons.configs import ScoreConfig
from tagcons.data.posts import ExplodeStats, explode_posts, read_posts
from tagcons.errors import BadInputError
from tagcons.heads.features import PairFeatures
from tagcons.heads.join import cache_strip_hash
from tagcons.posts.keys import CacheKeys
from tagcons.progress import chunk_progress
from tagcons.table_out import RowGroupWriter, check_output

log = logging.getLogger(__name__)

OK = "ok"
COSINE_BLOCK = 16384


@dataclass
class ScoreSummary:
    out: Path
    posts_out: Path
    stats: ExplodeStats = field(default_factory=ExplodeStats)
    n_scored: int = 0
    n_misfits: int = 0
    unscored: dict = field(default_factory=dict)  # status -> pairs
    posts_without_image: int = 0  # posts whose image is missing from or failed in the cache


class PostScorer:
    """Scores (image, hashtag) pairs against an open cache, with a fit-head run or zero-shot by cosine."""

    def __init__(self, cache, run_dir: str | Path | None = None, misfit_score: int | None = None, misfit_p=0.5):
        self.keys = CacheKeys(cache)
        self.strip_hash = cache_strip_hash(cache)  # posts' tags are keyed as the cache keys its hashtags
        self.run = None if run_dir is None else LoadedRun(Path(run_dir), cache)
        if not 0.0 < misfit_p <= 1.0:
            raise BadInputError(f"--misfit-p {misfit_p}: give a probability in (0, 1]")
        self.misfit_score = self._misfit_score(misfit_score)
        self.misfit_p = misfit_p

    def _misfit_score(self, value: int | None) -> int | None:
        if self.run is None:
            return None
        labels = self.run.scale.labels
        value = labels[0] + 1 if value is None else value
        if value not in labels:
            raise BadInputError(f"--misfit-score {value} is not a score of the run's scale {self.run.scale}")
        return value

    def score_pairs(self, images, hashtags) -> pd.DataFrame:
        """One row per pair: status and the scores (empty where status is not 'ok')."""
        images, hashtags = np.asarray(images, dtype=object), np.asarray(hashtags, dtype=object)
        rows = self.keys.rows(images, hashtags)
        out = pd.DataFrame({"status": rows.status})
        ok = np.flatnonzero(rows.ok)
        if self.run is None:
            return self._cosine_columns(out, rows, ok)
        return self._head_columns(out, rows, ok, images, hashtags)

    def _features(self, rows, ok: np.ndarray) -> PairFeatures:
        image_rows, image_index = np.unique(rows.image[ok], return_inverse=True)
        text_embeds, text_index = self.keys.text_side(rows.text[ok])
        kind = self.run.kind if self.run is not None else "concat"
        return PairFeatures(self.keys.read("images", image_rows), text_embeds, image_index, text_index, kind)

    def _cosine_columns(self, out: pd.DataFrame, rows, ok: np.ndarray) -> pd.DataFrame:
        cosine = np.full(len(out), np.nan)
        if len(ok):
            X = self._features(rows, ok)
            cosine[ok] = np.concatenate([_cosines(X, lo, lo + COSINE_BLOCK) for lo in range(0, len(ok), COSINE_BLOCK)])
        out["cosine"] = cosine
        out["clipscore"] = 100.0 * np.maximum(cosine, 0.0)  # NaN stays NaN
        return out

    def _head_columns(self, out, rows, ok, images, hashtags) -> pd.DataFrame:
        labels = np.asarray(self.run.scale.labels)
        proba = np.full((len(out), len(labels)), np.nan)
        pred = pd.array([pd.NA] * len(out), dtype="Int16")
        if len(ok):
            X = (
                self._features(rows, ok)
                if self.run.needs_features
                else _pairs_table(images[ok], hashtags[ok], self.run)
            )
            scores, proba[ok] = self.run.head.predict_scores(X, self.run.scale.labels)
            pred[ok] = scores.astype(np.int16)
        out["pred"] = pred
        out["expected"] = proba @ labels
        for column, k in enumerate(labels):
            out[f"p{k}"] = proba[:, column]
        out["p_misfit"] = proba[:, labels <= self.misfit_score].sum(axis=1)
        out.loc[out["status"] != OK, "p_misfit"] = np.nan
        out["misfit"] = pd.array(np.where(np.isnan(out["p_misfit"]), None, out["p_misfit"] >= self.misfit_p), "boolean")
        return out

    @property
    def rank_by(self) -> str:
        return "cosine" if self.run is None else "expected"


def _cosines(X: PairFeatures, lo: int, hi: int) -> np.ndarray:
    """Cosine of pairs lo..hi (a block at a time: the gathered rows of a whole chunk would not fit)."""
    img = X.image_embeds[X.image_index[lo:hi]].astype(np.float32, copy=False)
    return np.einsum("ij,ij->i", img, X.text_embeds[X.text_index[lo:hi]].astype(np.float32, copy=False))


def _pairs_table(images, hashtags, run):
    """A pixel-free head (text-only, image-prior) reads the pairs themselves, not their features."""
    from tagcons.data.pairs import PairTable
    from tagcons.labels import NO_LABEL

    frame = pd.DataFrame({"image": images, "text": hashtags, "label": np.full(len(images), NO_LABEL, np.int8)})
    return PairTable(frame.assign(line=np.arange(len(images))), "posts", has_labels=False, scale=run.scale)


@dataclass
class LoadedRun:
    """A fit-head run ready to score pairs of `cache` (its fingerprint checked)."""

    run_dir: Path
    cache: object
    head: object = None
    scale: object = None
    kind: str = "concat"
    needs_features: bool = True

    def __post_init__(self):
        from tagcons.evaluate.rundir import CONFIG_FILE, read_json
        from tagcons.heads.base import load_head
        from tagcons.heads.scoring import check_fingerprint, run_feature_kind
        from tagcons.labels import scale_from_config

        config = read_json(self.run_dir / CONFIG_FILE)
        self.head = load_head(self.run_dir)
        self.needs_features = getattr(self.head, "NEEDS_FEATURES", True)
        if self.needs_features:
            check_fingerprint(self.cache, config, self.cache.path, self.run_dir)
        self.kind = run_feature_kind(config, self.run_dir)
        self.scale = scale_from_config(config)


def rank_within_posts(post: np.ndarray, value: np.ndarray, position: np.ndarray) -> pd.arrays.IntegerArray:
    """1 for each post's highest `value`, ties in the post's own order; pairs without a value get no rank."""
    rank = pd.array([pd.NA] * len(post), dtype="Int32")
    scored = np.flatnonzero(~np.isnan(value))
    order = scored[np.lexsort((position[scored], -value[scored], post[scored]))]
    if len(order):
        owners = post[order]
        starts = np.r_[0, np.flatnonzero(np.diff(owners)) + 1]
        ranks = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)])) + 1
        rank[order] = ranks.astype(np.int32)
    return rank


def score_chunk(scorer: PostScorer, exploded) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scored pairs and the per-post summary of one exploded chunk."""
    pairs = exploded.pairs
    images = exploded.image_keys[pairs["post"].to_numpy()]
    scored = scorer.score_pairs(images, pairs["hashtag"].to_numpy())
    value = scored[scorer.rank_by].to_numpy(dtype=float)
    scored["rank"] = rank_within_posts(pairs["post"].to_numpy(), value, pairs["position"].to_numpy())
    result = pd.concat([pairs.drop(columns=["post"]), scored], axis=1)
    return result, _post_summary(exploded, scored, pairs["post"].to_numpy(), value, scorer)


def _post_summary(exploded, scored: pd.DataFrame, post: np.ndarray, value: np.ndarray, scorer) -> pd.DataFrame:
    posts = exploded.posts.copy()
    n = len(posts)
    ok = scored["status"].to_numpy() == OK
    posts["n_scored"] = np.bincount(post[ok], minlength=n)
    sums = np.bincount(post[ok], weights=value[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        posts[f"mean_{scorer.rank_by}"] = np.where(
            posts["n_scored"] > 0, sums / np.maximum(posts["n_scored"], 1), np.nan
        )
    if scorer.run is not None:
        misfit = scored["misfit"].fillna(False).to_numpy(dtype=bool)
        posts["n_misfits"] = np.bincount(post[misfit], minlength=n)
    posts["image_status"] = scorer.keys.image_status(exploded.image_keys)
    return posts


def score_posts(config: ScoreConfig) -> ScoreSummary:
    """Stream a posts file through a scorer into two parquet files; memory depends on chunk_posts only."""
    posts_out = config.posts_out or config.out.with_name(config.out.name.removesuffix(".parquet") + ".posts.parquet")
    for path in (config.out, posts_out):
        check_output(path, config.overwrite)
    from tagcons.heads.join import open_cache

    summary = ScoreSummary(config.out, posts_out)
    with open_cache(config.cache) as cache:
        scorer = PostScorer(cache, config.run, config.misfit_score, config.misfit_p)
        with RowGroupWriter(config.out) as pairs_writer, RowGroupWriter(posts_out) as posts_writer:
            chunks = read_posts(config.posts, config.columns, config.chunk_posts)
            for chunk in chunk_progress(chunks, config.progress, "score", " posts", lambda chunk: len(chunk.frame)):
                exploded = explode_posts(chunk, config.columns, config.posts, scorer.strip_hash)
                pairs, posts = score_chunk(scorer, exploded)
                pairs_writer.write(pairs)
                posts_writer.write(posts)
                _tally(summary, pairs, posts)
                summary.stats.add(exploded.stats)
    summary.stats.warn(config.posts)
    return summary


def _tally(summary: ScoreSummary, pairs: pd.DataFrame, posts: pd.DataFrame) -> None:
    ok = pairs["status"] == OK
    summary.n_scored += int(ok.sum())
    if "misfit" in pairs:
        summary.n_misfits += int(pairs["misfit"].fillna(False).sum())
    for status, n in pairs.loc[~ok, "status"].value_counts().items():
        summary.unscored[status] = summary.unscored.get(status, 0) + int(n)
    summary.posts_without_image += int((posts["image_status"] != OK).sum())
