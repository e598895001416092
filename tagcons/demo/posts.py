"""The demo's last step: its pairs regrouped as posts, scored and given suggestions by one of its runs.

The same library calls as `tagcons score` and `tagcons suggest`; the lines returned are what the demo
prints: how many tags are misfits, one post's best and worst tag, and the hashtags suggested for it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tagcons.configs import ScoreConfig, SuggestConfig

SUGGESTED_PER_IMAGE = 5
SCORING_HEAD = "logreg"  # fast on posts (its logits add per image and per tag) and calibrated


def write_demo_posts(pairs_csv: Path, path: Path) -> Path:
    """One post per demo image, its hashtags as a list."""
    pairs = pd.read_csv(pairs_csv)
    posts = pairs.groupby("Image Filename", sort=True)["Hashtag"].apply(list).reset_index()
    posts.columns = ["image", "hashtags"]
    posts.insert(0, "post_id", [f"post_{i:03d}" for i in range(len(posts))])
    posts.to_parquet(path, index=False)
    return path


def score_and_suggest(pairs_csv: Path, cache: Path, run_dirs: list[Path], out: Path) -> list[str]:
    """Score the demo's posts with its logreg run and suggest hashtags for their images; the lines to print."""
    from tagcons.posts.score import score_posts
    from tagcons.posts.suggest import suggest_tags

    run = next((r for r in run_dirs if r.name == SCORING_HEAD), None)
    if run is None:
        return []
    folder = out / "posts"
    folder.mkdir(parents=True, exist_ok=True)
    posts = write_demo_posts(pairs_csv, out / "data" / "posts.parquet")
    scored = score_posts(ScoreConfig(cache=cache, posts=posts, out=folder / "scored.parquet", run=run, overwrite=True))
    suggest = SuggestConfig(
        cache=cache, posts=posts, out=folder / "suggested.parquet", run=run, k=SUGGESTED_PER_IMAGE, overwrite=True
    )
    suggested = suggest_tags(suggest)
    return [
        f"posts: {scored.stats.n_posts} posts, {scored.n_scored} hashtags scored by {run.name}, "
        f"{scored.n_misfits} misfits ({scored.out})",
        *_first_post_lines(pd.read_parquet(scored.out), pd.read_parquet(suggested.out)),
    ]


def _first_post_lines(scored: pd.DataFrame, suggested: pd.DataFrame) -> list[str]:
    ok = scored[scored["status"] == "ok"]
    post = ok[ok["post_id"] == ok["post_id"].iloc[0]].sort_values("rank")
    best, worst = post.iloc[0], post.iloc[-1]
    mine = suggested[suggested["post_id"] == best["post_id"]].sort_values("rank")
    marks = [f"{tag}{' (has it)' if has else ''}" for tag, has in zip(mine["hashtag"], mine["in_post"])]
    return [
        f"  {best['post_id']} ({best['image']}): best {best['hashtag']} (expected {best['expected']:.2f}), "
        f"worst {worst['hashtag']} (expected {worst['expected']:.2f}{', misfit' if worst['misfit'] else ''})",
        f"  suggested for {best['image']}: {', '.join(marks)}",
    ]
