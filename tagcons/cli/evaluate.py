"""`tagcons evaluate`, `compare` and `report`: score predictions, tables of runs, the HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from tagcons.cli.common import (
    _columns,
    _headline,
    _scale,
    cached_pair_columns,
    cli,
    pair_columns,
)
from tagcons.configs import (
    EvaluateConfig,
    ReportConfig,
    field_default,
)


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
