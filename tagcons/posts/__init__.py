"""Posts in, verdicts out: a post is one image and its hashtags (a list, or a caption to extract them from).

`read_posts` streams a posts file in chunks; `score_posts` and `suggest_tags` (the `tagcons score` and
`tagcons suggest` commands) stream their results to parquet; `score_frame`, `score_pairs_frame` and
`suggest_hashtags` (`tagcons.posts.api`) are the same code for a notebook, on pandas DataFrames. Names load on
first use (PEP 562).
"""

from tagcons.lazy import lazy_exports

_EXPORTS = {
    "extract_hashtags": "tagcons.data.post_tags",
    "parse_tag_list": "tagcons.data.post_tags",
    "read_posts": "tagcons.data.posts",
    "explode_posts": "tagcons.data.posts",
    "PostScorer": "tagcons.posts.score",
    "score_posts": "tagcons.posts.score",
    "suggest_for_images": "tagcons.posts.suggest",
    "suggest_tags": "tagcons.posts.suggest",
    "score_frame": "tagcons.posts.api",
    "score_pairs_frame": "tagcons.posts.api",
    "suggest_hashtags": "tagcons.posts.api",  # not `suggest`: the submodule of that name would shadow it
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
