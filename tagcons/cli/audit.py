"""`tagcons audit`: rank the pairs whose score is probably wrong."""

from __future__ import annotations

from pathlib import Path

import click

from tagcons.cli.common import (
    HeadChoice,
    _columns,
    _head_params,
    _progress,
    _scale,
    cached_pair_columns,
    cli,
)
from tagcons.configs import (
    AUDIT_RANKINGS,
    AuditConfig,
    field_default,
)
from tagcons.heads.registry import probabilistic_head_names


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
