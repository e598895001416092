"""`tagcons finetune`: fine-tune a backbone and the study's head end to end."""

from __future__ import annotations

import os
from pathlib import Path

import click

from tagcons.cli.common import (
    BACKBONE_HELP,
    _columns,
    _headline,
    _progress,
    cli,
    pair_columns,
)
from tagcons.configs import (
    FinetuneConfig,
    field_default,
)

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
