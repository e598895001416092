"""The `tagcons` command line: parse flags into a config dataclass, call the library, report.

This is the only module that configures logging, prints, and turns exceptions into exit codes:
0 ok, 2 bad input or usage (one line, no traceback), 3 `--strict` failures, 1 unexpected error.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

import click

from tagcons import __version__
from tagcons.configs import (
    AUDIT_RANKINGS,
    ENGINES,
    SUGGEST_INDEXES,
    AuditConfig,
    DemoRunConfig,
    EmbedConfig,
    EvaluateConfig,
    FinetuneConfig,
    FitHeadConfig,
    PairColumns,
    PostColumns,
    ReportConfig,
    ScoreConfig,
    SuggestConfig,
    field_default,
)
from tagcons.embed.onnx_runtime import RUNTIMES
from tagcons.errors import BadInputError, StrictFailure, WriteFailedError
from tagcons.heads.registry import closest_name, head_names, probabilistic_head_names
from tagcons.labels import parse_scale

log = logging.getLogger("tagcons")
EXIT_BAD_INPUT, EXIT_STRICT, EXIT_UNEXPECTED = 2, 3, 1
ALL_HEADS = "all"
BACKBONE_HELP = (
    "A registry alias (docs/backbones.md: Backbones and pairs files), hf:ORG/NAME[@REVISION], local:DIR, or a bare "
    "hub id or folder "
    "(a bare name that is both an alias and a folder is refused as ambiguous)."
)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, never to a stream that was replaced (and
    perhaps closed) after the command configured logging: a later in-process call logs to the live one."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(
        logging.Formatter(
            "tagcons: %(message)s" if verbosity <= 0 else "%(asctime)s %(name)s %(levelname)s: %(message)s"
        )
    )
    root = logging.getLogger("tagcons")
    root.handlers[:] = [handler]
    root.setLevel(level)
    _quiet_third_party()


def _quiet_third_party() -> None:
    """transformers' own progress bars and advice would drown ours; set through the environment, which
    transformers reads when (and only if) a command imports it."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is not None:  # already imported (the library used in-process): set it directly
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()


class HeadChoice(click.Choice):
    """--head choices from the registry; a mistyped name gets the closest one suggested."""

    def convert(self, value, param, ctx):
        choices = ", ".join(self.choices)
        if isinstance(value, str) and value in head_names() and value not in self.choices:
            self.fail(
                f"head '{value}' has no probabilities, which this command needs; choose from {choices}", param, ctx
            )
        if isinstance(value, str) and value not in self.choices and (close := closest_name(value, self.choices)):
            self.fail(f"'{value}' is not a head; did you mean '{close}'? (choose from {choices})", param, ctx)
        return super().convert(value, param, ctx)


IMAGE_COL_HELP = "Column with the image path, relative to --images."
CACHED_IMAGE_COL_HELP = "Column with the image path, as embed stored it in the cache."


def cached_pair_columns(command):
    """The pair columns of a command without --images (its image paths are the cache's keys)."""
    return pair_columns(command, CACHED_IMAGE_COL_HELP)


def pair_columns(command, image_help: str = IMAGE_COL_HELP):
    """--image-col / --text-col / --label-col on every command that reads pairs (defaults: `PairColumns`)."""
    study = PairColumns()
    command = click.option("--label-col", default=study.label, show_default=True, help="Column with the score.")(
        command
    )
    command = click.option("--text-col", default=study.text, show_default=True, help="Column with the hashtag.")(
        command
    )
    command = click.option(
        "--image-col",
        default=study.image,
        show_default=True,
        help=image_help,
    )(command)
    return command


def _columns(image_col: str, text_col: str, label_col: str) -> PairColumns:
    return PairColumns(image=image_col, text=text_col, label=label_col)


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tagcons")
@click.option("-v", "--verbose", count=True, help="More detail (-v debug).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
@click.option("--progress", is_flag=True, help="Progress bars even when stderr is not a terminal.")
def cli(verbose: int, quiet: bool, progress: bool) -> None:
    """Score how well a hashtag fits an image (1-5) with CLIP-family models: embed once, fit many."""
    _configure_logging(-1 if quiet else verbose)


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
@click.option("--workers", default=None, type=int, help="DataLoader workers decoding images [cores - 1, max 8].")
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
        workers=field_default(EmbedConfig, "workers") if workers is None else workers,
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


@cli.group()
def cache() -> None:
    """Maintain cache files."""


@cache.command("merge")
@click.argument("cache_path", metavar="CACHE.h5", type=click.Path(path_type=Path))
def cache_merge(cache_path):
    """Consolidate the part files that sharded or interrupted runs left beside CACHE.h5."""
    from tagcons.cache import merge_parts

    merge_parts(cache_path, progress=_progress())
    click.echo(f"{cache_path}: merged")


@cache.command("verify")
@click.argument("cache_path", metavar="CACHE.h5", type=click.Path(path_type=Path))
@click.option("--repair", is_flag=True, help="Drop damaged rows and part files; the next embed re-embeds them.")
def cache_verify(cache_path, repair):
    """Check CACHE.h5 and its part files (layout, checksums, finite values); exit 2 if anything is wrong."""
    from tagcons.cache.verify import repair_cache, repair_summary, unchecked_note, verify_cache

    report = verify_cache(cache_path)
    for problem in report.problems:
        click.echo(problem)
    if report.ok:
        click.echo(f"{cache_path}: ok ({len(report.files)} file(s) checked{unchecked_note(report, repair)})")
        if not repair:
            return
    elif not repair:
        raise BadInputError(f"{cache_path}: {len(report.problems)} problem(s) found; {report.advice()}")
    click.echo(f"{cache_path}: {repair_summary(repair_cache(cache_path, report))}")


def _scale(_ctx, _param, value: str) -> str:
    """Check --scale early (a usage error, exit 2); the library resolves 'auto' from the labels."""
    try:
        parse_scale(value)
    except BadInputError as e:
        raise click.BadParameter(str(e)) from None
    return value


def _head_params(_ctx, _param, values):
    """--param key=value pairs as text; fit-head parses each by its head's setting type."""
    params = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{item}': use KEY=VALUE, e.g. --param max_epochs=40")
        params[key.strip().replace("-", "_")] = raw.strip()
    return params


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


def _headline(run_dir: Path, metrics: dict) -> str:
    keys = ("accuracy", "macro_f1", "qwk", "mae")
    intervals = metrics.get("ci95") or {}
    values = ", ".join(
        f"{k} {metrics[k]:.3f}{_interval(intervals.get(k))}" for k in keys if isinstance(metrics.get(k), (int, float))
    )
    images = f", {metrics['n_test_images']} images" if "n_test_images" in metrics else ""
    return f"{run_dir}: {values} (n_test {metrics.get('n_test', '?')}{images})"


def _interval(bounds) -> str:
    return f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else ""


def _progress() -> bool:
    """Progress bars when --progress, else when stderr is a terminal (a log file gets no bar frames) and not --quiet."""
    if click.get_current_context().find_root().params.get("progress"):
        return True
    return sys.stderr.isatty() and logging.getLogger("tagcons").level <= logging.INFO


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
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Predictions CSV to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option(
    "--images",
    default=None,
    type=click.Path(path_type=Path),
    help="Images folder (only used to spell out the embed command for missing pairs).",
)
@pair_columns
def predict_command(run_dir, cache_path, data, out, overwrite, images, image_col, text_col, label_col):
    """Score a pairs file with a saved run."""
    from tagcons.configs import PredictConfig
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


@cli.command("audit")
@click.option("--cache", "cache_path", required=True, type=click.Path(path_type=Path), help="Cache from tagcons embed.")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Pairs file with scores.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for audit.csv and audit.json.")
@click.option(
    "--head",
    default=field_default(AuditConfig, "head"),
    show_default=True,
    type=HeadChoice(probabilistic_head_names()),
    help="A head with probabilities.",
)
@click.option(
    "--folds",
    default=field_default(AuditConfig, "folds"),
    show_default=True,
    type=int,
    help="Image-grouped folds for out-of-fold scores.",
)
@click.option(
    "--features",
    type=click.Choice(["concat", "rich"]),
    default=field_default(AuditConfig, "features"),
    show_default=True,
)
@click.option("--seed", type=int, default=field_default(AuditConfig, "seed"), show_default=True)
@click.option(
    "--param", "params", multiple=True, callback=_head_params, metavar="KEY=VALUE", help="Head hyperparameter."
)
@click.option(
    "--scale",
    default=field_default(AuditConfig, "scale"),
    show_default=True,
    callback=_scale,
    help="Score scale LOW-HIGH (e.g. 0-3, 1-7, 0-1) or auto (the labels' own range).",
)
@click.option("--folds-file", type=click.Path(path_type=Path), default=None, help="Given folds (as fit-head --folds).")
@click.option("--key-col", default=None, help="Id column joining --folds-file to --data [else image + hashtag].")
@click.option("--fold-col", default=field_default(AuditConfig, "fold_col"), show_default=True)
@click.option("--allow-split-images", is_flag=True, help="Accept a --folds-file that puts one image in two folds.")
@click.option(
    "--rank-by",
    type=click.Choice(AUDIT_RANKINGS),
    default=field_default(AuditConfig, "rank_by"),
    show_default=True,
    help="ordinal-distance: expected steps between the given and the true score (capped at 2); "
    "self-confidence: cleanlab's ranking by the probability of the given score.",
)
@click.option("--overwrite", is_flag=True, help="Replace an audit already in --out.")
@cached_pair_columns
def audit_command(
    cache_path,
    data,
    out,
    head,
    folds,
    features,
    seed,
    params,
    scale,
    folds_file,
    key_col,
    fold_col,
    allow_split_images,
    rank_by,
    overwrite,
    image_col,
    text_col,
    label_col,
):
    """Rank the pairs whose score is probably wrong (out-of-fold probabilities + cleanlab)."""
    from tagcons.audit.run import run_audit, top_lines
    from tagcons.heads import get_head_class
    from tagcons.heads.params import parse_head_params

    result = run_audit(
        AuditConfig(
            cache=cache_path,
            data=data,
            out=out,
            head=head,
            folds=folds,
            features=features,
            seed=seed,
            head_params=parse_head_params(get_head_class(head), params),
            columns=_columns(image_col, text_col, label_col),
            progress=_progress(),
            scale=scale,
            folds_file=folds_file,
            key_col=key_col,
            fold_col=fold_col,
            allow_split_images=allow_split_images,
            rank_by=rank_by,
            overwrite=overwrite,
        )
    )
    summary = result.summary
    click.echo(
        f"{result.out}: {summary['n_flagged']} of {summary['n_pairs']} pairs flagged "
        f"({100 * summary['flagged_share']:.1f}%; out-of-fold macro-F1 {summary['oof_macro_f1']:.3f}: "
        f"a weak model flags many); audit.csv lists them worst first by {summary['rank_by']}"
    )
    for line in top_lines(result):
        click.echo(line)


@cli.command("evaluate")
@click.option("--predictions", required=True, type=click.Path(path_type=Path), help="Predictions (CSV, TSV, parquet).")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Pairs file with the true scores.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory to write.")
@click.option("--pred-col", default=field_default(EvaluateConfig, "pred_col"), show_default=True)
@click.option("--true-col", default=None, help="True-score column of the predictions file, checked against --data.")
@click.option("--fold-col", default=None, help="Fold column: per-fold metrics, their mean and sd.")
@click.option(
    "--proba-col", "proba_cols", multiple=True, default=(), help="Probability of each score, lowest first (repeat)."
)
@click.option("--key-col", default=None, help="Id column of both files to join on [else image + hashtag].")
@click.option(
    "--pred-offset",
    type=int,
    default=field_default(EvaluateConfig, "pred_offset"),
    show_default=True,
    help="Added to the file's predicted and true scores (1 for 0-4 labels on a 1-5 scale).",
)
@click.option(
    "--scale", default=field_default(EvaluateConfig, "scale"), show_default=True, callback=_scale, help="LOW-HIGH."
)
@click.option("--seed", type=int, default=field_default(EvaluateConfig, "seed"), show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@cached_pair_columns
def evaluate_command(image_col, text_col, label_col, **options):
    """Score predictions made by any tool as a run directory that compare and report read."""
    from tagcons.evaluate.imported import evaluate_predictions

    options["proba_cols"] = tuple(options["proba_cols"])
    result = evaluate_predictions(EvaluateConfig(**options, columns=_columns(image_col, text_col, label_col)))
    click.echo(_headline(result.run_dir, result.metrics))
    summary = result.metrics.get("fold_summary")
    if summary:
        mean, sd = summary["mean"], summary["sd"]
        click.echo(f"over {summary['n_folds']} folds: macro_f1 {mean['macro_f1']:.4f} +- {sd['macro_f1'] or 0:.4f}")


@cli.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", default=None, type=click.Path(path_type=Path), help="Write TABLE.md and TABLE.csv beside it.")
@click.option("--overwrite", is_flag=True, help="Replace existing --out tables.")
def compare_command(run_dirs, out, overwrite):
    """Tables of runs tested on the same rows, with intervals, best in bold and paired differences."""
    from tagcons.evaluate.compare import paired_differences, render_markdown, write_comparison
    from tagcons.outputs import refuse_existing_files

    if out:
        refuse_existing_files([Path(out).with_suffix(".md"), Path(out).with_suffix(".csv")], overwrite)

    groups = paired_differences(run_dirs)
    click.echo(render_markdown(groups))
    if out:
        markdown, csv = write_comparison(groups, out)
        click.echo(f"written {markdown} and {csv}")


@cli.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="HTML file to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option(
    "--images",
    default=field_default(ReportConfig, "images"),
    type=click.Path(path_type=Path),
    help="Images folder: thumbnails in galleries.",
)
@click.option(
    "--data",
    default=field_default(ReportConfig, "data"),
    type=click.Path(path_type=Path),
    help="Pairs file (for --category-col).",
)
@click.option(
    "--category-col",
    default=field_default(ReportConfig, "category_col"),
    help="Column of --data holding each pair's category.",
)
@click.option(
    "--category-from",
    default=field_default(ReportConfig, "category_from"),
    metavar="REGEX",
    help="Category from the image key, e.g. '^([a-z]+)_'.",
)
@click.option(
    "--worst",
    default=field_default(ReportConfig, "worst"),
    show_default=True,
    type=click.IntRange(min=1),
    help="Pairs per gallery.",
)
@click.option(
    "--audit",
    default=field_default(ReportConfig, "audit"),
    type=click.Path(path_type=Path),
    help="Folder written by `tagcons audit`: its summary in the report.",
)
@pair_columns
def report_command(
    run_dirs, out, overwrite, images, data, category_col, category_from, worst, audit, image_col, text_col, label_col
):
    """One self-contained HTML page of runs: metrics, plots, categories, worst errors."""
    from tagcons.evaluate.report import write_report

    config = ReportConfig(
        run_dirs=list(run_dirs),
        out=out,
        images=images,
        data=data,
        category_col=category_col,
        category_from=category_from,
        worst=worst,
        columns=_columns(image_col, text_col, label_col),
        overwrite=overwrite,
        audit=audit,
    )
    click.echo(f"report: {write_report(config)}")


# `tagcons finetune` options: (flag, click type, help). Each maps 1:1 onto a FinetuneConfig field and takes
# its default; a field whose default is None takes the recipe's value (see tagcons/finetune/config.py RECIPES).
FINETUNE_OPTIONS = [
    (
        "--recipe",
        click.Choice(["robust", "paper"]),
        "robust: LP-FT, AdamW, layer decay, cosine; paper: the study's Adam 5e-5, StepLR(5, 0.1), batch 8 x 2.",
    ),
    ("--revision", str, "Hub revision of the backbone."),
    ("--epochs", int, "Maximum epochs [recipe]."),
    ("--batch-size", int, "Batch size per process [recipe]."),
    ("--grad-accum", int, "Gradient accumulation steps [recipe]."),
    ("--split", click.Choice(["images", "pairs"]), "images (no leak) or pairs (the study's)."),
    (
        "--dedupe",
        click.Choice(["none", "exact"]),
        "exact: one of each identical row [exact for images, none for pairs].",
    ),
    ("--test-size", float, "Share held out for the final test."),
    ("--val-size", float, "Share of the training part used for early stopping; 0: none, keep the last epoch."),
    ("--seed", int, "Random seed."),
    ("--optimizer", click.Choice(["adamw", "adam"]), "[recipe]"),
    ("--lr", float, "Backbone learning rate [recipe]."),
    ("--head-lr", float, "Head learning rate [recipe]."),
    ("--weight-decay", float, "[recipe]"),
    ("--layer-decay", float, "Layer-wise lr decay per block, 1 = none [recipe]."),
    ("--schedule", click.Choice(["cosine", "step"]), "[recipe]"),
    ("--warmup", float, "Share of steps spent warming up (cosine) [recipe]."),
    ("--step-size", int, "Epochs per StepLR step [recipe]."),
    ("--gamma", float, "StepLR factor [recipe]."),
    ("--grad-clip", float, "Gradient norm clip, 0 = off [recipe]."),
    ("--patience", int, "Epochs without better validation QWK before stopping, 0 = never [recipe]."),
    ("--unfreeze-vision", int, "Last N vision blocks train, -1 = all [recipe]."),
    ("--unfreeze-text", int, "Last N text blocks train, -1 = all [recipe]."),
    ("--init-head", click.Path(path_type=Path), "A fit-head run (logreg or mlp) to start the head from (LP-FT)."),
    ("--dropout", float, "Head dropout."),
    ("--hidden", int, "Head hidden units."),
    ("--precision", click.Choice(["auto", "fp32", "bf16", "fp16"]), "auto: bf16 autocast on GPUs that support it."),
    ("--wise-alpha", float, "Export (1-A)*zero-shot + A*fine-tuned weights (WiSE-FT)."),
    ("--device", str, "auto, cpu, cuda or mps."),
    ("--workers", int, "DataLoader workers."),
    ("--scale", str, "Score scale LOW-HIGH or auto."),
    ("--folds", click.Path(path_type=Path), "Given folds (as fit-head --folds); with --test-fold, not --test-size."),
    ("--test-fold", int, "The fold of --folds to test on; the others train (and give the validation part)."),
    ("--key-col", str, "Id column joining --folds to --data [else image + hashtag]."),
    ("--fold-col", str, "Fold column of --folds."),
]
FINETUNE_FLAGS = [
    ("--allow-split-images", "Accept --folds that put one image in two folds."),
    ("--class-weights/--no-class-weights", "Class-weighted cross-entropy [recipe]."),
    ("--lp-init/--no-lp-init", "Start the head from a linear probe on frozen features [recipe]."),
]


def finetune_options(command):
    for flag, kind, help_text in reversed(FINETUNE_OPTIONS):
        command = _finetune_option(flag, help_text, type=kind)(command)
    for flag, help_text in reversed(FINETUNE_FLAGS):
        command = _finetune_option(flag, help_text)(command)
    return command


def _finetune_option(flag: str, help_text: str, **kwargs):
    """A flag defaulting to its FinetuneConfig field (None: the recipe's value, said in the help)."""
    default = field_default(FinetuneConfig, flag.split("/")[0].removeprefix("--").replace("-", "_"))
    return click.option(flag, default=default, show_default=default is not None, help=help_text, **kwargs)


@cli.command("finetune")
@click.option(
    "--text-template",
    "text_templates",
    multiple=True,
    default=field_default(FinetuneConfig, "text_templates"),
    show_default=True,
    help="As for embed: {} is the hashtag; repeat for a prompt ensemble. Match the cache an --init-head was fit on.",
)
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Pairs file with scores.")
@click.option(
    "--images", required=True, type=click.Path(path_type=Path), help="Folder the image paths are relative to."
)
@click.option("--backbone", required=True, help=BACKBONE_HELP)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--overwrite", is_flag=True, help="Replace a fine-tuning run already in --out.")
@click.option("--grad-checkpointing", is_flag=True, help="Recompute activations: less memory, more compute.")
@click.option("--strip-hash", is_flag=True, help="Remove a leading '#' from hashtags.")
@click.option(
    "--allow-unverified-init",
    is_flag=True,
    help="Accept an --init-head run that does not record its training rows (older runs): no leak check.",
)
@finetune_options
@pair_columns
def finetune_command(**options):
    """Fine-tune a backbone and the study's head end to end (also under torchrun)."""
    from tagcons.finetune import run_finetune

    columns = _columns(options.pop("image_col"), options.pop("text_col"), options.pop("label_col"))
    options["text_templates"] = tuple(options["text_templates"])
    result = run_finetune(FinetuneConfig(**options, columns=columns, progress=_progress()))
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        click.echo(_headline(result.run_dir, result.metrics))
        click.echo(f"fine-tuned backbone for `tagcons embed --backbone`: {result.backbone_dir}")


@cli.command("demo")
@click.option(
    "--out",
    default=field_default(DemoRunConfig, "out"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="A new or empty folder, or a previous demo output (its runs are replaced).",
)
@click.option(
    "--finetune-epochs",
    default=field_default(DemoRunConfig, "finetune_epochs"),
    show_default=True,
    type=int,
    help="0 skips the fine-tune.",
)
def demo_command(out, finetune_epochs):
    """The whole job offline: demo set -> tiny embed -> heads -> fine-tune -> table -> audit -> report -> posts."""
    from tagcons.demo import run_demo

    report = run_demo(DemoRunConfig(out=out, finetune_epochs=finetune_epochs, progress=_progress()))
    click.echo(report.markdown)
    click.echo(f"\ndemo set: {report.pairs_csv} (images in {report.images_dir}); cache: {report.cache}")
    click.echo(
        f"runs, plots and predictions: {report.out / 'runs'}/<run>/ "
        "(metrics.json, predictions.csv, confusion_matrix.png, training_curves.png)"
    )
    click.echo(f"comparison table: {report.table_path} (and .csv)")
    click.echo(report.audit_line)
    click.echo(f"report (open in a browser): {report.report_path}")
    for line in report.posts_lines:
        click.echo(line)


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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: exceptions become exit codes and one-line messages."""
    try:
        cli.main(args=argv, prog_name="tagcons", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tagcons: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except StrictFailure as e:
        click.echo(f"tagcons: {e}", err=True)
        sys.exit(EXIT_STRICT)
    except BadInputError as e:
        click.echo(f"tagcons: error: {e}", err=True)
        if isinstance(e, WriteFailedError):  # HDF5 can crash tearing down a file whose write failed
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_BAD_INPUT)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        click.echo("tagcons: interrupted; what was committed is kept, rerun to continue", err=True)
        sys.exit(130)
    except Exception:  # the last resort: an unexpected error is a bug, so show the traceback for a report
        traceback.print_exc()
        click.echo("tagcons: unexpected error (a bug); please report it with the traceback above", err=True)
        sys.exit(EXIT_UNEXPECTED)
