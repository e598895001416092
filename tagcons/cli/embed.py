"""`tagcons embed`: encode every unique image and hashtag once into an HDF5 cache."""

from __future__ import annotations

from pathlib import Path

import click

from tagcons.cli.common import (
    BACKBONE_HELP,
    _columns,
    _progress,
    cli,
    pair_columns,
)
from tagcons.configs import (
    ENGINES,
    EmbedConfig,
    PostColumns,
    field_default,
)
from tagcons.embed.onnx_runtime import RUNTIMES


def _embed_post_columns(image_col: str, post_col: str, hashtags_col: str, caption_col: str) -> PostColumns:
    """embed's --image-col names the posts' image column too, unless left at the pairs' default."""
    given = click.get_current_context().get_parameter_source("image_col") != click.core.ParameterSource.DEFAULT
    image = image_col if given else PostColumns().image
    return PostColumns(post_id=post_col, image=image, hashtags=hashtags_col, caption=caption_col)


def _shard(_ctx, _param, value):
    if value is None:
        return None
    try:
        k, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter("use K/N, e.g. 0/4 for the first of four shards") from None
    if not (n >= 1 and 0 <= k < n):
        raise click.BadParameter(f"{value}: K must be in 0..N-1")
    return k, n


@cli.command()
@click.option("--data", default=None, type=click.Path(path_type=Path), help="Pairs file (CSV, TSV or parquet).")
@click.option(
    "--posts",
    default=None,
    type=click.Path(path_type=Path),
    help="Instead of --data: a posts file (tagcons score's columns; --image-col defaults to 'image').",
)
@click.option("--post-col", default=PostColumns().post_id, show_default=True, help="With --posts: the post id column.")
@click.option("--hashtags-col", default=PostColumns().hashtags, show_default=True, help="With --posts: tag lists.")
@click.option("--caption-col", default=PostColumns().caption, show_default=True, help="With --posts: captions.")
@click.option(
    "--images", required=True, type=click.Path(path_type=Path), help="Folder the image paths are relative to."
)
@click.option("--backbone", required=True, help=BACKBONE_HELP)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Cache file (.h5) to create or extend.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) of the backbone.")
@click.option("--batch-size", default=field_default(EmbedConfig, "batch_size"), show_default=True, type=int)
@click.option(
    "--workers",
    default=None,
    type=int,
    help="DataLoader workers decoding images [CPU: none below 8 cores, one per 8 above; GPU: cores - 1, max 8].",
)
@click.option(
    "--device", default=field_default(EmbedConfig, "device"), show_default=True, help="auto, cpu, cuda, cuda:N or mps."
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default=field_default(EmbedConfig, "dtype"),
    show_default=True,
)
@click.option(
    "--text-template",
    "text_templates",
    multiple=True,
    default=field_default(EmbedConfig, "text_templates"),
    show_default=True,
    help="Text given to the model; {} is the hashtag. Repeat for a prompt ensemble (mean of normalised features).",
)
@click.option("--strip-hash", is_flag=True, help="Remove a leading '#' from hashtags.")
@click.option(
    "--store-dtype",
    type=click.Choice(["float32", "float16"]),
    default=field_default(EmbedConfig, "store_dtype"),
    show_default=True,
)
@click.option("--strict", is_flag=True, help="Exit 3 if any image fails (after saving the rest).")
@click.option("--shard", callback=_shard, default=None, help="K/N: encode only shard K of N (job arrays).")
@click.option(
    "--decode",
    type=click.Choice(["cpu", "gpu"]),
    default=field_default(EmbedConfig, "decode"),
    show_default=True,
    help="gpu: JPEGs decoded (nvJPEG) and preprocessed on the CUDA device; needs torchvision.",
)
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the image encoder (large runs).")
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=field_default(EmbedConfig, "runtime"),
    show_default=True,
    help="onnx: the towers exported once and run by ONNX Runtime on the CPU (tagcons[onnx]); onnx-int8: quantised.",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=field_default(EmbedConfig, "engine"),
    show_default=True,
    help="ray: Ray Data stages on a local Ray or the cluster of --ray-address (needs tagcons[ray]).",
)
@click.option("--ray-address", default=None, help="HOST:PORT of a running Ray cluster to join (with --engine ray).")
@pair_columns
def embed(
    data,
    posts,
    post_col,
    hashtags_col,
    caption_col,
    images,
    backbone,
    out,
    revision,
    batch_size,
    workers,
    device,
    dtype,
    text_templates,
    strip_hash,
    store_dtype,
    strict,
    shard,
    decode,
    compile_model,
    runtime,
    engine,
    ray_address,
    image_col,
    text_col,
    label_col,
):
    """Encode every unique image and hashtag once into an HDF5 cache."""
    from tagcons.embed.extractor import run_embed

    config = EmbedConfig(
        data=data,
        images=images,
        backbone=backbone,
        out=out,
        revision=revision,
        batch_size=batch_size,
        workers=workers,
        device=device,
        dtype=dtype,
        text_templates=tuple(text_templates),
        strip_hash=strip_hash,
        store_dtype=store_dtype,
        strict=strict,
        shard=shard,
        columns=_columns(image_col, text_col, label_col),
        progress=_progress(),
        decode=decode,
        compile=compile_model,
        posts=posts,
        post_columns=_embed_post_columns(image_col, post_col, hashtags_col, caption_col),
        runtime=runtime,
        engine=engine,
        ray_address=ray_address,
    )
    summary = run_embed(config)
    if summary.rank == 0:
        click.echo(
            f"{summary.cache}: images {summary.images_new} new, {summary.images_cached} cached, "
            f"{summary.images_failed} failed; texts {summary.texts_new} new, {summary.texts_cached} cached, "
            f"{summary.texts_truncated} cut at the token limit; "
            f"{summary.elapsed_seconds:.1f} s ({summary.images_per_second:.1f} img/s, "
            f"{summary.texts_per_second:.1f} txt/s)"
        )
