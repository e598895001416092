"""Fine-tuning recipes and the check of a `FinetuneConfig` (defined in `tagcons.configs`, whose fields
are the CLI flags).

A field left at None takes its recipe's value (`resolve`), so `--recipe paper --lr 1e-5` changes
only the learning rate. The resolved config (every value concrete) is what config.json records
and what `--resume` compares against.
"""

from __future__ import annotations

from dataclasses import fields, replace

from tagcons.configs import FinetuneConfig
from tagcons.data.splits import SPLIT_KINDS, default_dedupe
from tagcons.embed.backbones import parse_source
from tagcons.embed.templates import check_templates
from tagcons.errors import BadInputError

ALL_LAYERS = -1  # --unfreeze-vision / --unfreeze-text value meaning "the whole tower trains"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "step")


RECIPES: dict[str, dict] = {
    # The study: whole model trained with Adam, a step schedule and class-weighted loss.
    "paper": dict(
        epochs=20,
        batch_size=8,
        grad_accum=2,
        optimizer="adam",
        lr=5e-5,
        head_lr=5e-5,
        weight_decay=1e-4,
        layer_decay=1.0,
        schedule="step",
        warmup=0.0,
        step_size=5,
        gamma=0.1,
        grad_clip=0.0,
        class_weights=True,
        patience=0,
        unfreeze_vision=ALL_LAYERS,
        unfreeze_text=ALL_LAYERS,
        lp_init=False,
    ),
    # What the CLIP fine-tuning literature found robust on small data: LP-FT (Kumar et al. 2022),
    # small backbone lr with layer-wise decay, warm-up + cosine, clipping, most of the vision tower frozen.
    "robust": dict(
        epochs=10,
        batch_size=32,
        grad_accum=1,
        optimizer="adamw",
        lr=1e-5,
        head_lr=1e-3,
        weight_decay=0.05,
        layer_decay=0.75,
        schedule="cosine",
        warmup=0.1,
        step_size=5,
        gamma=0.1,
        grad_clip=1.0,
        class_weights=True,
        patience=3,
        unfreeze_vision=2,
        unfreeze_text=ALL_LAYERS,
        lp_init=True,
    ),
}


def resolve(config: FinetuneConfig) -> FinetuneConfig:
    """A copy with every None filled from the recipe, checked; raises BadInputError on bad values."""
    if config.recipe not in RECIPES:
        raise BadInputError(f"unknown recipe '{config.recipe}'; choose one of {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[config.recipe]
    filled = {f.name: recipe[f.name] for f in fields(config) if f.name in recipe and getattr(config, f.name) is None}
    resolved = replace(config, **filled)
    if resolved.init_head:
        resolved.lp_init = True  # a given probe is an LP init; it replaces the one fitted on the fly
    check(resolved)
    return resolved


def check(config: FinetuneConfig) -> None:
    check_templates(config.text_templates)
    parse_source(config.backbone, config.revision)
    _choice("--split", config.split, SPLIT_KINDS)
    default_dedupe(config.split, config.dedupe)
    _choice("--precision", config.precision, PRECISIONS)
    _choice("--optimizer", config.optimizer, OPTIMIZERS)
    _choice("--schedule", config.schedule, SCHEDULES)
    for flag, value in (
        ("--epochs", config.epochs),
        ("--batch-size", config.batch_size),
        ("--grad-accum", config.grad_accum),
        ("--step-size", config.step_size),
        ("--hidden", config.hidden),
    ):
        if value < 1:
            raise BadInputError(f"{flag} {value}: must be at least 1")
    for flag, value in (("--lr", config.lr), ("--head-lr", config.head_lr), ("--layer-decay", config.layer_decay)):
        if value <= 0:
            raise BadInputError(f"{flag} {value}: must be positive")
    _within("--wise-alpha", config.wise_alpha, 0.0, 1.0)
    _within("--dropout", config.dropout, 0.0, 0.99)
    _within("--val-size", config.val_size, 0.0, 0.9)  # 0: no validation part, every epoch runs, the last is kept
    _within("--warmup", config.warmup, 0.0, 0.99)
    if config.workers < 0 or config.patience < 0 or config.grad_clip < 0 or config.weight_decay < 0:
        raise BadInputError("--workers, --patience, --grad-clip and --weight-decay cannot be negative")
    if min(config.unfreeze_vision, config.unfreeze_text) < ALL_LAYERS:
        raise BadInputError("--unfreeze-vision/--unfreeze-text: a number of blocks, or -1 for the whole tower")


def _choice(flag: str, value: str, choices) -> None:
    if value not in choices:
        raise BadInputError(f"{flag} {value}: choose one of {', '.join(choices)}")


def _within(flag: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise BadInputError(f"{flag} {value}: must be between {low} and {high}")
