"""`tagcons fit-head` and `tagcons predict`: light heads on cached features."""

from __future__ import annotations

from pathlib import Path

import click

from tagcons.cli.common import (
    ALL_HEADS,
    HeadChoice,
    _columns,
    _head_params,
    _headline,
    _progress,
    _scale,
    cached_pair_columns,
    cli,
    pair_columns,
)
from tagcons.configs import (
    FitHeadConfig,
    PredictConfig,
    field_default,
)
from tagcons.heads.registry import head_names


@cli.command("fit-head")
@click.option(
    "--cache",
    "cache_path",
    default=None,
    type=click.Path(path_type=Path),
    help="Cache from tagcons embed (not needed by text-only and image-prior).",
)
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Pairs file with scores.")
@click.option(
    "--head",
    "heads",
    required=True,
    multiple=True,
    type=HeadChoice([*head_names(), ALL_HEADS]),
    help="Repeatable, or 'all': several heads share one cache join, one run each under --out/<head>.",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Run directory (the parent of runs with heads)."
)
@click.option(
    "--split",
    type=click.Choice(["images", "pairs"]),
    default=field_default(FitHeadConfig, "split"),
    show_default=True,
    help="images: no image on both sides (honest); pairs: the study's split.",
)
@click.option(
    "--cv",
    type=int,
    default=field_default(FitHeadConfig, "cv"),
    help="K-fold cross-validation instead of one 80/20 split.",
)
@click.option(
    "--dedupe",
    type=click.Choice(["none", "exact"]),
    default=field_default(FitHeadConfig, "dedupe"),
    help="exact: keep one of each identical (image, text, score) row [exact for images, none for pairs].",
)
@click.option(
    "--repeats",
    type=int,
    default=field_default(FitHeadConfig, "repeats"),
    show_default=True,
    help="Repeat the split (or CV) with R seeds; reports mean, sd and a pooled interval.",
)
@click.option(
    "--features",
    type=click.Choice(["concat", "rich"]),
    default=field_default(FitHeadConfig, "features"),
    show_default=True,
)
@click.option("--seed", type=int, default=field_default(FitHeadConfig, "seed"), show_default=True)
@click.option(
    "--objective",
    default=field_default(FitHeadConfig, "objective"),
    help="threshold: macro_f1|qwk; lgbm: multiclass|regression.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    callback=_head_params,
    metavar="KEY=VALUE",
    help="Head hyperparameter, repeatable (e.g. --param recipe=paper for mlp, --param class_weight=none).",
)
@click.option(
    "--decode",
    type=click.Choice(["argmax", "expected", "median"]),
    default=field_default(FitHeadConfig, "decode"),
    show_default=True,
    help="argmax, the expected score cut at four points chosen on the validation part, or the median score "
    "(the ordinal head's latent-interval rule).",
)
@click.option(
    "--val-size",
    type=float,
    default=field_default(FitHeadConfig, "val_size"),
    show_default=True,
    help="Share of the training part held out to fit the temperature and the expected-score cuts.",
)
@click.option(
    "--exclude-pairs",
    type=click.Path(path_type=Path),
    default=field_default(FitHeadConfig, "exclude_pairs"),
    help="CSV with image and hashtag columns (e.g. a reviewed audit.csv): pairs kept off the training side "
    "(the test part stays whole).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option(
    "--folds",
    "folds_file",
    type=click.Path(path_type=Path),
    default=field_default(FitHeadConfig, "folds"),
    help="Given folds: a file with a fold number per pair (a study's own CV); --dedupe then defaults to none.",
)
@click.option("--key-col", default=None, help="Id column joining --folds to --data [else image + hashtag].")
@click.option("--fold-col", default=field_default(FitHeadConfig, "fold_col"), show_default=True)
@click.option("--allow-split-images", is_flag=True, help="Accept --folds that put one image in two folds.")
@click.option(
    "--scale",
    default=field_default(FitHeadConfig, "scale"),
    show_default=True,
    callback=_scale,
    help="Score scale LOW-HIGH (e.g. 0-3, 1-7, 0-1) or auto (the labels' own range); recorded in the run.",
)
@cached_pair_columns
def fit_head_command(
    cache_path,
    data,
    heads,
    out,
    split,
    cv,
    dedupe,
    repeats,
    features,
    seed,
    objective,
    params,
    decode,
    val_size,
    exclude_pairs,
    overwrite,
    folds_file,
    key_col,
    fold_col,
    allow_split_images,
    scale,
    image_col,
    text_col,
    label_col,
):
    """Fit a light head on cached features and evaluate it honestly."""
    from tagcons.heads import fit_head, fit_heads, get_head_class
    from tagcons.heads.params import parse_head_params

    heads = _expand_heads(heads)
    config = FitHeadConfig(
        cache=cache_path,
        data=data,
        head=heads[0],
        out=out,
        split=split,
        cv=cv,
        dedupe=dedupe,
        repeats=repeats,
        features=features,
        seed=seed,
        objective=objective,
        # one head: its settings' types parse the values here; several: each head parses its own (fit_heads)
        head_params=parse_head_params(get_head_class(heads[0]), params) if len(heads) == 1 else params,
        decode=decode,
        val_size=val_size,
        exclude_pairs=exclude_pairs,
        overwrite=overwrite,
        folds=folds_file,
        key_col=key_col,
        fold_col=fold_col,
        allow_split_images=allow_split_images,
        columns=_columns(image_col, text_col, label_col),
        scale=scale,
        progress=_progress(),
    )
    if len(heads) == 1:
        result = fit_head(config)
        click.echo(_headline(result.run_dir, result.metrics))
        return
    results = fit_heads(config, heads)
    for result in results:
        click.echo(_headline(result.run_dir, result.metrics))
    _echo_comparison([result.run_dir for result in results])


def _expand_heads(heads: tuple[str, ...]) -> list[str]:
    """--head all means every registered head; repeats are fitted once."""
    names = head_names() if ALL_HEADS in heads else heads
    return list(dict.fromkeys(names))


def _echo_comparison(run_dirs: list[Path]) -> None:
    from tagcons.evaluate.compare import compare_runs, render_markdown

    click.echo(render_markdown(compare_runs(run_dirs)))


@cli.command("predict")
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="A fit-head run directory.")
@click.option(
    "--cache",
    "cache_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Cache holding the pairs' embeddings, embedded with the run's settings.",
)
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Pairs to score (scores optional).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Predictions to write: .parquet, else CSV.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option(
    "--images",
    default=None,
    type=click.Path(path_type=Path),
    help="Images folder (only used to spell out the embed command for missing pairs).",
)
@click.option(
    "--chunk-rows",
    default=field_default(PredictConfig, "chunk_rows"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Pairs read, scored and written at a time (memory depends on it, not on the file).",
)
@pair_columns
def predict_command(run_dir, cache_path, data, out, overwrite, images, chunk_rows, image_col, text_col, label_col):
    """Score a pairs file with a saved run."""
    from tagcons.heads import predict

    result = predict(
        PredictConfig(
            run=run_dir,
            cache=cache_path,
            data=data,
            out=out,
            images=images,
            columns=_columns(image_col, text_col, label_col),
            progress=_progress(),
            overwrite=overwrite,
            chunk_rows=chunk_rows,
        )
    )
    click.echo(f"{result.out}: {result.n_scored} pairs scored, {result.n_missing} missing from the cache")
    if result.n_trained_on:
        click.echo(
            f"warning: {result.n_trained_on} of the {result.n_scored} scored pairs trained this head "
            "(its fit or validation part): metrics on them are not a test"
        )
    if result.metrics:
        click.echo(_headline(result.out, result.metrics))
