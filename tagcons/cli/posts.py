"""`tagcons score` and `tagcons suggest`: hashtags of posts, scored or suggested."""

from __future__ import annotations

from pathlib import Path

import click

from tagcons.cli.common import (
    _progress,
    cli,
)
from tagcons.configs import (
    SUGGEST_INDEXES,
    PostColumns,
    ScoreConfig,
    SuggestConfig,
    field_default,
)


def post_columns(command):
    """The posts file's column options, shared by score and suggest (defaults from PostColumns)."""
    defaults = PostColumns()
    for name, flag, what in reversed(
        (
            ("post_id", "--post-col", "Column with the post id."),
            ("image", "--image-col", "Column with the post's image file name (as the cache keys it)."),
            ("hashtags", "--hashtags-col", "Column with the tag list (JSON list, or tags split on spaces/commas)."),
            (
                "caption",
                "--caption-col",
                "Column with the caption to extract hashtags from, when there is no tag list.",
            ),
        )
    ):
        command = click.option(flag, f"{name}_col", default=getattr(defaults, name), show_default=True, help=what)(
            command
        )
    return command


def _post_columns(post_id_col, image_col, hashtags_col, caption_col) -> PostColumns:
    return PostColumns(post_id=post_id_col, image=image_col, hashtags=hashtags_col, caption=caption_col)


@cli.command("score")
@click.option("--cache", "cache_path", required=True, type=click.Path(path_type=Path), help="Cache from tagcons embed.")
@click.option("--posts", required=True, type=click.Path(path_type=Path), help="Posts file (CSV/TSV/parquet/JSONL).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Parquet file, one row per (post, tag).")
@click.option("--run", "run_dir", default=None, type=click.Path(path_type=Path), help="A run; none: cosine only.")
@click.option("--posts-out", default=None, type=click.Path(path_type=Path), help="Per-post table [OUT.posts.parquet].")
@click.option("--misfit-score", default=None, type=int, help="Misfit: p(score <= this) >= --misfit-p [lowest + 1].")
@click.option("--misfit-p", default=field_default(ScoreConfig, "misfit_p"), show_default=True, type=float)
@click.option("--chunk-posts", default=field_default(ScoreConfig, "chunk_posts"), show_default=True, type=int)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@post_columns
def score_command(cache_path, posts, out, run_dir, posts_out, misfit_score, misfit_p, chunk_posts, overwrite, **cols):
    """Score every hashtag of every post: rank within the post, flag misfits (streamed to parquet)."""
    from tagcons.posts.score import score_posts

    config = ScoreConfig(
        cache=cache_path, posts=posts, out=out, run=run_dir, posts_out=posts_out, columns=_post_columns(**cols),
        misfit_score=misfit_score, misfit_p=misfit_p, chunk_posts=chunk_posts, overwrite=overwrite,
        progress=_progress(),
    )  # fmt: skip
    summary = score_posts(config)
    click.echo(
        f"{summary.out}: {summary.stats.n_posts} posts, {summary.n_scored} of {summary.stats.n_pairs} hashtags scored"
        + (f", {summary.n_misfits} misfits" if run_dir else " (zero-shot: cosine and CLIPScore)")
        + f"; per post: {summary.posts_out}"
    )
    if summary.posts_without_image:
        click.echo(f"{summary.posts_without_image} posts have an image missing from or failed in the cache")
    for status, n in sorted(summary.unscored.items()):
        click.echo(f"  {n} hashtags not scored: {status}")


@cli.command("suggest")
@click.option("--cache", "cache_path", required=True, type=click.Path(path_type=Path), help="Cache from tagcons embed.")
@click.option("--posts", required=True, type=click.Path(path_type=Path), help="Posts file (CSV/TSV/parquet/JSONL).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Parquet file, K rows per post.")
@click.option(
    "--run", "run_dir", default=None, type=click.Path(path_type=Path), help="A run to re-rank by; none: cosine."
)
@click.option("--vocab", default=None, type=click.Path(path_type=Path), help="Hashtags to suggest from [the cache's].")
@click.option("--k", default=field_default(SuggestConfig, "k"), show_default=True, type=int)
@click.option("--candidates", default=field_default(SuggestConfig, "candidates"), show_default=True, type=int,
              help="Nearest hashtags by cosine that the run re-ranks.")  # fmt: skip
@click.option("--index", "index_kind", default=field_default(SuggestConfig, "index"), show_default=True,
              type=click.Choice(SUGGEST_INDEXES), help="FAISS search: exact, or approximate.")  # fmt: skip
@click.option("--chunk-posts", default=field_default(SuggestConfig, "chunk_posts"), show_default=True, type=int)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@post_columns
def suggest_command(cache_path, posts, out, run_dir, vocab, k, candidates, index_kind, chunk_posts, overwrite, **cols):
    """Suggest the K best hashtags for each post's image (FAISS candidates, re-ranked by the run)."""
    from tagcons.posts.suggest import suggest_tags

    config = SuggestConfig(
        cache=cache_path, posts=posts, out=out, run=run_dir, vocab=vocab, k=k, candidates=candidates,
        index=index_kind, columns=_post_columns(**cols), chunk_posts=chunk_posts, overwrite=overwrite,
        progress=_progress(),
    )  # fmt: skip
    summary = suggest_tags(config)
    click.echo(
        f"{summary.out}: {summary.n_suggested} suggestions for {summary.stats.n_posts - summary.posts_without_image} "
        f"posts from {summary.n_vocabulary} hashtags"
    )
