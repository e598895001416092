"""`run_finetune(config)`: the whole fine-tuning run, single process or one rank of torchrun.

Order matters for honesty: split -> (linear probe on the fit side) -> epochs of training with
validation after each -> best weights back -> only then is the test side's loader built and
evaluated, once. Rank 0 writes the run directory; every rank computes the same decisions from
gathered validation outputs, so they stop at the same epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from tagcons.distributed import DistContext, setup
from tagcons.embed.backbones import Backbone, load_backbone
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.plots import plot_training_curves
from tagcons.evaluate.provenance import check_reuse, recorded_trained_keys, side_hashes, split_spec, write_side_keys
from tagcons.evaluate.rundir import write_config, write_evaluation
from tagcons.finetune import checkpoint
from tagcons.finetune.config import FinetuneConfig, resolve
from tagcons.finetune.data import Collate, LoaderSettings, TokenTable, eval_loader, train_loader
from tagcons.finetune.export import export_backbone
from tagcons.finetune.loop import Trainer, collect_outputs, make_optimizer, make_precision, make_schedule
from tagcons.finetune.model import FinetuneModel, freeze
from tagcons.finetune.partition import FinetunePartition, load_partition, resolved_dedupe
from tagcons.finetune.probe import EmbedOnly, fit_linear_probe, load_init_head
from tagcons.finetune.resume import (
    CHECKPOINTS,
    _check_resumed_partition,
    _check_run_dir,
    _resume,
    _resumed_head_init,
    _save_epoch,
)
from tagcons.finetune.training_state import TrainingState, _advance, epoch_line
from tagcons.heads.baselines import shortcut_baselines
from tagcons.heads.calibrate import evaluate_probabilities, evaluation_report, fit_rule
from tagcons.labels import class_weights
from tagcons.runtime import compute_threads

log = logging.getLogger(__name__)
CURVES_FILE = "training_curves.png"


@dataclass
class Hooks:
    """Optional observers (tests, notebooks): which rows each side fed, and the end of each epoch."""

    on_batch: Callable[[str, np.ndarray], None] | None = None  # (side, row numbers into the used pairs)
    on_epoch_end: Callable[[int, dict], None] | None = None  # (epoch index, history so far)


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    backbone_dir: Path
    history: dict
    model: FinetuneModel | None = field(default=None, repr=False)  # as exported (WiSE-mixed backbone)


def run_finetune(config: FinetuneConfig, hooks: Hooks | None = None) -> FinetuneResult:
    config = resolve(config)
    dist = setup(config.device)
    try:
        with compute_threads(config.workers):
            return _run(config, dist, hooks or Hooks())
    finally:
        dist.close()


def _run(config: FinetuneConfig, dist: DistContext, hooks: Hooks) -> FinetuneResult:
    _check_run_dir(config, dist)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    partition = load_partition(config, dist)
    if config.resume:
        _check_resumed_partition(config, partition)
    backbone = load_backbone(config.backbone, config.revision)
    model = FinetuneModel(backbone.model, config.hidden, config.dropout, partition.table.scale.n_classes).to(
        dist.device
    )
    collate = Collate(
        partition.table,
        config.images,
        backbone.image_processor,
        TokenTable.build(partition.table.texts, backbone, config.text_templates),
    )
    loading = LoaderSettings(
        config.batch_size,
        config.workers,
        config.seed,
        dist.rank,
        dist.world_size,
        pin_memory=dist.device.type == "cuda",
    )
    precision = make_precision(config.precision, dist.device)
    head_init = (
        _resumed_head_init(config)
        if config.resume
        else _init_head(config, model, partition, collate, loading, precision, dist, hooks)
    )
    freeze(model.clip, config.unfreeze_vision, config.unfreeze_text)
    zero_shot = {n: p.detach().cpu().clone() for n, p in model.clip.named_parameters() if p.requires_grad}
    if config.grad_checkpointing:
        model.clip.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if dist.is_main:
        write_config(config.run_dir, _config_record(config, backbone, partition, precision.name, head_init, dist))
        write_side_keys(config.run_dir, partition.side_keys())
    state = _train(config, model, partition, collate, loading, precision, dist, hooks)
    metrics = _final_evaluation(config, model, partition, collate, loading, precision, dist, hooks, state)
    backbone_dir = Path(config.run_dir) / "backbone"
    if dist.is_main:
        export_backbone(
            backbone,
            zero_shot,
            config.wise_alpha,
            config.run_dir,
            {
                "backbone": backbone.name,
                "model_id": backbone.model_id,
                "revision": backbone.revision,
                "best_epoch": state.best_epoch,
                "parts": side_hashes(partition.side_keys()),  # ties the export's part_keys.json to it
            },
            config.progress,
        )
        write_side_keys(
            backbone_dir, partition.side_keys()
        )  # `embed --backbone` records them: fit-head checks its test side
    dist.barrier()
    return FinetuneResult(
        Path(config.run_dir),
        metrics,
        state.best_epoch,
        state.epoch,
        state.stopped,
        backbone_dir,
        state.history,
        model.cpu(),
    )


def _checked_init_head(config: FinetuneConfig, partition: FinetunePartition) -> Path:
    """--init-head's run, refused when its training rows (fit + validation) hold any of our test pairs."""
    source = f"--init-head {config.init_head}"
    trained = recorded_trained_keys(config.init_head, source, config.allow_unverified_init, "--allow-unverified-init")
    fix = "fit the donor head with the same --split, --seed and --test-size (and without --cv), or drop --init-head"
    check_reuse(trained, partition.side_keys()["test"], source, fix)
    return config.init_head


def _init_head(config, model, partition, collate, loading, precision, dist, hooks) -> str:
    """LP-FT's first stage (or nothing, for the paper recipe): returns how the head started."""
    if config.init_head:
        init_head = _checked_init_head(config, partition)
        return "fit-head:" + load_init_head(model, init_head, partition.table.scale, config.text_templates)
    if not config.lp_init:
        return "random"
    features_model = EmbedOnly(model)
    rows, features = collect_outputs(
        features_model,
        eval_loader(partition.fit, collate, loading),
        precision,
        dist.device,
        dist,
        "fit",
        hooks.on_batch,
        config.progress,
    )
    weights = _class_weights(partition) if config.class_weights else None
    weight, bias = fit_linear_probe(features, partition.table.labels[rows], weights, config.seed, partition.table.scale)
    model.head.load_linear(weight.to(dist.device), bias.to(dist.device))
    return "linear-probe"


def _class_weights(partition: FinetunePartition) -> torch.Tensor:
    weights = class_weights(partition.table.labels[partition.fit], partition.table.scale.labels)
    return torch.tensor(weights, dtype=torch.float32)


def _config_record(
    config, backbone: Backbone, partition: FinetunePartition, precision: str, head_init: str, dist: DistContext
) -> dict:
    """config.json: the resolved settings plus the keys `tagcons compare` reads."""
    return {
        **config.to_dict(),
        "head": "finetune",
        "scale": str(partition.table.scale),
        "backbone": backbone.name,
        "model_id": backbone.model_id,
        "backbone_revision": backbone.revision,
        "features": "end-to-end",
        "precision_used": precision,
        "head_init": head_init,
        "world_size": dist.world_size,
        "data_summary": partition.summary(),
        "split_spec": _split_spec(config, partition),
        "parts": side_hashes(partition.side_keys()),
    }


def _split_spec(config: FinetuneConfig, partition: FinetunePartition) -> dict:
    """split_spec; with given folds kind "given", the fold file's record and the test fold instead of a test size."""
    spec = split_spec(
        config.split, config.seed, config.test_size, dedupe=resolved_dedupe(config), val_size=config.val_size
    )
    if partition.given_folds is not None:
        spec.update(kind="given", test_size=None, grouping=config.split, given_folds=partition.given_folds)
    return spec


def _train(config, model, partition, collate, loading, precision, dist, hooks) -> TrainingState:
    ddp = (
        DistributedDataParallel(model, device_ids=[dist.device] if dist.device.type == "cuda" else None)
        if dist.active
        else model
    )
    loader = train_loader(partition.fit, collate, loading)
    steps_per_epoch = -(-len(loader) // config.grad_accum)
    optimizer = make_optimizer(model, config)
    weights = _class_weights(partition).to(dist.device) if config.class_weights else None
    trainer = Trainer(
        ddp,
        optimizer,
        make_schedule(optimizer, config, steps_per_epoch),
        precision,
        torch.nn.CrossEntropyLoss(weight=weights),
        config.grad_accum,
        config.grad_clip,
        dist.device,
    )
    state = _resume(config, model, trainer) if config.resume else TrainingState()
    fit_loader = eval_loader(partition.fit, collate, loading)
    val_loader = eval_loader(partition.val, collate, loading) if len(partition.val) else None
    while state.epoch < config.epochs and not state.stopped:
        record = trainer.train_epoch(loader, state.epoch, dist, config.progress, hooks.on_batch)
        record["train_loss_running"] = record.pop("train_loss")
        record["train_loss"] = _validate(model, fit_loader, partition, trainer, dist, hooks, config.progress, "fit")[
            "loss"
        ]
        if val_loader is not None:
            scores = _validate(model, val_loader, partition, trainer, dist, hooks, config.progress, "val")
            record.update({f"val_{name}": value for name, value in scores.items()})
        _advance(state, record, config.patience)
        _save_epoch(config, model, trainer, state, dist)
        log.info("%s", epoch_line(state.epoch, config.epochs, record))
        if hooks.on_epoch_end:
            hooks.on_epoch_end(state.epoch - 1, state.history)
    if state.best_epoch:
        checkpoint.load_weights(config.run_dir / CHECKPOINTS / "best", model)
    return state


def _validate(model, loader, partition, trainer, dist, hooks, show, side: str) -> dict:
    """Loss (eval mode, the training loss's class weights) and scores of one side after an epoch."""
    rows, logits = collect_outputs(model, loader, trainer.precision, trainer.device, dist, side, hooks.on_batch, show)
    labels, scale = partition.table.labels[rows].astype(int), partition.table.scale
    weight = trainer.loss_fn.weight.cpu() if trainer.loss_fn.weight is not None else None
    targets = torch.from_numpy(scale.column_of(labels).astype(np.int64))
    loss = float(F.cross_entropy(torch.from_numpy(logits), targets, weight=weight))
    metrics = compute_metrics(labels, np.asarray(scale.labels)[logits.argmax(axis=1)], labels=scale.labels)
    return {
        "loss": loss,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "qwk": metrics["qwk"] if metrics["qwk"] is not None else 0.0,
    }


def _final_evaluation(config, model, partition, collate, loading, precision, dist, hooks, state) -> dict:
    """The only look at the test side: its loader is built here, after training ended and after the
    temperature was fitted on the validation side."""
    prior = _prior(partition) if config.class_weights else None  # the class weights divided out, as for heads
    rule = _calibration_rule(model, partition, collate, loading, precision, dist, hooks, config.progress, prior)
    started = time.perf_counter()
    rows, logits = collect_outputs(
        model,
        eval_loader(partition.test, collate, loading),
        precision,
        dist.device,
        dist,
        "test",
        hooks.on_batch,
        config.progress,
    )
    proba = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    labels = partition.table.scale.labels  # the model's outputs, one per score of the scale
    evaluated = evaluate_probabilities(proba, partition.table.labels[rows].astype(int), rule, labels)
    extra = {
        **partition.summary(),
        "n_train": len(partition.fit),
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped,
        "history": state.history,
        "best_val_qwk": state.best_score[0] if state.best_score else None,
        "test_seconds": time.perf_counter() - started,
    }
    if dist.is_main:  # the shortcut baselines (majority, text-only, image-prior) on the same fit and test rows
        fit, test = partition.table.subset(partition.fit), partition.table.subset(partition.test)
        labels = partition.table.scale.labels
        y_fit, y_test = fit.labels.astype(int), test.labels.astype(int)
        extra["baselines"] = shortcut_baselines(fit, y_fit, test, y_test, config.seed, labels)
        extra["baseline"] = extra["baselines"]["majority"]
    metrics = None
    if dist.is_main:
        title = f"finetune {config.recipe} ({Path(config.backbone).name})"
        extra.update(evaluation_report([evaluated], config.run_dir))
        metrics = write_evaluation(
            config.run_dir,
            partition.table.subset(rows),
            evaluated.pred,
            evaluated.proba,
            extra,
            title,
            partition.table.scale.labels,
            seed=config.seed,
        )
        plot_training_curves(state.history, config.run_dir / CURVES_FILE, title)
    return dist.broadcast(metrics)


def _prior(partition: FinetunePartition) -> tuple[float, ...]:
    """1 / w per score of the scale for the class weights the model trained with (1 where w is 0)."""
    weights = _class_weights(partition).double().numpy()
    return tuple(float(m) for m in np.divide(1.0, weights, out=np.ones_like(weights), where=weights > 0))


def _calibration_rule(model, partition, collate, loading, precision, dist, hooks, show, prior=None):
    """Temperature (and expected-score cuts) of the best model, fitted on the validation side; ``prior``
    divides the class weights out of its probabilities (`tagcons.heads.calibrate.prior_correction`)."""
    if len(partition.val) == 0:
        return fit_rule(None, partition.val, "argmax", partition.table.scale.labels, prior)
    rows, logits = collect_outputs(
        model, eval_loader(partition.val, collate, loading), precision, dist.device, dist, "val", hooks.on_batch, show
    )
    raw = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    return fit_rule(raw, partition.table.labels[rows].astype(int), "argmax", partition.table.scale.labels, prior)
