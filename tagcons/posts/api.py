"""The posts functions for a notebook: DataFrames in, DataFrames out (the commands stream the same code).

from tagcons.posts.api import score_frame, suggest_hashtags
pairs, posts = score_frame(posts_df, "cache.h5", run="runs/logreg")
best = suggest_hashtags(["a.jpg", "b.jpg"], "cache.h5", run="runs/logreg", k=10)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tagcons.configs import PostColumns
from tagcons.data.posts import explode_posts, posts_chunk
from tagcons.posts.score import PostScorer, score_chunk
from tagcons.posts.suggest import build_index, load_vocabulary, suggest_for_images

if TYPE_CHECKING:
    from tagcons.cache.reader import CacheReader


@contextmanager
def _opened(cache):
    """A cache path is opened (and closed after); an open `tagcons.cache.CacheReader` is used as it is."""
    if not isinstance(cache, str | Path):
        yield cache
        return
    import tagcons.cache

    with tagcons.cache.open(cache) as reader:
        yield reader


def score_frame(
    posts: pd.DataFrame,
    cache: str | Path | CacheReader,
    run: str | Path | None = None,
    columns: PostColumns = PostColumns(),
    misfit_score: int | None = None,
    misfit_p: float = 0.5,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per post and hashtag, one row per post) for a DataFrame of posts, as `tagcons score` writes them.

    Args:
        posts: one row per post with a post id, an image key and a tag list or a caption column.
        cache: a cache path or an open `tagcons.cache.CacheReader`.
        run: a fit-head run directory; None scores zero-shot by cosine and CLIPScore.
        columns: the names of the post id, image, hashtags and caption columns.
        misfit_score: a tag is a misfit when p(score <= misfit_score) >= misfit_p (None: the scale's lowest + 1).
        misfit_p: the probability that makes a misfit.
    """
    with _opened(cache) as reader:
        scorer = PostScorer(reader, run, misfit_score, misfit_p)
        return score_chunk(scorer, explode_posts(posts_chunk(posts, columns), columns, "posts", scorer.strip_hash))


def score_pairs_frame(
    images: Sequence[str], hashtags: Sequence[str], cache: str | Path | CacheReader, run: str | Path | None = None
) -> pd.DataFrame:
    """Scores of aligned image keys and hashtags (status, pred, expected, p<k>, misfit; or cosine, clipscore)."""
    with _opened(cache) as reader:
        return PostScorer(reader, run).score_pairs(images, hashtags)


def suggest_hashtags(
    images: Sequence[str],
    cache: str | Path | CacheReader,
    run: str | Path | None = None,
    k: int = 20,
    vocab: str | Path | None = None,
    candidates: int = 100,
    index: str = "exact",
) -> pd.DataFrame:
    """The k best hashtags for each image key (all must be in the cache), as `tagcons suggest` ranks them.

    Args:
        images: image keys as the cache holds them.
        cache: a cache path or an open `tagcons.cache.CacheReader`.
        run: a fit-head run whose expected score re-ranks the candidates; None keeps the cosine order.
        k: hashtags per image.
        vocab: a file of hashtags to suggest from; None: every hashtag in the cache.
        candidates: nearest hashtags by cosine that the run re-ranks.
        index: "exact" or "hnsw" (approximate, for very large vocabularies).
    """
    with _opened(cache) as reader:
        scorer = PostScorer(reader, run)
        vocabulary = load_vocabulary(scorer, None if vocab is None else Path(vocab))
        return suggest_for_images(scorer, vocabulary, build_index(vocabulary.embeds, index), images, k, candidates)
