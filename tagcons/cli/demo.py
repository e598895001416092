"""`tagcons demo`: the whole job offline on the built-in demo set."""

from __future__ import annotations

from pathlib import Path

import click

from tagcons.cli.common import (
    _progress,
    cli,
)
from tagcons.configs import (
    DemoRunConfig,
    field_default,
)


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
